"""Text utilities: the alphabet, reading a corpus, state-continuous batches.

Nothing here imports TensorFlow: it is all NumPy, so it is quick to test.
"""

import glob
import os

import numpy as np

# The alphabet (98 symbols) does not depend on the corpus, so any checkpoint can
# read any text:
#   0 = unknown, 1 = tab, 2..96 = printable ASCII 32..126 (code - 30), 97 = line feed
ALPHASIZE = 98
UNKNOWN = 0
# ALPHABET[i] is the character that code i stands for ("\ufffd" for unknown).
ALPHABET = "\ufffd\t" + "".join(chr(c) for c in range(32, 127)) + "\n"

_ENCODE = np.zeros(128, dtype=np.uint8)  # ASCII code point -> symbol; the rest -> 0
_ENCODE[9] = 1
_ENCODE[10] = 97
_ENCODE[32:127] = np.arange(2, 97)
_DECODE = np.array(list(ALPHABET))


class CorpusError(Exception):
    """Bad input that the user can fix; the message says how."""


def encode(text):
    """str -> uint8 array of symbol codes. CRLF becomes LF; unknown characters become 0."""
    text = text.replace("\r\n", "\n")
    # surrogatepass: a command-line argument holding bytes that are not UTF-8 reaches
    # Python as lone surrogates; they are unknown characters, not an error
    points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    ascii_ = points < 128
    return np.where(ascii_, _ENCODE[np.where(ascii_, points, 0)], UNKNOWN).astype(np.uint8)


def decode(codes):
    """Sequence of symbol codes -> str."""
    return "".join(_DECODE[np.asarray(codes, dtype=np.int64)])


# ---------------------------------------------------------------------------
# Reading a corpus


def find_files(patterns):
    """Expand globs (``**`` allowed) and directories (every file below, hidden ones
    skipped) into a sorted list of unique absolute paths, so every machine picks the
    same files in the same order."""
    found = set()
    for pattern in patterns:
        for path in glob.glob(os.path.expanduser(pattern), recursive=True):
            if os.path.isdir(path):
                for root, dirs, files in os.walk(path):
                    dirs[:] = [d for d in dirs if not d.startswith(".")]
                    found.update(os.path.join(root, f) for f in files if not f.startswith("."))
            elif os.path.isfile(path):
                found.add(path)
    return sorted(os.path.abspath(p) for p in found)


def read_file(path):
    """Read one text file as symbol codes; refuse a binary file (one holding a NUL byte)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e.strerror}") from None
    if b"\0" in raw:
        raise CorpusError(
            f"{path} is not a text file (it holds NUL bytes): "
            "narrow --data to text files, e.g. 'DIR/**/*.txt'"
        )
    return encode(raw.decode("utf-8", errors="replace"))


def default_validation_count(sizes):
    """How many of the last files to hold out: the fewest that hold more than 10% of
    the text, or more than 90 KB of it (92,160 characters), whichever are fewer -
    unless those hold more than a fifth of the text, when none are (a validation
    split that takes that much from training is for the user to choose). So four
    files of equal size or fewer give none. sizes: the files' lengths in characters."""
    total = sum(sizes)

    def files_to_exceed(limit):
        held = 0
        for n, size in enumerate(reversed(sizes), start=1):
            held += size
            if held > limit:
                return n
        return len(sizes)

    n = min(files_to_exceed(total / 10), files_to_exceed(90 * 1024))
    return n if sum(sizes[len(sizes) - n :]) * 5 <= total else 0


def read_corpus(data_patterns, validation_patterns=None):
    """Read the training and validation text.

    validation_patterns: None picks the last files of the sorted list
    (default_validation_count); [] means no validation; otherwise globs of the
    files to hold out. Validation files are never trained on, even when
    data_patterns also match them.

    Returns (train_codes, valid_codes, train_files, valid_files)."""
    files = find_files(data_patterns)
    if not files:
        raise CorpusError(
            f"--data {' '.join(data_patterns)} matches no file: "
            "check the path, and quote globs so the shell does not expand them"
        )
    texts = {path: read_file(path) for path in files}
    if validation_patterns is None:
        n = default_validation_count([len(texts[p]) for p in files])
        train_files, valid_files = files[: len(files) - n], files[len(files) - n :]
    else:
        valid_files = find_files(validation_patterns) if validation_patterns else []
        if validation_patterns and not valid_files:
            raise CorpusError(
                f"--validation {' '.join(validation_patterns)} matches no file: "
                "check the path, or pass --validation none"
            )
        for path in valid_files:
            if path not in texts:
                texts[path] = read_file(path)
        held_out = set(valid_files)
        train_files = [p for p in files if p not in held_out]
    train = _concat([texts[p] for p in train_files])
    valid = _concat([texts[p] for p in valid_files])
    if len(train) == 0:
        if valid_files and any(len(texts[p]) for p in files):
            raise CorpusError(
                "the validation files take all of the training text: "
                "pass --validation with fewer files, or --validation none"
            )
        raise CorpusError(f"--data {' '.join(data_patterns)} holds no text (the files are empty)")
    return train, valid, train_files, valid_files


