"""txtutils: the alphabet, state-continuous batches, validation rows, reading a corpus.
Sampling is not here: it belongs to the compiled generation loop and is tested with it.

No TensorFlow here. The batch and validation-row tests feed np.arange(N) as the
"text": both only slice it, so every value is the position of its character in the text.
"""

import contextlib
import itertools
import os
import signal

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
# Reading a corpus


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


@pytest.mark.parametrize(
    "chars, count", [(0, 2), (2_999_999, 2), (3_000_000, 3), (110_000_000, 110), (10**10, 10**4)]
)
def test_the_automatic_min_count_is_one_in_a_million_and_at_least_2(chars, count):
    assert txtutils.min_count_for(chars) == count


def test_min_count_auto_keeps_a_small_text_s_alphabet_and_thins_a_big_one(tmp_path, monkeypatch):
    (tmp_path / "t.txt").write_text("abc ж ж щ щ щ\n" * 10)
    small = txtutils.read_corpus([str(tmp_path / "t.txt")], [], min_count="auto")
    assert small.min_count == 2 and small.alphabet.chars.endswith("жщ")
    monkeypatch.setattr(txtutils, "AUTO_CHARS_PER_COUNT", 5)  # as if the text were huge
    big = txtutils.read_corpus([str(tmp_path / "t.txt")], [], min_count="auto")
    assert big.min_count == 140 // 5 and big.alphabet.chars.endswith("щ")  # 30 of them
    assert big.unknown[0] == pytest.approx(20 / 140)  # the ж


def test_a_grown_alphabet_keeps_the_codes_it_had():
    parent = grown("жжщщ")
    child = parent.grown(*count_chars("ääжж"))
    assert child.chars == parent.chars + "ä"
    assert child.encode("жщä").tolist() == [*parent.encode("жщ").tolist(), parent.size]


def test_u_fffd_and_bytes_that_are_not_utf8_never_join_the_alphabet():
    text = "\ufffd\ufffd\udcff\udcff ok"
    assert grown(text) == txtutils.DEFAULT
    assert grown(text).encode(text).tolist()[:4] == [txtutils.UNKNOWN] * 4


def test_the_alphabet_comes_from_the_training_text_only(tmp_path):
    files_of(tmp_path, {"a.txt": "жжж ччч", "b.txt": "ююю жжж"})
    corpus = txtutils.read_corpus([str(tmp_path)], [str(tmp_path / "b.txt")])
    assert corpus.alphabet.chars[98:] == "жч"
    assert corpus.alphabet.decode(corpus.valid) == "\ufffd" * 3 + " жжж"
    assert corpus.unknown == (0.0, 3 / 7)


