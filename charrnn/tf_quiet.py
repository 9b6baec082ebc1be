"""Import this first in a program that uses TensorFlow: it loads TensorFlow with its
start-up chatter silenced, so that an error is the one line a user reads on stderr.

TensorFlow 2.21 logs oneDNN notices straight to file descriptor 2 while it loads,
whatever TF_CPP_MIN_LOG_LEVEL says, so fd 2 points at /dev/null meanwhile.
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def quiet_stderr():
    """File descriptor 2 on /dev/null meanwhile: what TensorFlow's C++ side writes
    there (its start-up notices, the LiteRT converter's passes) is not Python's to
    silence."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
with quiet_stderr():
    import tensorflow  # noqa: F401