def _concat(arrays):
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint8)


# ---------------------------------------------------------------------------
# State-continuous minibatches
#
# The text is cut into BATCH contiguous slices, one per row, and each row is
# read SEQLEN characters at a time:
#
#             batch 0        batch 1        batch 2
#     row 0   [t0 .. t29]    [t30 .. t59]   [t60 .. t89]  ...   <- slice 0
#     row 1   [s0 .. s29]    [s30 .. s59]   ...                 <- slice 1
#     ...
#
# so row k of batch n+1 continues row k of batch n, and the output state of one
# batch is the right input state of the next. At each new epoch the rows roll by
# one: the row that ended slice i goes on with slice i+1, so the state carries
# across epochs with exactly one break (where the last slice wraps to the first).


def batches_per_epoch(text_len, batch_size, seqlen):
    """Whole batches in the text; raises CorpusError if there is not even one."""
    nb_batches = (text_len - 1) // (batch_size * seqlen)  # - 1: y is one character ahead of x
    if nb_batches < 1:
        raise CorpusError(
            f"the training text ({text_len:,} characters) is too small for one "
            f"batch of {batch_size} x {seqlen} (it needs {batch_size * seqlen + 1:,}): "
            "add text or lower --batch-size or --seqlen"
        )
    return nb_batches


def minibatch_sequencer(codes, batch_size, seqlen, epochs, start_step=0):
    """Yield (x, y, epoch), x and y int32 arrays of shape [batch_size, seqlen], y being
    x shifted by one character. The remainder that does not fill a whole batch is
    dropped. start_step skips that many batches (to resume where a run stopped)."""
    nb_batches = batches_per_epoch(len(codes), batch_size, seqlen)
    used = nb_batches * batch_size * seqlen
    data = np.asarray(codes, dtype=np.int32)
    xdata = data[:used].reshape(batch_size, nb_batches * seqlen)  # [BATCH, nb_batches*SEQLEN]
    ydata = data[1 : used + 1].reshape(batch_size, nb_batches * seqlen)
    for step in range(start_step, epochs * nb_batches):
        epoch, b = divmod(step, nb_batches)
        cols = slice(b * seqlen, (b + 1) * seqlen)
        x = np.roll(xdata[:, cols], -epoch, axis=0)  # [BATCH, SEQLEN]
        y = np.roll(ydata[:, cols], -epoch, axis=0)  # [BATCH, SEQLEN]
        yield x, y, epoch


def validation_rows(codes, seqlen):
    """Cut validation text into rows of seqlen (fewer if the text is short), each row
    run from a zero state. Returns x, y of shape [ROWS, seqlen]."""
    seqlen = max(1, min(seqlen, len(codes) - 1))
    rows = (len(codes) - 1) // seqlen
    data = np.asarray(codes, dtype=np.int32)
    x = data[: rows * seqlen].reshape(rows, seqlen)
    y = data[1 : rows * seqlen + 1].reshape(rows, seqlen)
    return x, y


# ---------------------------------------------------------------------------
# Reading a file in pieces


def read_pieces(path, size=1 << 20):
    """Yield a text file's symbol codes (uint8 arrays) piece by piece, reading at most
    size bytes at a time, so that a file of any size costs a piece's memory. The
    pieces put together are exactly read_file(path): a UTF-8 sequence or a CRLF cut
    by a piece boundary reads as if it were not. Refuses a binary file (a NUL byte)
    when it reaches it, as read_file does."""
    import codecs  # here, not at the top: this section was added apart from the rest

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    held = ""  # a CR that ends a piece: CRLF if the next piece starts with LF
    try:
        with open(path, "rb") as f:
            while True:
                raw = f.read(size)
                if b"\0" in raw:
                    raise CorpusError(
                        f"{path} is not a text file (it holds NUL bytes): "
                        "narrow --data to text files, e.g. 'DIR/**/*.txt'"
                    )
                text = held + decoder.decode(raw, final=not raw)
                held = text[-1:] if raw and text.endswith("\r") else ""
                yield encode(text[: len(text) - len(held)])
                if not raw:
                    return
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e.strerror}") from None
