"""Hostile input: arbitrary bytes and Unicode as corpus files, prime text and file names.

The promise: the encoder and the command-line programs never crash with a traceback;
a corpus file that is not text (one holding a NUL byte, e.g. a PNG) is refused with a
one-line error and exit status 2; any other bytes are decoded as UTF-8, each byte that
is not UTF-8 counted and read as one unknown character, and characters outside the
alphabet become symbol 0 ("unknown"). The alphabet of a training text is the talk's 98
symbols and then its characters seen twice or more, surrogates and U+FFFD never.

The expected outcome of every example is worked out here from that specification
(an independent per-character encoder, UTF-8 decoding with surrogateescape, the
hidden-file rule), not from the code under test.
"""

import binascii
import os
import pathlib
import re
import struct
import tempfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import charrnn.corpus
import rnn_play
import rnn_train
import txtutils
from conftest import TINY, run_cli, where

# ---------------------------------------------------------------------------
# Strategies

# Every code point, lone surrogates included: a command-line argument or a file name
# holding bytes that are not UTF-8 reaches Python as lone surrogates (U+DC80..U+DCFF).
# The plain strategy draws surrogates rarely, so they get a branch of their own, as do
# the characters that matter most here (CR, LF, NUL, ESC, DEL, U+FFFD).
HOSTILE_CHAR = st.one_of(
    st.characters(codec=None, exclude_categories=()),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"]),
    st.sampled_from("\r\n\t\0\x1b\x7f\x85\u2028\ufffd"),
    st.sampled_from(txtutils.ALPHABET[1:]),
)
HOSTILE_TEXT = st.text(alphabet=HOSTILE_CHAR)

# Bytes: anything, plus UTF-8 of hostile text (valid UTF-8, CRLF pairs, NULs), plus
# surrogates written with "surrogatepass" (bytes that are not valid UTF-8).
HOSTILE_BYTES = st.one_of(
    st.binary(),
    HOSTILE_TEXT.map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.text(alphabet=st.sampled_from("ab \r\n\t\x80\xff")).map(lambda s: s.encode("latin-1")),
)


def _png():
    """A real 1 x 1 PNG: signature, IHDR, IDAT, IEND (chunk lengths hold NUL bytes)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", binascii.crc32(kind + data))
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


PNG = _png()


def _usable_name(name):
    """A name the filesystem accepts as one directory entry."""
    if "/" in name or "\0" in name or name in (".", ".."):
        return False
    try:
        return len(os.fsencode(name)) <= 200
    except UnicodeEncodeError:  # a surrogate that surrogateescape cannot turn into a byte
        return False


FILE_NAME = st.text(
    alphabet=st.one_of(HOSTILE_CHAR, st.sampled_from("[]*?!.-~ \\")),
    min_size=1,
    max_size=20,
).filter(_usable_name)


# ---------------------------------------------------------------------------
# The specification, written independently of txtutils


def expected_codes(text):
    """Symbol codes by the documented alphabet: 1 = tab, 2..96 = ASCII 32..126,
    97 = LF, 0 = everything else; CRLF is read as LF (one pass, left to right)."""
    text = text.replace("\r\n", "\n")

    def code(c):
        if c == "\t":
            return 1
        if c == "\n":
            return 97
        if 32 <= ord(c) <= 126:
            return ord(c) - 30
        return 0

    return np.array([code(c) for c in text], dtype=np.int64)


def expected_file_codes(data):
    """What a text file (no NUL byte) reads as in the talk's alphabet: UTF-8, a byte
    that is not UTF-8 one unknown character."""
    return expected_codes(data.decode("utf-8", errors="surrogateescape"))


def expected_alphabet(texts):
    """The talk's 98 symbols, then every other character of texts (CRLF read as LF)
    seen at least twice, by code point; never U+FFFD nor a surrogate."""
    counts = {}
    for c in "".join(t.replace("\r\n", "\n") for t in texts):
        counts[c] = counts.get(c, 0) + 1
    extra = [
        c
        for c, n in counts.items()
        if n >= 2 and c not in txtutils.ALPHABET and not 0xD800 <= ord(c) <= 0xDFFF
    ]
    return txtutils.ALPHABET + "".join(sorted(extra))


def one_error_line(err, prog):
    """stderr must be exactly one line, the program's error line; returns it."""
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert err.startswith(f"{prog}: error: "), repr(err)
    assert "Traceback" not in err
    return err


