"""txtutils: the alphabet, state-continuous batches, validation rows (reading a corpus:
tests/corpus_test.py).
Sampling is not here: it belongs to the compiled generation loop and is tested with it.

No TensorFlow here. The batch and validation-row tests feed np.arange(N) as the
"text": both only slice it, so every value is the position of its character in the text.
"""

import itertools

import numpy as np
import pytest

import txtutils
from charrnn import textcache
from txtutils import CorpusError

PRINTABLE = "".join(chr(c) for c in range(32, 127))
encode, decode = txtutils.DEFAULT.encode, txtutils.DEFAULT.decode  # the talk's alphabet


def text_of(path):
    """A file's whole text as reading it gives it, the simple way (the tests' reference
    for what reads in pieces): a byte that is not UTF-8 as a lone surrogate."""
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="surrogateescape")


def count_chars(text):
    """(code points, counts) of the characters of text, CRLF counted as LF."""
    return np.unique(txtutils.code_points(text.replace("\r\n", "\n")), return_counts=True)


# ---------------------------------------------------------------------------
# The alphabet


def test_the_alphabet_has_98_distinct_symbols():
    assert txtutils.ALPHASIZE == 98
    assert len(txtutils.ALPHABET) == 98
    assert len(set(txtutils.ALPHABET)) == 98


def test_printable_ascii_tab_and_newline_round_trip_each_to_its_own_code():
    text = PRINTABLE + "\t\n"
    codes = encode(text)
    assert codes.dtype == np.uint8
    assert decode(codes) == text
    # 97 characters onto codes 1..97: one code each, 0 is left for "unknown"
    assert sorted(codes.tolist()) == list(range(1, 98))
    for code in codes:
        assert txtutils.ALPHABET[code] == decode([code])


@pytest.mark.parametrize(
    "char, code", [("\t", 1), (" ", 2), ("~", 96), ("\n", 97), ("A", ord("A") - 30)]
)
def test_documented_codes(char, code):
    assert encode(char).tolist() == [code]


def test_crlf_becomes_lf():
    assert encode("a\r\nb\r\n").tolist() == encode("a\nb\n").tolist()
    assert decode(encode("one\r\ntwo")) == "one\ntwo"


@pytest.mark.parametrize("char", ["é", "\r", "\x00", "\x7f", "\x80", "€", "\u2028", "😀"])
def test_unknown_characters_encode_to_0_one_code_each(char):
    codes = encode(f"a{char}b")
    assert codes.tolist() == [encode("a")[0], txtutils.UNKNOWN, encode("b")[0]]
    assert txtutils.UNKNOWN == 0
    assert decode(codes) == "a\ufffdb"


def test_a_lone_cr_is_unknown_but_the_lf_of_cr_cr_lf_stays():
    assert encode("\r\r\n").tolist() == [0, 97]


def test_empty_text_encodes_to_an_empty_array():
    codes = encode("")
    assert codes.shape == (0,)
    assert decode(codes) == ""


def test_a_lone_surrogate_is_unknown_and_does_not_crash():
    """Python puts lone surrogates in sys.argv for bytes that are not UTF-8
    (rnn_play.py --prime $'\\xff')."""
    assert encode("a\udcffb").tolist() == [
        encode("a")[0],
        txtutils.UNKNOWN,
        encode("b")[0],
    ]


# ---------------------------------------------------------------------------
# State-continuous minibatches


def run(n, batch_size, seqlen, epochs, start_step=0):
    return list(txtutils.minibatch_sequencer(np.arange(n), batch_size, seqlen, epochs, start_step))


def test_batches_have_the_asked_shape_and_y_is_x_one_character_ahead():
    batches = run(1000, 4, 7, 2)
    assert batches
    for x, y, _ in batches:
        assert x.shape == y.shape == (4, 7)
        assert x.dtype == y.dtype == np.int32
        assert (np.diff(x, axis=1) == 1).all()  # each row is a contiguous run of the text
        assert (y == x + 1).all()