def test_bytes_that_are_not_utf8_are_counted_per_file(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("café, naïve, été".encode("latin-1"))
    (tmp_path / "utf8.txt").write_bytes("café".encode())
    corpus = txtutils.read_corpus([str(tmp_path)], [])
    assert corpus.not_utf8 == {str(tmp_path / "latin1.txt"): 4}
    assert corpus.alphabet.decode(corpus.train).startswith("caf\ufffd, na\ufffdve")


def fingerprint_of(folder, validation=None):
    return txtutils.read_corpus([str(folder)], validation).fingerprint


def test_a_fingerprint_names_what_changed_in_the_text(tmp_path):
    files_of(tmp_path / "a", {"1.txt": "one", "2.txt": "two", "3.txt": "three"})
    before = fingerprint_of(tmp_path / "a", [])
    assert [size for _, size, _ in before["train"]] == [3, 3, 5]
    assert txtutils.changes(before, fingerprint_of(tmp_path / "a", [])) is None
    write(tmp_path / "a" / "2.txt", "TWO")
    assert txtutils.changes(before, fingerprint_of(tmp_path / "a", [])) == (
        "training files edited: 2.txt"
    )
    write(tmp_path / "a" / "4.txt", "four")
    (tmp_path / "a" / "1.txt").unlink()
    assert txtutils.changes(before, fingerprint_of(tmp_path / "a", [])) == (
        "training files added: 4.txt; training files removed: 1.txt; training files edited: 2.txt"
    )
    held_out = fingerprint_of(tmp_path / "a", [str(tmp_path / "a" / "4.txt")])
    assert txtutils.changes(before, held_out) == (
        "training files removed: 1.txt; training files edited: 2.txt; validation files added: 4.txt"
    )


def test_the_same_files_in_another_directory_are_the_same_text(tmp_path):
    texts = {"1.txt": "one", "2.txt": "two"}
    files_of(tmp_path / "a", texts)
    files_of(tmp_path / "b", texts)
    before = fingerprint_of(tmp_path / "a", [])
    assert txtutils.changes(before, fingerprint_of(tmp_path / "b", [])) is None
    write(tmp_path / "b" / "2.txt", "TWO")
    assert txtutils.changes(before, fingerprint_of(tmp_path / "b", [])) == (
        f"read from {tmp_path / 'b'} (was {tmp_path / 'a'}); training files edited: 2.txt"
    )


def test_a_moved_folder_names_each_file_by_its_place_in_it(tmp_path):
    files_of(tmp_path / "a", {"1.txt": "one", "sub/2.txt": "two", "sub/3.txt": "three"})
    files_of(tmp_path / "b", {"1.txt": "ONE", "sub/2.txt": "two", "sub/4.txt": "four"})
    before = fingerprint_of(tmp_path / "a", [])
    assert txtutils.changes(before, fingerprint_of(tmp_path / "b", [])) == (
        f"read from {tmp_path / 'b'} (was {tmp_path / 'a'}); training files added: sub/4.txt; "
        "training files removed: sub/3.txt; training files edited: 1.txt"
    )


def test_a_file_moved_inside_the_text_is_known_by_its_name(tmp_path):
    """Here the folder the text is read inside moves too (a to b/x), as y empties."""
    files_of(tmp_path / "a", {"x/1.txt": "one", "y/2.txt": "two"})
    before = fingerprint_of(tmp_path / "a", [])
    write(tmp_path / "b" / "x" / "1.txt", "ONE")
    assert txtutils.changes(before, fingerprint_of(tmp_path / "b", [])) == (
        f"read from {tmp_path / 'b' / 'x'} (was {tmp_path / 'a'}); "
        "training files removed: y/2.txt; training files edited: x/1.txt"
    )


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def files_of(tmp_path, contents):
    """One file per name -> text, written in the given order."""
    return [write(tmp_path / name, text) for name, text in contents.items()]


def names(paths):
    return [p.rsplit("/", 1)[-1] for p in paths]


def test_files_are_read_sorted_whatever_order_they_were_made_in(tmp_path):
    contents = {"b.txt": "B" * 10, "c.txt": "C" * 10, "a.txt": "A" * 10}
    results = []
    for folder, order in [
        ("one", ["c.txt", "a.txt", "b.txt"]),
        ("two", ["a.txt", "b.txt", "c.txt"]),
    ]:
        for name in order:
            write(tmp_path / folder / name, contents[name])
        results.append(txtutils.read_corpus([str(tmp_path / folder / "*.txt")], []))
    for train, _, train_files, *_ in results:
        assert names(train_files) == ["a.txt", "b.txt", "c.txt"]
        assert decode(train) == "A" * 10 + "B" * 10 + "C" * 10


def make_tree(root):
    write(root / "a.txt", "a")
    write(root / "sub" / "b.txt", "b")
    write(root / "sub" / "deeper" / "c.txt", "c")
    write(root / ".hidden.txt", "H")
    write(root / ".git" / "d.txt", "G")
    write(root / "sub" / ".e.txt", "E")


def test_a_directory_is_read_recursively_skipping_hidden_files_and_folders(tmp_path):
    make_tree(tmp_path / "corpus")
    train, valid, train_files, valid_files, *_ = txtutils.read_corpus(
        [str(tmp_path / "corpus")], []
    )
    assert train_files == sorted(
        str(tmp_path / "corpus" / p) for p in ["a.txt", "sub/b.txt", "sub/deeper/c.txt"]
    )
    assert decode(train) == "abc"
    assert len(valid) == 0 and valid_files == []


def test_a_recursive_glob_is_accepted_and_overlapping_patterns_read_a_file_once(tmp_path):
    root = tmp_path / "corpus"
    make_tree(root)
    by_glob = txtutils.read_corpus([str(root / "**" / "*.txt")], [])
    overlapping = txtutils.read_corpus(
        [str(root / "**" / "*.txt"), str(root), str(root / "a.txt")], []
    )
    for train, _, train_files, *_ in [by_glob, overlapping]:
        assert names(train_files) == ["a.txt", "b.txt", "c.txt"]
        assert decode(train) == "abc"


@contextlib.contextmanager
def at_most(seconds):
    """Fail the test, not hang it, if the block takes longer than seconds: opening a
    FIFO for reading waits for a writer forever."""

    def give_up(signum, frame):
        pytest.fail(f"still reading after {seconds} s", pytrace=False)

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_folder_walk_or_a_glob_skips_a_fifo(tmp_path):
    write(tmp_path / "a.txt", "text")
    os.mkfifo(tmp_path / "pipe")
    for pattern in [tmp_path, tmp_path / "*"]:
        with at_most(10):
            corpus = txtutils.read_corpus([str(pattern)], [])
        assert corpus.train_files == [str(tmp_path / "a.txt")]
        assert decode(corpus.train) == "text"


def test_a_folder_walk_skips_a_dangling_link_and_follows_a_good_one(tmp_path):
    write(tmp_path / "elsewhere" / "b.txt", "bee")
    write(tmp_path / "corpus" / "a.txt", "a")
    (tmp_path / "corpus" / "b.txt").symlink_to(tmp_path / "elsewhere" / "b.txt")
    (tmp_path / "corpus" / "c.txt").symlink_to(tmp_path / "gone.txt")
    corpus = txtutils.read_corpus([str(tmp_path / "corpus")], [])
    assert names(corpus.train_files) == ["a.txt", "b.txt"]
    assert decode(corpus.train) == "abee"


def test_a_fifo_or_a_dangling_link_named_as_it_is_is_a_corpus_error(tmp_path):
    write(tmp_path / "a.txt", "text")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "link.txt").symlink_to(tmp_path / "gone.txt")
    with at_most(10), pytest.raises(CorpusError, match="pipe is a FIFO, not a text file"):
        txtutils.read_corpus([str(tmp_path / "a.txt"), str(tmp_path / "pipe")], [])
    with pytest.raises(CorpusError, match=r"link.txt is a dangling link \(to .*gone.txt\)"):
        txtutils.read_corpus([str(tmp_path / "a.txt")], [str(tmp_path / "link.txt")])