# ---------------------------------------------------------------------------
# 1. The encoder


@settings(max_examples=300, deadline=None)
@given(HOSTILE_TEXT)
@example("\r\n")
@example("\r\r\n\n\r")  # one pass: "\r\r\n" -> "\r\n" stays CR (unknown) + LF
@example("\ud800\udfff\udc80")  # lone surrogates, as from non-UTF-8 argv bytes
@example("\x00\x7f\x80\ufffd\U0010ffff")
def test_encode_takes_any_text_and_maps_each_character_by_the_alphabet(text):
    codes = txtutils.DEFAULT.encode(text)
    assert codes.dtype == np.uint8
    assert codes.shape == (len(text) - text.count("\r\n"),)
    assert ((codes >= 0) & (codes < txtutils.ALPHASIZE)).all()
    np.testing.assert_array_equal(codes.astype(np.int64), expected_codes(text))
    # decoding shows every character outside the alphabet as the "unknown" mark
    normalised = text.replace("\r\n", "\n")
    known = set(txtutils.ALPHABET[1:])
    assert txtutils.DEFAULT.decode(codes) == "".join(
        c if c in known else "\ufffd" for c in normalised
    )


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=txtutils.ALPHABET[1:]))
def test_encode_then_decode_gives_back_text_in_the_alphabet(text):
    assert txtutils.DEFAULT.decode(txtutils.DEFAULT.encode(text)) == text


# ---------------------------------------------------------------------------
# 2. One file of arbitrary bytes