def test_x_and_y_are_read_from_the_text_itself():
    """Any codes: x[k, t] is text[i] and y[k, t] is text[i + 1] for some position i."""
    text = np.random.default_rng(0).integers(0, txtutils.ALPHASIZE, 500).astype(np.uint8)
    for (x, y, _), (pos, _, _) in zip(
        txtutils.minibatch_sequencer(text, 3, 10, 2), run(500, 3, 10, 2), strict=True
    ):
        assert (x == text[pos]).all()
        assert (y == text[pos + 1]).all()


def test_each_row_continues_across_batches_with_one_break_per_epoch_boundary():
    batch_size, seqlen, epochs = 5, 7, 4
    batches = run(1000, batch_size, seqlen, epochs)
    nb = txtutils.batches_per_epoch(1000, batch_size, seqlen)
    assert [e for _, _, e in batches] == [e for e in range(epochs) for _ in range(nb)]
    for (x0, y0, e0), (x1, y1, e1) in itertools.pairwise(batches):
        breaks = int(np.sum(x1[:, 0] != x0[:, -1] + 1))
        assert (y1[:, 0] != y0[:, -1] + 1).sum() == breaks
        if e1 == e0:
            assert breaks == 0, f"state broken inside epoch {e0}"
        else:
            assert breaks == 1, f"{breaks} rows broken from epoch {e0} to {e1}"


@pytest.mark.parametrize("batch_size", [1, 3])
def test_one_epoch_reads_the_text_from_its_start_once_dropping_less_than_a_batch(batch_size):
    seqlen = 8
    for n in [
        batch_size * seqlen + 1,
        5 * batch_size * seqlen,
        5 * batch_size * seqlen + 1,
        5 * batch_size * seqlen + 17,
    ]:
        xs = np.concatenate([x.ravel() for x, _, _ in run(n, batch_size, seqlen, 1)])
        assert len(np.unique(xs)) == len(xs), "a character is read twice in one epoch"
        covered = len(xs)
        assert (np.sort(xs) == np.arange(covered)).all()
        # the last y is text[covered]; what neither x nor y ever reads is under one batch
        assert 0 <= n - covered - 1 < batch_size * seqlen


def test_every_epoch_reads_the_same_characters():
    batches = run(700, 4, 6, 3)
    per_epoch = [
        np.sort(np.concatenate([x.ravel() for x, _, e in batches if e == epoch]))
        for epoch in range(3)
    ]
    assert (per_epoch[0] == per_epoch[1]).all() and (per_epoch[1] == per_epoch[2]).all()


def test_start_step_resumes_with_the_very_batches_a_full_run_would_give():
    full = run(600, 4, 9, 3)
    nb = len(full) // 3
    for start in [0, 1, nb - 1, nb, nb + 2, len(full) - 1, len(full)]:
        tail = run(600, 4, 9, 3, start_step=start)
        assert len(tail) == len(full) - start
        for (x, y, e), (fx, fy, fe) in zip(tail, full[start:], strict=True):
            assert e == fe
            assert (x == fx).all() and (y == fy).all()


@pytest.mark.parametrize("rows", [slice(0, 2), slice(2, 6), slice(5, 6)])
def test_a_worker_s_rows_are_those_rows_of_the_whole_batch(rows):
    text = np.arange(6 * 5 * 7 + 1)
    whole = txtutils.minibatch_sequencer(text, 6, 5, epochs=3, start_step=4)
    mine = txtutils.minibatch_sequencer(text, 6, 5, epochs=3, start_step=4, row_slice=rows)
    for (x, y, epoch), (my_x, my_y, my_epoch) in itertools.zip_longest(whole, mine):
        assert np.array_equal(x[rows], my_x) and np.array_equal(y[rows], my_y)
        assert epoch == my_epoch


def test_batches_from_the_cache_file_are_those_from_memory(tmp_path):
    codes = np.random.default_rng(0).integers(0, 98, 5000).astype(np.uint8)
    (tmp_path / "codes").write_bytes(codes.tobytes())
    with open(tmp_path / "codes", "rb") as f:
        on_disk = txtutils.minibatch_sequencer(textcache.Codes(f, np.uint8), 7, 11, epochs=2)
        in_memory = txtutils.minibatch_sequencer(codes, 7, 11, epochs=2)
        for (x, y, _), (dx, dy, _) in itertools.zip_longest(in_memory, on_disk):
            assert dx.dtype == np.int32 and np.array_equal(x, dx) and np.array_equal(y, dy)


