"""Text utilities: the alphabet, reading a text file in pieces, state-continuous
batches and validation rows. (Reading a whole corpus - finding its files, the split,
the cache - builds on these: charrnn/corpus.py.)

Nothing here imports TensorFlow, nor anything of this project: it is all NumPy, so
it is quick to test, and it sits under every other module.
"""

import codecs
import contextlib

import numpy as np

# The talk's alphabet, 98 symbols, comes first in every alphabet, with the same codes:
#   0 = unknown, 1 = tab, 2..96 = printable ASCII 32..126 (code - 30), 97 = line feed
# so a model of ASCII text is what it always was, and checkpoints made before
# alphabets grew load unchanged. Every other character of the training text that
# occurs at least MIN_COUNT times follows, in code point order (Alphabet.grown).
ALPHASIZE = 98
UNKNOWN = 0
# ALPHABET[i] is the character that code i stands for ("\ufffd" for unknown).
ALPHABET = "\ufffd\t" + "".join(chr(c) for c in range(32, 127)) + "\n"
MIN_COUNT = 2  # a character seen once cannot be learnt: it stays "unknown"


class Alphabet:
    """The symbols of a model: chars[i] is the character code i stands for, chars[0]
    ("\ufffd") the unknown character that every character not in chars becomes."""

    def __init__(self, chars=ALPHABET):
        if not chars.startswith(ALPHABET):
            raise ValueError("an alphabet starts with the 98 symbols of ALPHABET")
        self.chars, self.size = chars, len(chars)
        points = np.array([ord(c) for c in chars[1:]], dtype=np.int64)
        self._code_of = np.zeros(max(points.max() + 1, 128), dtype=np.int32)  # point -> code
        self._code_of[points] = np.arange(1, self.size, dtype=np.int32)
        self._char_of = np.array(list(chars))  # code -> character
        # the smallest integers that hold every code: a corpus costs a byte a character
        # in the talk's alphabet, two in most others
        self.dtype = np.uint8 if self.size <= 256 else np.uint16 if self.size <= 65536 else np.int32
        # ASCII -> code as bytes.translate's table, for encode's quick path
        self._ascii_table = (
            self._code_of[:128].astype(np.uint8).tobytes() + bytes(128)
            if self.dtype == np.uint8
            else None
        )

    def unknown_count(self, points, counts):
        """How many of the characters (code points, with how often each occurs) this
        alphabet reads as unknown."""
        return int(self.symbol_counts(points, counts)[UNKNOWN])

    def symbol_counts(self, points, counts):
        """How often each symbol occurs among the characters (code points, with how
        often each occurs): int64 [size], the unknown symbol counting every character
        this alphabet lacks."""
        points = np.asarray(points, dtype=np.int64)
        inside = points < len(self._code_of)
        codes = np.full(len(points), UNKNOWN, dtype=np.int64)
        codes[inside] = self._code_of[points[inside]]
        return np.bincount(codes, weights=counts, minlength=self.size).astype(np.int64)

    def __eq__(self, other):
        return isinstance(other, Alphabet) and other.chars == self.chars

    def __hash__(self):
        return hash(self.chars)

    def encode(self, text):
        """str -> array of codes. CRLF becomes LF; characters not in the alphabet
        become UNKNOWN."""
        text = text.replace("\r\n", "\n")
        if text.isascii():  # most text: a byte a character, one table lookup
            ascii_bytes = text.encode("ascii")
            if self._ascii_table is not None:
                return np.frombuffer(ascii_bytes.translate(self._ascii_table), np.uint8)
            return self._code_of[np.frombuffer(ascii_bytes, np.uint8)].astype(self.dtype)
        points = code_points(text)
        inside = points < len(self._code_of)
        return np.where(inside, self._code_of[np.where(inside, points, 0)], UNKNOWN).astype(
            self.dtype
        )

    def decode(self, codes):
        """Sequence of codes -> str."""
        return "".join(self._char_of[np.asarray(codes, dtype=np.int64)])

    def grown(self, points, counts, min_count=MIN_COUNT):
        """This alphabet followed by the characters (code points, with how often each
        occurs: np.unique's two arrays) seen at least min_count times and not in it
        yet, in code point order. Never added: U+FFFD, which is the unknown symbol,
        and the lone surrogates that stand for bytes that are not UTF-8."""
        known = {ord(c) for c in self.chars}
        new = [
            int(p)
            for p, n in zip(points, counts, strict=True)
            if n >= min_count and int(p) not in known and not 0xD800 <= p <= 0xDFFF
        ]
        return Alphabet(self.chars + "".join(chr(p) for p in sorted(new)))


class CorpusError(Exception):
    """Bad input that the user can fix; the message says how."""


DEFAULT = Alphabet()


