"""charrnn/corpus.py: finding a corpus's files, the split into training and
validation text, the alphabet grown from the training text, the fingerprint a
resume checks. (The cache itself: textcache_test.py.)"""

import contextlib
import os
import signal
import tracemalloc

import numpy as np
import pytest

import charrnn.corpus
from txtutils import CorpusError
from txtutils_test import PRINTABLE, decode


@pytest.mark.parametrize(
    "chars, count", [(0, 2), (2_999_999, 2), (3_000_000, 3), (110_000_000, 110), (10**10, 10**4)]
)
def test_the_automatic_min_count_is_one_in_a_million_and_at_least_2(chars, count):
    assert charrnn.corpus.min_count_for(chars) == count


def test_min_count_auto_keeps_a_small_text_s_alphabet_and_thins_a_big_one(tmp_path, monkeypatch):
    (tmp_path / "t.txt").write_text("abc ж ж щ щ щ\n" * 10)
    small = charrnn.corpus.read_corpus([str(tmp_path / "t.txt")], [], min_count="auto")
    assert small.min_count == 2 and small.alphabet.chars.endswith("жщ")
    monkeypatch.setattr(charrnn.corpus, "AUTO_CHARS_PER_COUNT", 5)  # as if the text were huge
    big = charrnn.corpus.read_corpus([str(tmp_path / "t.txt")], [], min_count="auto")
    assert big.min_count == 140 // 5 and big.alphabet.chars.endswith("щ")  # 30 of them
    assert big.unknown[0] == pytest.approx(20 / 140)  # the ж


def test_the_alphabet_comes_from_the_training_text_only(tmp_path):
    files_of(tmp_path, {"a.txt": "жжж ччч", "b.txt": "ююю жжж"})
    corpus = charrnn.corpus.read_corpus([str(tmp_path)], [str(tmp_path / "b.txt")])
    assert corpus.alphabet.chars[98:] == "жч"
    assert corpus.alphabet.decode(corpus.valid) == "\ufffd" * 3 + " жжж"
    assert corpus.unknown == (0.0, 3 / 7)