@pytest.mark.parametrize(
    "sizes, expected",
    [
        ([], 0),
        ([100] * 4, 0),  # 4 equal files or fewer: no validation (one is over a fifth)
        ([10] * 3 + [10**6], 0),
        ([100] * 5, 1),  # exactly a fifth of the text is not over it
        ([100] * 20, 3),  # 2 files hold exactly 10%, not more: 3
        ([100] * 18 + [400], 1),  # the last file alone holds over 10% (18%), under a fifth
        ([100] * 19 + [1000], 0),  # the last file holds over a fifth (34%): none
        ([100] * 9 + [9000], 0),  # a huge last file (90% of the text) is never held out
        ([1000] * 3 + [400], 1),  # 4 files, the last 11.8% of the text: held out
        ([60_000] * 30, 2),  # 10% needs 4 files, but 2 exceed 90 KB
        ([100_000] * 50, 1),  # one file exceeds 90 KB
        ([90 * 1024] * 30, 2),  # 90 KB exactly is not over 90 KB
        ([10**6] + [10] * 9, 0),  # 10% needs all 10 files: over a fifth, none
    ],
)
def test_default_validation_count(sizes, expected):
    assert txtutils.default_validation_count(sizes) == expected


def test_by_default_the_last_sorted_files_are_held_out_for_validation(tmp_path):
    letters = "ABCDEFGHIJ"
    texts = {f"{i:02d}.txt": letters[i] * 100 for i in range(10)}
    files_of(tmp_path, dict(reversed(list(texts.items()))))
    train, valid, train_files, valid_files, *_ = txtutils.read_corpus([str(tmp_path)])
    assert txtutils.default_validation_count([100] * 10) == 2
    assert names(train_files) == [f"{i:02d}.txt" for i in range(8)]
    assert names(valid_files) == ["08.txt", "09.txt"]
    assert decode(train) == "".join(letters[i] * 100 for i in range(8))
    assert decode(valid) == "I" * 100 + "J" * 100


def test_by_default_4_files_give_no_validation(tmp_path):
    files_of(tmp_path, {f"{c}.txt": c * 1000 for c in "abcd"})
    train, valid, train_files, valid_files, *_ = txtutils.read_corpus([str(tmp_path)])
    assert len(train_files) == 4 and valid_files == []
    assert len(train) == 4000
    assert len(valid) == 0 and valid.dtype == np.uint8


def test_the_default_split_counts_characters_not_bytes(tmp_path):
    """The last file has 60 characters in 120 bytes: in bytes it alone would hold over
    10% of the text (120 > 102); in characters (60 <= 96) it takes two files."""
    files_of(tmp_path, {**{f"{i}.txt": "a" * 100 for i in range(9)}, "9.txt": "é" * 60})
    _, valid, _, valid_files, *_ = txtutils.read_corpus([str(tmp_path)])
    assert names(valid_files) == ["8.txt", "9.txt"]
    assert len(valid) == 160


