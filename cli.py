"""What the command-line programs share: one-line errors, argument types, free ports.

No TensorFlow here, so the tools that do not need it (fetch_corpus.py,
screenshot_tensorboard.py) start quickly.
"""

import argparse
import contextlib
import math
import os
import socket
import sys


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the error on one line, without the usage block above it."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class UsageError(Exception):
    """Flags that cannot work together; the message says what to do."""


def error(prog, message):
    """Report an error in one line on stderr, and leave the exit status to the caller.
    Line breaks inside the message (a file name may hold one) are shown escaped."""
    one_line = str(message).replace("\r", "\\r").replace("\n", "\\n")
    print(f"{prog}: error: {one_line}", file=sys.stderr)


def fail(prog, message):
    """Report bad input the user can fix (error) and exit with status 2."""
    error(prog, message)
    sys.exit(2)


def utf8_output():
    """Write stdout and stderr in UTF-8 whatever the locale (LANG=C included): the text
    of a model may be in any language. A lone surrogate (bytes that were not UTF-8,
    from a file name, say) is shown as '?' on stdout, escaped on stderr."""
    sys.stdout.reconfigure(encoding="utf-8", errors="replace")
    sys.stderr.reconfigure(encoding="utf-8", errors="backslashreplace")


def utf8_text(value):
    """An argument read as the UTF-8 its bytes are, whatever the locale: in the C locale
    Python decodes arguments as ASCII, keeping every other byte as a lone surrogate
    (an argparse type)."""
    try:
        return os.fsencode(value).decode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:  # a surrogate that stands for no byte: leave it as it is
        return value


def warn(message):
    """A warning the user should see, on stderr, at once."""
    print(message, file=sys.stderr, flush=True)


def free_ports(n, host="127.0.0.1"):
    """n distinct ports that nothing listens on, for local servers. All n are held
    until the last is picked, so the system cannot hand out one twice; another
    process may still take one before its server binds it."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]


def _checked(parse, name, ok, must_be):
    """An argparse type: parse the text, refuse a value that is not ok. argparse
    names the type by its __name__ in its messages ("invalid whole number value"),
    so that is a name a user reads."""

    def convert(text):
        value = parse(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {must_be}, got {text}")
        return value

    convert.__name__ = name
    return convert


positive_int = _checked(int, "whole number", lambda v: v > 0, "a whole number above 0")
positive_float = _checked(float, "number", lambda v: 0 < v < math.inf, "a number above 0")
non_negative_int = _checked(int, "whole number", lambda v: v >= 0, "a whole number, 0 or more")
non_negative_float = _checked(float, "number", lambda v: 0 <= v < math.inf, "a number, 0 or more")
fraction = _checked(float, "fraction", lambda v: 0 <= v < 1, "at least 0 and below 1")
# np.random.seed (which Keras' set_random_seed calls) takes exactly this range
seed = _checked(int, "whole number", lambda v: 0 <= v < 2**32, "a whole number from 0 to 2**32-1")