def test_too_small_a_text_is_a_corpus_error_saying_the_size_needed():
    batch_size, seqlen = 4, 300
    needed = batch_size * seqlen + 1
    with pytest.raises(CorpusError, match=f"needs {needed:,}"):
        run(needed - 1, batch_size, seqlen, 1)
    assert len(run(needed, batch_size, seqlen, 1)) == 1


@pytest.mark.parametrize("n", [0, 1, 2, 24, 25, 26, 48, 49, 50, 1000])
def test_batches_per_epoch_is_the_most_whole_batches_x_and_y_fit_in(n):
    batch_size, seqlen = 3, 8
    fit = 0
    while (fit + 1) * batch_size * seqlen + 1 <= n:  # y reads one character past x
        fit += 1
    if fit < 1:
        with pytest.raises(CorpusError, match="too small"):
            txtutils.batches_per_epoch(n, batch_size, seqlen)
    else:
        assert txtutils.batches_per_epoch(n, batch_size, seqlen) == fit


# ---------------------------------------------------------------------------
# Validation rows


@pytest.mark.parametrize("n, seqlen", [(101, 10), (100, 10), (1000, 33), (11, 10)])
def test_validation_rows_are_consecutive_slices_of_seqlen_with_y_one_ahead(n, seqlen):
    x, y = txtutils.validation_rows(np.arange(n), seqlen)
    rows = (n - 1) // seqlen
    assert x.shape == y.shape == (rows, seqlen)
    assert (x.ravel() == np.arange(rows * seqlen)).all()
    assert (y == x + 1).all()


@pytest.mark.parametrize("rows", [1, 255, 256, 257, 1000, 123_457])
def test_validation_takes_at_most_max_rows_spread_evenly_and_the_same_each_time(rows):
    """A held-out text of any size costs at most max_rows rows an evaluation: the whole
    rows if there are no more (every one: today's figures where the text is small),
    else max_rows of them from the first to the last, evenly apart."""
    seqlen, cap = 8, 256
    text = np.arange(rows * seqlen + 1)
    x, y = txtutils.validation_rows(text, seqlen, cap)
    assert x.shape == y.shape == (min(rows, cap), seqlen)
    assert (y == x + 1).all() and (x[:, 1:] == x[:, :1] + np.arange(1, seqlen)).all()
    starts = x[:, 0] // seqlen  # which rows were taken
    if rows <= cap:
        assert starts.tolist() == list(range(rows))
    else:
        assert starts[0] == 0 and starts[-1] == rows - 1
        gaps = np.diff(starts)
        assert gaps.min() >= 1 and gaps.max() - gaps.min() <= 1
    again, _ = txtutils.validation_rows(text, seqlen, cap)
    assert np.array_equal(again, x)


@pytest.mark.parametrize("n", [2, 5, 10, 30])
def test_a_text_shorter_than_seqlen_gives_one_shorter_row(n):
    x, y = txtutils.validation_rows(np.arange(n), 30)
    assert x.shape == y.shape == (1, n - 1)
    assert x[0].tolist() == list(range(n - 1))
    assert y[0].tolist() == list(range(1, n))


# ---------------------------------------------------------------------------
# Alphabets grown from the text


def cjk_text(distinct=3200, seed=0):
    """A CJK text of `distinct` different characters (ideographs from U+4E00), each
    at least twice, in lines."""
    rng = np.random.default_rng(seed)
    chars = [chr(0x4E00 + i) for i in range(distinct)] * 2
    rng.shuffle(chars)
    return "\n".join("".join(chars[i : i + 40]) for i in range(0, len(chars), 40)) + "\n"