def test_explicit_validation_files_are_never_trained_on(tmp_path):
    files_of(tmp_path, {f"{c}.txt": c * 50 for c in "abcdef"})
    train, valid, train_files, valid_files, *_ = txtutils.read_corpus(
        [str(tmp_path / "*.txt"), str(tmp_path / "c.txt")], [str(tmp_path / "[ce].txt")]
    )
    assert names(valid_files) == ["c.txt", "e.txt"]
    assert names(train_files) == ["a.txt", "b.txt", "d.txt", "f.txt"]
    assert set(decode(train)) == set("abdf")
    assert decode(valid) == "c" * 50 + "e" * 50


def test_a_relative_validation_path_is_held_out_from_absolute_data_paths(tmp_path, monkeypatch):
    files_of(tmp_path, {"a.txt": "aaa", "b.txt": "bbb"})
    monkeypatch.chdir(tmp_path)
    train, valid, _, valid_files, *_ = txtutils.read_corpus([str(tmp_path)], ["./b.txt"])
    assert decode(train) == "aaa"
    assert decode(valid) == "bbb"
    assert valid_files == [str(tmp_path / "b.txt")]


def test_validation_files_outside_the_data_are_read_too(tmp_path):
    files_of(tmp_path / "data", {"a.txt": "aaa", "b.txt": "bbb"})
    write(tmp_path / "held" / "v.txt", "vvvv")
    train, valid, _, valid_files, *_ = txtutils.read_corpus(
        [str(tmp_path / "data")], [str(tmp_path / "held" / "v.txt")]
    )
    assert decode(train) == "aaabbb"
    assert decode(valid) == "vvvv"
    assert valid_files == [str(tmp_path / "held" / "v.txt")]


def test_an_empty_validation_list_means_no_validation(tmp_path):
    files_of(tmp_path, {f"{i:02d}.txt": "x" * 100 for i in range(10)})
    train, valid, train_files, valid_files, *_ = txtutils.read_corpus([str(tmp_path)], [])
    assert len(train_files) == 10 and len(train) == 1000
    assert valid_files == [] and len(valid) == 0


def test_reading_twice_gives_the_same_split(tmp_path):
    rng = np.random.default_rng(1)
    files_of(
        tmp_path, {f"{i}.txt": "".join(rng.choice(list(PRINTABLE), 200 + 37 * i)) for i in range(7)}
    )
    first = txtutils.read_corpus([str(tmp_path)])
    second = txtutils.read_corpus([str(tmp_path)])
    assert first[2] == second[2] and first[3] == second[3]
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert len(first[1]) > 0  # the check covers a real split


def test_files_with_crlf_or_invalid_utf8_are_read(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"one\r\ntwo\xff!")
    train, *_ = txtutils.read_corpus([str(tmp_path)], [])
    assert decode(train) == "one\ntwo\ufffd!"


def test_a_pattern_that_matches_nothing_is_a_corpus_error(tmp_path):
    with pytest.raises(CorpusError, match="matches no file"):
        txtutils.read_corpus([str(tmp_path / "nothing-*.txt")])
    (tmp_path / "empty-folder").mkdir()
    with pytest.raises(CorpusError, match="matches no file"):
        txtutils.read_corpus([str(tmp_path / "empty-folder")])


def test_a_binary_file_is_a_corpus_error_naming_it(tmp_path):
    write(tmp_path / "a.txt", "text")
    (tmp_path / "b.bin").write_bytes(b"PK\x03\x04\x00\x00")
    with pytest.raises(CorpusError, match="b.bin is not a text file"):
        txtutils.read_corpus([str(tmp_path)])


def test_empty_files_are_a_corpus_error(tmp_path):
    files_of(tmp_path, {"a.txt": "", "b.txt": ""})
    with pytest.raises(CorpusError, match="holds no text"):
        txtutils.read_corpus([str(tmp_path)])


@pytest.mark.parametrize("contents", [{"a.txt": "aaa"}, {"a.txt": "aaa", "b.txt": ""}])
def test_validation_taking_all_the_training_text_is_a_corpus_error(tmp_path, contents):
    files_of(tmp_path, contents)
    with pytest.raises(CorpusError, match="take all of the training text"):
        txtutils.read_corpus([str(tmp_path)], [str(tmp_path / "a.txt")])


def test_a_validation_pattern_that_matches_nothing_is_a_corpus_error(tmp_path):
    files_of(tmp_path, {"a.txt": "aaa", "b.txt": "bbb"})
    with pytest.raises(CorpusError, match="--validation .* matches no file"):
        txtutils.read_corpus([str(tmp_path)], [str(tmp_path / "missing.txt")])
