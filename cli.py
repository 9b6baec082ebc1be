"""What the command-line programs share: one-line errors and argument types.

No TensorFlow here, so the tools that do not need it (fetch_corpus.py,
screenshot_tensorboard.py) start quickly.
"""

import argparse
import sys


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the error on one line, without the usage block above it."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def fail(prog, message):
    """Report bad input the user can fix: one line on stderr, exit status 2. Line
    breaks inside the message (a file name may hold one) are shown escaped."""
    one_line = str(message).replace("\r", "\\r").replace("\n", "\\n")
    print(f"{prog}: error: {one_line}", file=sys.stderr)
    sys.exit(2)


def warn(message):
    """A warning the user should see, on stderr, at once."""
    print(message, file=sys.stderr, flush=True)


def positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a whole number above 0, got {text}")
    return value


def positive_float(text):
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number, 0 or more, got {text}")
    return value


def non_negative_float(text):
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number, 0 or more, got {text}")
    return value


def fraction(text):
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


# argparse names a type in its messages ("invalid positive_int value"): give them
# names a user reads.
positive_int.__name__ = "whole number"
positive_float.__name__ = "number"
fraction.__name__ = "fraction"
non_negative_int.__name__ = "whole number"
non_negative_float.__name__ = "number"