def code_points(text):
    """str -> uint32 array of its code points. surrogatepass: bytes that are not UTF-8
    reach Python as lone surrogates (a command-line argument, a file read with
    surrogateescape); they are unknown characters, not an error."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


# ---------------------------------------------------------------------------
# Reading a file


@contextlib.contextmanager
def reading(path):
    """What goes wrong reading path, as the one line a user reads (CorpusError)."""
    try:
        yield
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e.strerror}") from None


def refuse_binary(raw, path):
    """A NUL byte is no text's: a binary file is refused, never read as text."""
    if b"\0" in raw:
        raise CorpusError(
            f"{path} is not a text file (it holds NUL bytes): give text files only "
            "(a glob such as 'DIR/**/*.txt' picks them out of a folder)"
        )


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


def minibatch_sequencer(codes, batch_size, seqlen, epochs, start_step=0, row_slice=None):
    """Yield (x, y, epoch), x and y int32 arrays of shape [batch_size, seqlen], y being
    x shifted by one character. The remainder that does not fill a whole batch is
    dropped. start_step skips that many batches (to resume where a run stopped).
    row_slice: the rows to read (a worker's share of the batch), else all.

    Each batch reads only its own characters from codes, so codes may be the text
    cache's file of a text of any size (textcache.Codes)."""
    nb_batches = batches_per_epoch(len(codes), batch_size, seqlen)
    row_len = nb_batches * seqlen  # each row's slice of the text
    row_slice = row_slice or slice(None)
    for step in range(start_step, epochs * nb_batches):
        epoch, b = divmod(step, nb_batches)
        # at epoch e, row k goes on with slice (k + e) mod batch_size
        slices = np.roll(np.arange(batch_size), -epoch)[row_slice]
        xy = read_rows(codes, slices * row_len + b * seqlen, seqlen + 1)  # [ROWS, SEQLEN+1]
        xy = xy.astype(np.int32)
        yield np.ascontiguousarray(xy[:, :-1]), np.ascontiguousarray(xy[:, 1:]), epoch


def read_rows(codes, starts, length):
    """[len(starts), length]: codes[start : start + length] for each start, read from
    the file of textcache.Codes (only those characters), or from an array."""
    if hasattr(codes, "rows"):  # textcache.Codes
        return codes.rows(starts, length)
    return np.asarray(codes)[np.asarray(starts)[:, None] + np.arange(length)]


# Validation: rows of VALID_SEQLEN characters, each from a zero state (so long ones),
# at most VALID_MAX_ROWS of them, so that an evaluation costs the same at any size.
# It runs every --eval-every batches, so it must be cheap: on a 2-core Intel Xeon,
# 256 rows of 1,024 took 6.4 s (18 batches' time), 128 of 512 take 3.0 s, and more
# rows cost less a character than longer ones; 512 characters keep the zero state's
# first few a small part of each row.
VALID_SEQLEN = 512
VALID_MAX_ROWS = 128


def validation_rows(codes, seqlen, max_rows=None):
    """Cut validation text into rows of seqlen (fewer if the text is short), each row
    run from a zero state. Returns x, y of shape [ROWS, seqlen]. If there are more
    than max_rows rows, max_rows of them spread evenly over the text, the first and
    the last among them: the same rows every time, so that evaluations compare."""
    seqlen = max(1, min(seqlen, len(codes) - 1))
    rows = (len(codes) - 1) // seqlen
    chosen = np.arange(rows)
    if max_rows is not None and rows > max_rows:
        chosen = np.linspace(0, rows - 1, max_rows).round().astype(np.int64)
    xy = read_rows(codes, chosen * seqlen, seqlen + 1).astype(np.int32)
    return np.ascontiguousarray(xy[:, :-1]), np.ascontiguousarray(xy[:, 1:])


def read_pieces(path, size=1 << 20, alphabet=DEFAULT):
    """Yield a text file's codes in alphabet piece by piece, reading at most size
    bytes at a time, so that a file of any size costs a piece's memory. The pieces
    put together are exactly the codes of the whole file's text. Refuses a binary
    file (a NUL byte) when it reaches it."""
    for text in read_text_pieces(path, size):
        yield alphabet.encode(text)


def read_text_pieces(path, size=1 << 20):
    """Yield a text file's text piece by piece (read_pieces, before encoding, which
    reads CRLF as LF): a UTF-8 sequence or a CRLF cut by a piece boundary reads as if
    it were not. A pipe works too: the file is read once, from its start to its end.
    Bytes that are not UTF-8 read as lone surrogates (surrogateescape), one each: each
    is counted and read as unknown, where "replace" would hide it as a U+FFFD."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    held = ""  # a CR that ends a piece: CRLF if the next piece starts with LF
    with reading(path), open(path, "rb") as f:
        while True:
            raw = f.read(size)
            refuse_binary(raw, path)
            text = held + decoder.decode(raw, final=not raw)
            held = text[-1:] if raw and text.endswith("\r") else ""
            yield text[: len(text) - len(held)]
            if not raw:
                return