@settings(max_examples=200, deadline=None)
@given(HOSTILE_BYTES)
@example(PNG)
@example(b"")
@example(b"\0")
@example(b"\xff\xfe\r\n\xc3")
def test_reading_refuses_exactly_the_files_holding_nul_and_decodes_the_rest(data):
    """read_pieces (what --score, --prime-file and the cache read with), in pieces of 7
    bytes so that characters and CRLFs are cut; and what read_corpus counts of it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "hostile.txt")
        with open(path, "wb") as f:
            f.write(data)
        if b"\0" in data:
            with pytest.raises(txtutils.CorpusError, match="is not a text file") as info:
                list(txtutils.read_pieces(path, 7))
            assert path in str(info.value)
            assert "\n" not in str(info.value)
        else:
            codes = np.concatenate([np.zeros(0, np.uint8), *txtutils.read_pieces(path, 7)])
            assert codes.dtype == np.uint8
            np.testing.assert_array_equal(codes.astype(np.int64), expected_file_codes(data))
            if codes.size:
                corpus = charrnn.corpus.read_corpus(
                    [path], [], cache_dir=os.path.join(tmp, "cache")
                )
                escaped = data.decode("utf-8", errors="surrogateescape")
                not_utf8 = sum(0xDC80 <= ord(c) <= 0xDCFF for c in escaped)
                assert corpus.not_utf8 == ({path: not_utf8} if not_utf8 else {})
                assert corpus.fingerprint["train"][0][1] == len(data)


# ---------------------------------------------------------------------------
# 3. A corpus folder with arbitrary file names


@settings(max_examples=150, deadline=None)
@given(
    files=st.lists(
        st.tuples(FILE_NAME, HOSTILE_BYTES),
        min_size=0,
        max_size=7,
        unique_by=lambda f: os.fsencode(f[0]),
    ),
    validation=st.sampled_from([None, []]),
    by_file=st.booleans(),
)
@example(
    files=[("[", b"a"), ("*", b"b"), ("a[b]c?", b"cd"), ("[!x]", b"")], validation=[], by_file=False
)
@example(files=[(".hidden", b"\0PNG"), ("visible", b"text")], validation=[], by_file=False)
@example(files=[("\udcff\udcfe", b"x"), ("\udcc3\udca9", b"y")], validation=None, by_file=False)
@example(files=[("~", b"x"), ("-", b"y\n")], validation=[], by_file=True)
def test_read_corpus_takes_any_file_names_and_fails_only_with_corpus_error(
    files, validation, by_file
):
    with tempfile.TemporaryDirectory() as tmp:
        tmpb = os.fsencode(tmp)
        for name, data in files:
            with open(os.path.join(tmpb, os.fsencode(name)), "wb") as f:
                f.write(data)
        # the folder itself as --data: a name with glob characters cannot be globbed
        # literally; a name without them can also be given as the file itself
        plain = [(n, d) for n, d in files if not any(c in n for c in "[]*?")]
        if by_file and plain:
            files = plain[:1]
            data_patterns = [os.path.join(tmp, files[0][0])]
            visible = files  # a file named outright is read even if hidden
        else:
            data_patterns = [tmp]
            visible = [(n, d) for n, d in files if not n.startswith(".")]  # walks skip hidden
        expected_paths = {os.path.join(tmpb, os.fsencode(n)) for n, _ in visible}
        total = sum(len(expected_file_codes(d)) for _, d in visible if b"\0" not in d)

        try:
            corpus = charrnn.corpus.read_corpus(data_patterns, validation)
            train, valid, train_files, valid_files = corpus[:4]
        except txtutils.CorpusError as e:
            message = str(e)
            event(
                "refused: "
                + next(
                    (
                        k
                        for k in (
                            "matches no file",
                            "not a text file",
                            "holds no text",
                            "validation files take all",
                        )
                        if k in message
                    ),
                    message,
                )
            )
            if not visible:
                assert "matches no file" in message
            elif any(b"\0" in d for _, d in visible):
                assert "is not a text file" in message
            else:
                # every file read; the only refusal left is a training text with nothing in it
                assert validation is None or total == 0, message
                assert "holds no text" in message or "validation files take all" in message
            return
        event("read")
        assert visible and not any(b"\0" in d for _, d in visible)
        assert {os.fsencode(p) for p in train_files + valid_files} == expected_paths
        assert len(train) > 0
        assert len(train) + len(valid) == total
        if validation == []:
            assert valid_files == []
        texts = {
            os.fsencode(p): pathlib.Path(p).read_bytes().decode("utf-8", "surrogateescape")
            for p in train_files + valid_files
        }
        alphabet = expected_alphabet(texts[os.fsencode(p)] for p in train_files)
        assert corpus.alphabet.chars == alphabet
        event(f"alphabet grown: {len(alphabet) > txtutils.ALPHASIZE}")
        for codes, paths in ((train, train_files), (valid, valid_files)):
            text = "".join(texts[os.fsencode(p)].replace("\r\n", "\n") for p in paths)
            assert corpus.alphabet.decode(codes) == "".join(
                c if c in alphabet[1:] else "\ufffd" for c in text
            )


# ---------------------------------------------------------------------------
# 4. rnn_train.py, in process, on a corpus of arbitrary bytes

# A readable file of 120 characters: with it, the tiny batch of 4 x 8 (33 characters)
# fits whatever the hostile file holds.
READABLE = b"ROMEO: the moon sees juliet.\n" * 4 + b"JULIET.\n"
TRAIN_FLAGS = [
    *TINY,
    "--max-steps",
    "2",
    "--sample-every",
    "1000",
    "--eval-every",
    "1000",
    "--save-every",
    "1000",
    "--validation",
    "none",
    "--run",
    "hostile",
]
MIN_TEXT = 4 * 8 + 1  # --batch-size 4 x --seqlen 8, plus the one character y runs ahead
# a hostile name for the hostile file, one that a walk of the folder does not skip
CORPUS_NAME = FILE_NAME.filter(
    lambda n: not n.startswith(".") and n not in ("image.png", "readable.txt")
)


@settings(
    max_examples=9, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=HOSTILE_BYTES,
    name=st.one_of(st.just("hostile.txt"), CORPUS_NAME),
    with_png=st.booleans(),
    with_readable=st.booleans(),
)
@example(data=b"\xff\xfe\x00\x01", name="[*?].txt", with_png=False, with_readable=True)
@example(data=b"\xc3\x28 \xed\xa0\x80 \r\n" * 5, name="\udcff", with_png=False, with_readable=False)
@example(data=b"", name="hostile.txt", with_png=False, with_readable=False)
@example(data=b"\xff", name="hostile.txt", with_png=False, with_readable=False)
@example(data=b"\xff\xfe\r\nok", name="~\x1b[31m", with_png=False, with_readable=True)
@example(data=b"text", name="hostile.txt", with_png=True, with_readable=True)
def test_train_trains_or_refuses_in_one_line_on_any_bytes(
    capfd, data, name, with_png, with_readable
):
    capfd.readouterr()  # what an earlier example left
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus")
        os.makedirs(corpus)
        contents = {name: data}
        if with_png:
            contents["image.png"] = PNG
        if with_readable:
            contents["readable.txt"] = READABLE
        for file_name, content in contents.items():
            with open(os.path.join(os.fsencode(corpus), os.fsencode(file_name)), "wb") as f:
                f.write(content)
        argv = [
            "--data",
            corpus,
            *TRAIN_FLAGS,
            *where(tmp),
        ]
        try:
            status = rnn_train.main(argv)
        except SystemExit as e:
            status = ("exit", e.code)
        out, err = capfd.readouterr()

        if any(b"\0" in c for c in contents.values()):
            reason = "is not a text file"
        else:
            total = sum(len(expected_file_codes(c)) for c in contents.values())
            reason = (
                "holds no text"
                if total == 0
                else "too small for one batch"
                if total < MIN_TEXT
                else None
            )
        event(reason or "trained")
        if reason is None:
            assert status == 0, err
            assert "Traceback" not in err
            assert "done: step 2" in out
            assert os.path.exists(os.path.join(tmp, "ck", "hostile", "ckpt-2.index"))
        else:
            assert status == ("exit", 2), (status, out, err)
            assert "Traceback" not in err
            assert reason in one_error_line(err, "rnn_train.py")
            assert not os.path.exists(os.path.join(tmp, "ck", "hostile"))


def test_train_error_naming_a_file_with_a_newline_is_one_line(capfd, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "image\n.png").write_bytes(PNG)
    capfd.readouterr()
    with pytest.raises(SystemExit) as info:
        rnn_train.main(
            [
                "--data",
                str(corpus),
                *TRAIN_FLAGS,
                *where(tmp_path),
            ]
        )
    assert info.value.code == 2
    assert "is not a text file" in one_error_line(capfd.readouterr().err, "rnn_train.py")


# ---------------------------------------------------------------------------
# 5. rnn_play.py, in process, with an arbitrary prime


def play_in_process(capfd, argv):
    capfd.readouterr()
    try:
        status = rnn_play.main(argv)
    except SystemExit as e:
        status = ("exit", e.code)
    out, err = capfd.readouterr()
    return status, out, err


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(prime=st.text(alphabet=HOSTILE_CHAR, min_size=1, max_size=40), as_one_arg=st.booleans())
@example(prime="\r", as_one_arg=True)
@example(prime="\r\n\r\n", as_one_arg=False)
@example(prime="\udcff\udcfeabc", as_one_arg=False)  # non-UTF-8 argv bytes
@example(prime="\ud800", as_one_arg=True)
@example(prime="\0\x1b[2J\x7f", as_one_arg=False)
@example(prime="-x", as_one_arg=False)
@example(prime="--", as_one_arg=False)
def test_play_prints_any_prime_then_exactly_the_asked_length(tiny_run, capfd, prime, as_one_arg):
    prime_args = [f"--prime={prime}"] if as_one_arg else ["--prime", prime]
    status, out, err = play_in_process(
        capfd,
        [
            *prime_args,
            "--length",
            "20",
            "--seed",
            "1",
            "--checkpoint-dir",
            str(tiny_run["checkpoints"]),
        ],
    )
    if status != 0 and not as_one_arg and prime.startswith("-"):
        # `--prime -x` reads as two flags (argparse's rule; `--prime=-x` is the way):
        # that is refused in one line, not crashed on
        assert status == ("exit", 2)
        assert "--prime" in one_error_line(err, "rnn_play.py")
        event("refused: prime read as a flag")
        return
    event("generated")
    assert status == 0, err
    unknown = int((expected_codes(prime) == 0).sum())
    warning = (
        f"warning: {unknown} of the prime's {len(expected_codes(prime))} characters are not "
        "in the model's alphabet: the model reads them as unknown\n"
    )
    assert err == (warning if unknown else "")
    # stdout is written with errors="replace": a character it cannot encode (a lone
    # surrogate) is printed as "?"; everything else goes out as given, CR included
    shown = prime.encode("utf-8", errors="replace").decode("utf-8")
    assert out.startswith(shown), (out, shown)
    generated = out[len(shown) :]
    assert len(generated) == 20 + 1 and generated.endswith("\n")
    assert set(generated[:-1]) <= set(txtutils.ALPHABET)


def test_play_takes_two_dashes_as_the_prime(tiny_run, capfd):
    status, out, err = play_in_process(
        capfd,
        [
            "--prime=--",
            "--length",
            "20",
            "--seed",
            "1",
            "--checkpoint-dir",
            str(tiny_run["checkpoints"]),
        ],
    )
    assert (status, err) == (0, "")
    assert out.startswith("--") and len(out) == 2 + 20 + 1


# ---------------------------------------------------------------------------
# 6. rnn_play.py --score, in process, on a file of arbitrary bytes

SCORE_LINE = re.compile(
    r": ([\d.]+) bits/char \(([\d.]+) nats/char\), accuracy ([\d.]+), "
    r"over ([\d,]+) characters(?:; ([\d.]+)% of them not in the model's alphabet \(unknown\))?"
    r"\n\Z"
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(HOSTILE_BYTES)
@example(b"")
@example(b"a")
@example(b"\r\n")  # one character after CRLF -> LF: nothing to score
@example(b"a\r\n")  # two: scored over one
@example(b"\xff\xfe")  # two replacement characters, both unknown
@example(PNG)
def test_score_scores_or_refuses_in_one_line_on_any_bytes(tiny_run, capfd, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "hostile.txt")
        with open(path, "wb") as f:
            f.write(data)
        status, out, err = play_in_process(
            capfd, ["--score", path, "--checkpoint-dir", str(tiny_run["checkpoints"])]
        )
    if b"\0" in data:
        event("refused: not a text file")
        assert status == ("exit", 2)
        assert "is not a text file" in one_error_line(err, "rnn_play.py")
        return
    n = len(expected_file_codes(data))
    if n < 2:
        event("refused: nothing to score")
        assert status == ("exit", 2)
        assert "nothing to score" in one_error_line(err, "rnn_play.py")
        return
    event("scored")
    assert status == 0, err
    assert err == ""
    assert out.startswith(path)
    m = SCORE_LINE.search(out)
    assert m, out
    bits, nats, accuracy = float(m[1]), float(m[2]), float(m[3])
    assert int(m[4].replace(",", "")) == n - 1  # every character but the first is predicted
    assert np.isfinite(nats) and nats >= 0
    assert abs(bits - nats / np.log(2)) < 2e-3
    assert 0 <= accuracy <= 1
    unknown = (expected_file_codes(data) == 0).mean()  # of every character of the file
    assert (float(m[5]) if m[5] else 0.0) == pytest.approx(100 * unknown, abs=0.005)


# ---------------------------------------------------------------------------
# 7. The real programs, as separate processes


def test_train_process_refuses_a_png_under_a_non_utf8_name_in_one_line(tmp_path):
    corpus = os.path.join(os.fsencode(tmp_path), b"corpus")
    os.makedirs(corpus)
    with open(os.path.join(corpus, b"image\xff.png"), "wb") as f:  # not UTF-8: a bytes name
        f.write(PNG)
    result = run_cli(
        "rnn_train.py",
        "--data",
        corpus,
        *TRAIN_FLAGS,
        *where(tmp_path),
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    line = one_error_line(result.stderr, "rnn_train.py")
    assert "not a text file" in line
    assert "image" in line
    assert not (tmp_path / "ck" / "hostile").exists()


def test_play_process_takes_a_prime_that_is_not_utf8(tiny_run):
    length = 30
    result = run_cli(
        "rnn_play.py",
        "--prime",
        b"\xff\xfeabc",
        "--length",
        str(length),
        "--seed",
        "1",
        "--checkpoint-dir",
        str(tiny_run["checkpoints"]),
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr == (
        "warning: 2 of the prime's 5 characters are not in the model's alphabet: "
        "the model reads them as unknown\n"
    )
    # the two bytes reach Python as lone surrogates, which stdout prints as "?"
    assert result.stdout.startswith("??abc")
    assert len(result.stdout) == len("??abc") + length + 1
    assert result.stdout.endswith("\n")