# Texts in other scripts, as corpora and primes for the tests of every program.
UNICODE_TEXTS = {
    "cyrillic": "Мороз и солнце; день чудесный!\nЕщё ты дремлешь, друг прелестный.\n" * 3,
    "greek": "Ἄνδρα μοι ἔννεπε, Μοῦσα, πολύτροπον, ὃς μάλα πολλὰ\n" * 3,
    "accented latin": "Où est la forêt? Ça, c'est l'été. Über Größe, Müßiggang; año.\n" * 3,
    "combining accents": "e\u0301te\u0301, n\u0303o, a\u0308\u0304\n" * 3,
    "emoji beyond the BMP": "🙂 good 🚀 launch 𝄞 music 😀😀\n" * 3,
    "crlf": "first line\r\nsecond line, déjà\r\n" * 3,
    "cjk": cjk_text(),
}


def grown(text, min_count=txtutils.MIN_COUNT):
    return txtutils.DEFAULT.grown(*count_chars(text), min_count)


@pytest.mark.parametrize("name", UNICODE_TEXTS)
def test_a_text_in_any_script_round_trips_through_its_own_alphabet(name):
    text = UNICODE_TEXTS[name]
    alphabet = grown(text)
    assert alphabet.chars[: txtutils.ALPHASIZE] == txtutils.ALPHABET  # the talk's 98 first
    extra = alphabet.chars[txtutils.ALPHASIZE :]
    assert list(extra) == sorted(set(extra))  # each once, in code point order
    assert set(extra) == set(text.replace("\r\n", "\n")) - set(txtutils.ALPHABET)
    codes = alphabet.encode(text)
    assert txtutils.UNKNOWN not in codes
    assert alphabet.decode(codes) == text.replace("\r\n", "\n")
    assert len(codes) == len(text.replace("\r\n", "\n"))  # one code per code point


def test_a_cjk_alphabet_of_thousands_of_symbols_holds_in_two_bytes_a_character():
    alphabet = grown(UNICODE_TEXTS["cjk"])
    assert alphabet.size == 98 + 3200
    assert alphabet.encode(UNICODE_TEXTS["cjk"]).dtype == np.uint16
    assert encode("abc").dtype == np.uint8


def test_ascii_text_gives_exactly_the_talks_alphabet():
    assert grown(PRINTABLE * 3 + "\t\n" * 3) == txtutils.DEFAULT


def test_the_alphabet_is_the_same_whatever_the_order_of_the_text():
    text = UNICODE_TEXTS["greek"] + UNICODE_TEXTS["cyrillic"]
    shuffled = "".join(np.random.default_rng(0).permutation(list(text)))
    assert grown(text).chars == grown(shuffled).chars


def test_characters_rarer_than_min_count_stay_unknown():
    text = "жжж ё щщ"  # ж 3 times, щ twice, ё once
    assert grown(text).chars[98:] == "жщ"
    assert grown(text, min_count=3).chars[98:] == "ж"
    assert grown(text, min_count=1).chars[98:] == "жщё"  # U+0436, U+0449, U+0451
    codes = grown(text).encode(text)
    assert grown(text).decode(codes) == "жжж \ufffd щщ"


def test_symbol_counts_are_the_counts_of_the_encoded_text():
    text = "жжж ё щщ\u4e00 " + UNICODE_TEXTS["greek"] + "\udcff"  # ё and 一 once: unknown
    alphabet = grown(text)
    counts = alphabet.symbol_counts(*count_chars(text))
    assert counts.tolist() == np.bincount(alphabet.encode(text), minlength=alphabet.size).tolist()
    assert counts[txtutils.UNKNOWN] == 3 and counts.sum() == len(text)


def test_a_grown_alphabet_keeps_the_codes_it_had():
    parent = grown("жжщщ")
    child = parent.grown(*count_chars("ääжж"))
    assert child.chars == parent.chars + "ä"
    assert child.encode("жщä").tolist() == [*parent.encode("жщ").tolist(), parent.size]


def test_u_fffd_and_bytes_that_are_not_utf8_never_join_the_alphabet():
    text = "\ufffd\ufffd\udcff\udcff ok"
    assert grown(text) == txtutils.DEFAULT
    assert grown(text).encode(text).tolist()[:4] == [txtutils.UNKNOWN] * 4