def test_bytes_that_are_not_utf8_are_counted_per_file(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("café, naïve, été".encode("latin-1"))
    (tmp_path / "utf8.txt").write_bytes("café".encode())
    corpus = charrnn.corpus.read_corpus([str(tmp_path)], [])
    assert corpus.not_utf8 == {str(tmp_path / "latin1.txt"): 4}
    assert corpus.alphabet.decode(corpus.train).startswith("caf\ufffd, na\ufffdve")


def fingerprint_of(folder, validation=None):
    return charrnn.corpus.read_corpus([str(folder)], validation).fingerprint


def test_a_fingerprint_names_what_changed_in_the_text(tmp_path):
    files_of(tmp_path / "a", {"1.txt": "one", "2.txt": "two", "3.txt": "three"})
    before = fingerprint_of(tmp_path / "a", [])
    assert [size for _, size, _ in before["train"]] == [3, 3, 5]
    assert charrnn.corpus.changes(before, fingerprint_of(tmp_path / "a", [])) is None
    write(tmp_path / "a" / "2.txt", "TWO")
    assert charrnn.corpus.changes(before, fingerprint_of(tmp_path / "a", [])) == (
        "training files edited: 2.txt"
    )
    write(tmp_path / "a" / "4.txt", "four")
    (tmp_path / "a" / "1.txt").unlink()
    assert charrnn.corpus.changes(before, fingerprint_of(tmp_path / "a", [])) == (
        "training files added: 4.txt; training files removed: 1.txt; training files edited: 2.txt"
    )
    held_out = fingerprint_of(tmp_path / "a", [str(tmp_path / "a" / "4.txt")])
    assert charrnn.corpus.changes(before, held_out) == (
        "training files removed: 1.txt; training files edited: 2.txt; validation files added: 4.txt"
    )


def test_the_same_files_in_another_directory_are_the_same_text(tmp_path):
    texts = {"1.txt": "one", "2.txt": "two"}
    files_of(tmp_path / "a", texts)
    files_of(tmp_path / "b", texts)
    before = fingerprint_of(tmp_path / "a", [])
    assert charrnn.corpus.changes(before, fingerprint_of(tmp_path / "b", [])) is None
    write(tmp_path / "b" / "2.txt", "TWO")
    assert charrnn.corpus.changes(before, fingerprint_of(tmp_path / "b", [])) == (
        f"read from {tmp_path / 'b'} (was {tmp_path / 'a'}); training files edited: 2.txt"
    )


def test_a_moved_folder_names_each_file_by_its_place_in_it(tmp_path):
    files_of(tmp_path / "a", {"1.txt": "one", "sub/2.txt": "two", "sub/3.txt": "three"})
    files_of(tmp_path / "b", {"1.txt": "ONE", "sub/2.txt": "two", "sub/4.txt": "four"})
    before = fingerprint_of(tmp_path / "a", [])
    assert charrnn.corpus.changes(before, fingerprint_of(tmp_path / "b", [])) == (
        f"read from {tmp_path / 'b'} (was {tmp_path / 'a'}); training files added: sub/4.txt; "
        "training files removed: sub/3.txt; training files edited: 1.txt"
    )


def test_a_file_moved_inside_the_text_is_known_by_its_name(tmp_path):
    """Here the folder the text is read inside moves too (a to b/x), as y empties."""
    files_of(tmp_path / "a", {"x/1.txt": "one", "y/2.txt": "two"})
    before = fingerprint_of(tmp_path / "a", [])
    write(tmp_path / "b" / "x" / "1.txt", "ONE")
    assert charrnn.corpus.changes(before, fingerprint_of(tmp_path / "b", [])) == (
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
        results.append(charrnn.corpus.read_corpus([str(tmp_path / folder / "*.txt")], []))
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
    train, valid, train_files, valid_files, *_ = charrnn.corpus.read_corpus(
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
    by_glob = charrnn.corpus.read_corpus([str(root / "**" / "*.txt")], [])
    overlapping = charrnn.corpus.read_corpus(
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
            corpus = charrnn.corpus.read_corpus([str(pattern)], [])
        assert corpus.train_files == [str(tmp_path / "a.txt")]
        assert decode(corpus.train) == "text"


def test_a_folder_walk_skips_a_dangling_link_and_follows_a_good_one(tmp_path):
    write(tmp_path / "elsewhere" / "b.txt", "bee")
    write(tmp_path / "corpus" / "a.txt", "a")
    (tmp_path / "corpus" / "b.txt").symlink_to(tmp_path / "elsewhere" / "b.txt")
    (tmp_path / "corpus" / "c.txt").symlink_to(tmp_path / "gone.txt")
    corpus = charrnn.corpus.read_corpus([str(tmp_path / "corpus")], [])
    assert names(corpus.train_files) == ["a.txt", "b.txt"]
    assert decode(corpus.train) == "abee"


def test_a_fifo_or_a_dangling_link_named_as_it_is_is_a_corpus_error(tmp_path):
    write(tmp_path / "a.txt", "text")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "link.txt").symlink_to(tmp_path / "gone.txt")
    with at_most(10), pytest.raises(CorpusError, match="pipe is a FIFO, not a text file"):
        charrnn.corpus.read_corpus([str(tmp_path / "a.txt"), str(tmp_path / "pipe")], [])
    with pytest.raises(CorpusError, match=r"link.txt is a dangling link \(to .*gone.txt\)"):
        charrnn.corpus.read_corpus([str(tmp_path / "a.txt")], [str(tmp_path / "link.txt")])


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
    assert charrnn.corpus.default_validation_count(sizes) == expected


def test_by_default_the_last_sorted_files_are_held_out_for_validation(tmp_path):
    letters = "ABCDEFGHIJ"
    texts = {f"{i:02d}.txt": letters[i] * 100 for i in range(10)}
    files_of(tmp_path, dict(reversed(list(texts.items()))))
    train, valid, train_files, valid_files, *_ = charrnn.corpus.read_corpus([str(tmp_path)])
    assert charrnn.corpus.default_validation_count([100] * 10) == 2
    assert names(train_files) == [f"{i:02d}.txt" for i in range(8)]
    assert names(valid_files) == ["08.txt", "09.txt"]
    assert decode(train) == "".join(letters[i] * 100 for i in range(8))
    assert decode(valid) == "I" * 100 + "J" * 100


def test_by_default_4_files_give_no_validation(tmp_path):
    files_of(tmp_path, {f"{c}.txt": c * 1000 for c in "abcd"})
    train, valid, train_files, valid_files, *_ = charrnn.corpus.read_corpus([str(tmp_path)])
    assert len(train_files) == 4 and valid_files == []
    assert len(train) == 4000
    assert len(valid) == 0 and valid.dtype == np.uint8


def test_the_default_split_counts_characters_not_bytes(tmp_path):
    """The last file has 60 characters in 120 bytes: in bytes it alone would hold over
    10% of the text (120 > 102); in characters (60 <= 96) it takes two files."""
    files_of(tmp_path, {**{f"{i}.txt": "a" * 100 for i in range(9)}, "9.txt": "é" * 60})
    _, valid, _, valid_files, *_ = charrnn.corpus.read_corpus([str(tmp_path)])
    assert names(valid_files) == ["8.txt", "9.txt"]
    assert len(valid) == 160


def test_explicit_validation_files_are_never_trained_on(tmp_path):
    files_of(tmp_path, {f"{c}.txt": c * 50 for c in "abcdef"})
    train, valid, train_files, valid_files, *_ = charrnn.corpus.read_corpus(
        [str(tmp_path / "*.txt"), str(tmp_path / "c.txt")], [str(tmp_path / "[ce].txt")]
    )
    assert names(valid_files) == ["c.txt", "e.txt"]
    assert names(train_files) == ["a.txt", "b.txt", "d.txt", "f.txt"]
    assert set(decode(train)) == set("abdf")
    assert decode(valid) == "c" * 50 + "e" * 50


def test_a_relative_validation_path_is_held_out_from_absolute_data_paths(tmp_path, monkeypatch):
    files_of(tmp_path, {"a.txt": "aaa", "b.txt": "bbb"})
    monkeypatch.chdir(tmp_path)
    train, valid, _, valid_files, *_ = charrnn.corpus.read_corpus([str(tmp_path)], ["./b.txt"])
    assert decode(train) == "aaa"
    assert decode(valid) == "bbb"
    assert valid_files == [str(tmp_path / "b.txt")]


def test_a_validation_file_reached_by_another_path_is_held_out(tmp_path, monkeypatch):
    """cd alias/corpus (alias -> real), then --data "$PWD" --validation valid.txt: --data
    goes through the link, the relative path through the real folder (the working
    directory as the kernel knows it). Files are compared by what they are."""
    files_of(tmp_path / "real" / "corpus", {"a.txt": "aaa", "b.txt": "bbb", "valid.txt": "vvv"})
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path / "alias" / "corpus")
    alias = str(tmp_path / "alias" / "corpus")
    train, valid, train_files, valid_files, *_ = charrnn.corpus.read_corpus([alias], ["valid.txt"])
    assert names(train_files) == ["a.txt", "b.txt"] and decode(train) == "aaabbb"
    assert valid_files == [os.path.join(alias, "valid.txt")] and decode(valid) == "vvv"


def test_a_recursive_glob_does_not_follow_links_to_folders(tmp_path):
    """Python's glob follows links to folders under **: a link to a sibling read every
    file twice, a link to its own folder read one 81 times, and two such links hung."""
    files_of(tmp_path / "c", {"top.txt": "t", "v2/a.txt": "a", "v2/sub/b.txt": "b"})
    (tmp_path / "outside.txt").write_text("o")
    (tmp_path / "c" / "latest").symlink_to("v2")
    (tmp_path / "c" / "self").symlink_to(".")
    (tmp_path / "c" / "up").symlink_to("..")
    (tmp_path / "c" / "o.txt").symlink_to(tmp_path / "outside.txt")  # a file link is read
    with at_most(20):
        for pattern in ["c/**/*.txt", "c/**"]:
            files = charrnn.corpus.find_files([str(tmp_path / pattern)])
            expected = ["c/o.txt", "c/top.txt", "c/v2/a.txt", "c/v2/sub/b.txt"]
            assert files == [str(tmp_path / p) for p in expected]
        # the same as a walk of the folder
        assert charrnn.corpus.find_files([str(tmp_path / "c")]) == files


def test_validation_files_outside_the_data_are_read_too(tmp_path):
    files_of(tmp_path / "data", {"a.txt": "aaa", "b.txt": "bbb"})
    write(tmp_path / "held" / "v.txt", "vvvv")
    train, valid, _, valid_files, *_ = charrnn.corpus.read_corpus(
        [str(tmp_path / "data")], [str(tmp_path / "held" / "v.txt")]
    )
    assert decode(train) == "aaabbb"
    assert decode(valid) == "vvvv"
    assert valid_files == [str(tmp_path / "held" / "v.txt")]


def test_an_empty_validation_list_means_no_validation(tmp_path):
    files_of(tmp_path, {f"{i:02d}.txt": "x" * 100 for i in range(10)})
    train, valid, train_files, valid_files, *_ = charrnn.corpus.read_corpus([str(tmp_path)], [])
    assert len(train_files) == 10 and len(train) == 1000
    assert valid_files == [] and len(valid) == 0


def test_reading_twice_gives_the_same_split(tmp_path):
    rng = np.random.default_rng(1)
    files_of(
        tmp_path, {f"{i}.txt": "".join(rng.choice(list(PRINTABLE), 200 + 37 * i)) for i in range(7)}
    )
    first = charrnn.corpus.read_corpus([str(tmp_path)])
    second = charrnn.corpus.read_corpus([str(tmp_path)])
    assert first[2] == second[2] and first[3] == second[3]
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert len(first[1]) > 0  # the check covers a real split


def test_files_with_crlf_or_invalid_utf8_are_read(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"one\r\ntwo\xff!")
    train, *_ = charrnn.corpus.read_corpus([str(tmp_path)], [])
    assert decode(train) == "one\ntwo\ufffd!"


def test_a_pattern_that_matches_nothing_is_a_corpus_error(tmp_path):
    with pytest.raises(CorpusError, match="matches no file"):
        charrnn.corpus.read_corpus([str(tmp_path / "nothing-*.txt")])
    (tmp_path / "empty-folder").mkdir()
    with pytest.raises(CorpusError, match="matches no file: check the path"):
        charrnn.corpus.read_corpus([str(tmp_path / "empty-folder")])


def test_the_default_text_not_yet_fetched_is_an_error_that_says_how_to_fetch_it(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # no shakespeare/ here
    with pytest.raises(CorpusError, match="matches no file: `make corpus` fetches Shakespeare"):
        charrnn.corpus.read_corpus(["shakespeare/*.txt"])


def test_a_binary_file_is_a_corpus_error_naming_it(tmp_path):
    write(tmp_path / "a.txt", "text")
    (tmp_path / "b.bin").write_bytes(b"PK\x03\x04\x00\x00")
    with pytest.raises(CorpusError, match="b.bin is not a text file"):
        charrnn.corpus.read_corpus([str(tmp_path)])


def test_empty_files_are_a_corpus_error(tmp_path):
    files_of(tmp_path, {"a.txt": "", "b.txt": ""})
    with pytest.raises(CorpusError, match="holds no text"):
        charrnn.corpus.read_corpus([str(tmp_path)])


@pytest.mark.parametrize("contents", [{"a.txt": "aaa"}, {"a.txt": "aaa", "b.txt": ""}])
def test_validation_taking_all_the_training_text_is_a_corpus_error(tmp_path, contents):
    files_of(tmp_path, contents)
    with pytest.raises(CorpusError, match="take all of the training text"):
        charrnn.corpus.read_corpus([str(tmp_path)], [str(tmp_path / "a.txt")])


def test_a_validation_pattern_that_matches_nothing_is_a_corpus_error(tmp_path):
    files_of(tmp_path, {"a.txt": "aaa", "b.txt": "bbb"})
    with pytest.raises(CorpusError, match="--validation .* matches no file"):
        charrnn.corpus.read_corpus([str(tmp_path)], [str(tmp_path / "missing-*.txt")])


def test_a_name_typed_wrong_is_refused_not_skipped(tmp_path):
    """A path without wildcards that is not there is a mistake, even beside files that
    are: glob drops it, and the run would train on less text than asked, unsaid."""
    files_of(tmp_path, {"a.txt": "aaa", "b.txt": "bbb"})
    a, typo = str(tmp_path / "a.txt"), str(tmp_path / "b.txtt")
    with pytest.raises(CorpusError, match=f"^--data names {typo}, which does not exist"):
        charrnn.corpus.check_named([a, typo], None)
    with pytest.raises(CorpusError, match=f"^--validation names {typo}, which does not exist"):
        charrnn.corpus.check_named([a], [str(tmp_path / "b.txt"), typo])
    # a glob that matches nothing beside one that matches is dropped, as a shell would
    glob_too = [a, str(tmp_path / "c*.txt")]
    charrnn.corpus.check_named(glob_too, [])
    train, *_ = charrnn.corpus.read_corpus(glob_too, [])
    assert decode(train) == "aaa"


def test_the_memory_of_reading_grows_little_with_the_number_of_files(tmp_path):
    """Each file's character counts are summed as the files go, not held until the
    alphabet is made: 10,000 small source files peak at ~10 MB of Python objects here
    (their paths, fingerprints and sizes), where holding every file's counts took 30."""
    for i in range(10_000):
        folder = tmp_path / "src" / f"{i // 1000:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:05d}.py").write_text(f"def f{i}(x):\n    return x * {i}\n" * 3)
    tracemalloc.start()
    try:
        corpus = charrnn.corpus.read_corpus([str(tmp_path / "src")], None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(corpus.train_files) + len(corpus.valid_files) == 10_000
    assert peak < 16e6, f"{peak / 1e6:.1f} MB"
