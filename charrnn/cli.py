"""What the command-line programs share: one-line errors, argument types, sizes in
bytes for people, free ports.

No TensorFlow here, so the tools that do not need it (fetch_corpus.py,
tools/screenshot_tensorboard.py) start quickly.
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


def stopped(prog):
    """Say that Ctrl-C stopped a program before it wrote anything; the status to exit
    with (a shell's for SIGINT)."""
    print(f"{prog}: stopped (Ctrl-C); nothing written", file=sys.stderr)
    return 130


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


def size(n):
    """Bytes for people, about three digits: '350 kB', '5.1 MB', '512 MB', '3.2 GB',
    '194 GB'."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}" if n < 100 * scale else f"{n / scale:,.0f} {unit}"
    return f"{n / 10**3:,.0f} kB"


def free_ports(n, host="127.0.0.1"):
    """n distinct ports that nothing listens on, for local servers. All n are held
    until the last is picked, so the system cannot hand out one twice; another
    process may still take one before its server binds it."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]


class Values:
    """What an argument or setting may be: how a flag's text is read (argparse names
    the type by `name` in its messages: "invalid whole number value"), and the test
    every value passes, whether from a flag or from a checkpoint's JSON (where true is
    no number and 1.0 no whole number). choices: the values there are, if few."""

    def __init__(self, name, read, ok, must_be, choices=None):
        self.__name__, self.read, self.ok, self.must_be = name, read, ok, must_be
        self.choices = choices

    def __call__(self, text):
        """An argparse type: parse the text, refuse a value that is not ok."""
        value = self.read(text)
        if not self.ok(value):
            raise argparse.ArgumentTypeError(f"must be {self.must_be}, got {text}")
        return value


def _whole(v):
    return type(v) is int  # JSON's true and 1.0 are not whole numbers of layers


def _number(v):
    return _whole(v) or (type(v) is float and math.isfinite(v))


# (below 2**63: a count becomes a TensorFlow int64)
positive_int = Values(
    "whole number", int, lambda v: _whole(v) and 0 < v < 2**63, "a whole number from 1 to 2**63-1"
)
non_negative_int = Values(
    "whole number", int, lambda v: _whole(v) and 0 <= v < 2**63, "a whole number from 0 to 2**63-1"
)
positive_float = Values("number", float, lambda v: _number(v) and v > 0, "a number above 0")
non_negative_float = Values("number", float, lambda v: _number(v) and v >= 0, "a number, 0 or more")
fraction = Values("fraction", float, lambda v: _number(v) and 0 <= v < 1, "at least 0 and below 1")
share = Values("fraction", float, lambda v: _number(v) and 0 < v <= 1, "above 0 and at most 1")
# np.random.seed (which Keras' set_random_seed calls) takes exactly this range
seed = Values(
    "whole number", int, lambda v: _whole(v) and 0 <= v < 2**32, "a whole number from 0 to 2**32-1"
)


def one_of(*choices):
    return Values(
        "choice", str, lambda v: v in choices, " or ".join(f'"{c}"' for c in choices), choices
    )
