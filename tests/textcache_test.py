"""textcache and charrnn.corpus.read_corpus's use of it: a text read in pieces, counted and
encoded once, found again by its files' contents, never trusted half-written.

No TensorFlow here: real files, real folders, a real killed process."""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

import charrnn.corpus
import txtutils
from charrnn import textcache
from charrnn.textcache import CacheError
from conftest import HERE
from txtutils_test import count_chars, text_of

# Pieces of a few bytes cut UTF-8 sequences, CRLFs and bytes that are not UTF-8 apart
TEXTS = {
    "a.txt": "Hello, world.\r\nSecond line\r\n" * 20 + "end with CR\r",
    "b.txt": "Привет, мир! ünïcödé ½ — 中文字符 🙂\r\n" * 15,
    "c.txt": "plain ascii\n" * 40,
}
RAW = {"d.txt": b"latin1 caf\xe9 and more\r\n" * 12 + b"\xff\xfe odd bytes\n"}


def write_text(folder, texts=TEXTS, raw=RAW):
    folder.mkdir(exist_ok=True)
    for name, text in texts.items():
        (folder / name).write_bytes(text.encode())
    for name, data in raw.items():
        (folder / name).write_bytes(data)
    return [str(folder / "*.txt")]


def encoded_whole(paths, alphabet):
    """What the codes must be: each file read whole and encoded, one after the other."""
    parts = [alphabet.encode(text_of(p)) for p in paths]
    return np.concatenate(parts) if parts else np.zeros(0, alphabet.dtype)


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 1 << 20])
def test_codes_counts_and_alphabet_are_those_of_each_file_read_whole(tmp_path, monkeypatch, piece):
    monkeypatch.setattr(charrnn.corpus, "PIECE", piece)
    data = write_text(tmp_path / "text")
    corpus = charrnn.corpus.read_corpus(data, [str(tmp_path / "text" / "d.txt")], cache_dir=None)
    whole = "".join(text_of(p) for p in corpus.train_files)
    assert corpus.alphabet == txtutils.DEFAULT.grown(*count_chars(whole))
    assert np.array_equal(corpus.train, encoded_whole(corpus.train_files, corpus.alphabet))
    assert np.array_equal(corpus.valid, encoded_whole(corpus.valid_files, corpus.alphabet))
    assert corpus.not_utf8 == {str(tmp_path / "text" / "d.txt"): 12 + 2}
    unknown = np.mean(encoded_whole(corpus.valid_files, corpus.alphabet) == txtutils.UNKNOWN)
    assert corpus.unknown[1] == pytest.approx(unknown)


def test_a_second_read_finds_the_codes_the_first_encoded(tmp_path):
    data, cache = write_text(tmp_path / "text"), str(tmp_path / "cache")
    first = charrnn.corpus.read_corpus(data, cache_dir=cache)
    second = charrnn.corpus.read_corpus(data, cache_dir=cache)
    assert (first.encoded, second.encoded) == (True, False)
    assert second.codes_folder == first.codes_folder
    assert os.path.dirname(first.codes_folder) == cache
    assert np.array_equal(first.train, second.train)
    assert np.array_equal(second.train, encoded_whole(second.train_files, second.alphabet))
    assert second.train.file.mode == "rb"  # a run cannot scribble on a shared text
    # the same bytes in another folder are the same text: nothing encoded again
    moved = write_text(tmp_path / "elsewhere")
    assert charrnn.corpus.read_corpus(moved, cache_dir=cache).encoded is False


def test_an_entry_whose_last_use_cannot_be_marked_is_still_found(tmp_path, monkeypatch):
    """A cache another user made (or on a read-only mount) can be read, but not touched:
    its entry is still the text's, not encoded again (where writing would then fail)."""
    data, cache = write_text(tmp_path / "text"), str(tmp_path / "cache")
    first = charrnn.corpus.read_corpus(data, cache_dir=cache)

    def refused(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "utime", refused)
    second = charrnn.corpus.read_corpus(data, cache_dir=cache)
    assert (first.encoded, second.encoded) == (True, False)
    assert np.array_equal(first.train, second.train)


def test_a_file_edited_to_the_same_size_and_time_is_a_new_text(tmp_path):
    data, cache = write_text(tmp_path / "text"), str(tmp_path / "cache")
    before = charrnn.corpus.read_corpus(data, [], cache_dir=cache)
    path = tmp_path / "text" / "c.txt"
    stat = path.stat()
    path.write_bytes(path.read_bytes().replace(b"plain", b"PLAIN", 1))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = charrnn.corpus.read_corpus(data, [], cache_dir=cache)
    assert after.encoded and after.codes_folder != before.codes_folder
    assert (
        charrnn.corpus.changes(before.fingerprint, after.fingerprint)
        == "training files edited: c.txt"
    )
    assert np.array_equal(after.train, encoded_whole(after.train_files, after.alphabet))


def test_another_alphabet_is_another_entry(tmp_path):
    data, cache = write_text(tmp_path / "text"), str(tmp_path / "cache")
    grown = charrnn.corpus.read_corpus(data, [], cache_dir=cache)
    talks = charrnn.corpus.read_corpus(data, [], min_count=None, cache_dir=cache)  # a resume's
    assert talks.encoded and talks.alphabet == txtutils.DEFAULT != grown.alphabet
    assert np.array_equal(talks.train, encoded_whole(talks.train_files, txtutils.DEFAULT))


class Interrupted(Exception):
    pass


def test_an_interrupted_encoding_leaves_nothing_a_later_read_trusts(tmp_path):
    data, cache = write_text(tmp_path / "text"), tmp_path / "cache"

    def stop_halfway(what, done, total):
        if what == "encoding" and done > total // 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        charrnn.corpus.read_corpus(data, [], cache_dir=str(cache), progress=stop_halfway)
    assert not [p for p in os.listdir(cache) if p.startswith("codes-")]
    assert not [p for p in os.listdir(cache) if p.startswith(".tmp")]
    corpus = charrnn.corpus.read_corpus(data, [], cache_dir=str(cache))
    assert corpus.encoded
    assert np.array_equal(corpus.train, encoded_whole(corpus.train_files, corpus.alphabet))


def test_a_kill_in_the_middle_of_encoding_leaves_only_what_the_next_read_removes(tmp_path):
    """kill -9 runs no clean-up: what it leaves is under a temporary name, which no
    read trusts, and the next read on this machine removes it (its process is dead)."""
    data, cache = write_text(tmp_path / "text"), tmp_path / "cache"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {HERE!r})
        import charrnn.corpus
        charrnn.corpus.PIECE = 5  # many pieces: the kill lands between two
        def die(what, done, total):
            if what == "encoding" and done > total // 2:
                os.kill(os.getpid(), signal.SIGKILL)
        charrnn.corpus.read_corpus({data!r}, [], cache_dir={str(cache)!r}, progress=die)
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    left = os.listdir(cache)
    assert [p for p in left if p.startswith(".tmp")] and not [p for p in left if "codes-" in p]
    corpus = charrnn.corpus.read_corpus(data, [], cache_dir=str(cache))
    assert corpus.encoded
    assert np.array_equal(corpus.train, encoded_whole(corpus.train_files, corpus.alphabet))
    assert not [p for p in os.listdir(cache) if p.startswith(".tmp")]


@pytest.mark.parametrize("damage", ["cut short", "done.json scribbled", "done.json removed"])
def test_a_damaged_entry_is_encoded_again(tmp_path, damage):
    data, cache = write_text(tmp_path / "text"), str(tmp_path / "cache")
    folder = charrnn.corpus.read_corpus(data, [], cache_dir=cache).codes_folder
    if damage == "cut short":
        with open(os.path.join(folder, "train.codes"), "r+b") as f:
            f.truncate(100)
    elif damage == "done.json scribbled":
        with open(os.path.join(folder, "done.json"), "w") as f:
            f.write('{"description": 1')
    else:
        os.remove(os.path.join(folder, "done.json"))
    corpus = charrnn.corpus.read_corpus(data, [], cache_dir=cache)
    assert corpus.encoded and corpus.codes_folder == folder
    assert np.array_equal(corpus.train, encoded_whole(corpus.train_files, corpus.alphabet))


def test_damaged_file_statistics_are_counted_again(tmp_path):
    data, cache = write_text(tmp_path / "text"), tmp_path / "cache"
    first = charrnn.corpus.read_corpus(data, [], cache_dir=str(cache))
    for name in os.listdir(cache / "files"):
        (cache / "files" / name).write_text('{"size": 3, "points": [65]')
    again = charrnn.corpus.read_corpus(data, [], cache_dir=str(cache))
    assert again.alphabet == first.alphabet and not again.encoded


def test_too_little_room_on_the_disk_is_one_clear_error_before_writing(tmp_path, monkeypatch):
    data, cache = write_text(tmp_path / "text"), tmp_path / "cache"
    monkeypatch.setattr(textcache.shutil, "disk_usage", lambda path: SimpleNamespace(free=0))
    with pytest.raises(CacheError, match=r"needs .* free: free some space, or pass --cache-dir"):
        charrnn.corpus.read_corpus(data, [], cache_dir=str(cache))
    assert not [p for p in os.listdir(cache) if "codes-" in p or p.startswith(".tmp")]


def test_a_cache_that_cannot_be_made_is_one_clear_error(tmp_path):
    data = write_text(tmp_path / "text")
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(
        CacheError, match="cannot write in .*: Not a directory; choose another --cache-dir"
    ):
        charrnn.corpus.read_corpus(data, [], cache_dir=str(tmp_path / "a-file" / "cache"))


def test_a_failed_write_removes_what_it_wrote(tmp_path, monkeypatch):
    """A disk that fills while the codes are written (an OSError from a write)."""
    data, cache = write_text(tmp_path / "text"), tmp_path / "cache"

    def full(what, done, total):
        if what == "encoding" and done > total // 2:
            raise OSError(28, "No space left on device")

    with pytest.raises(CacheError, match=r"No space left on device.*--cache-dir"):
        charrnn.corpus.read_corpus(data, [], cache_dir=str(cache), progress=full)
    assert not [p for p in os.listdir(cache) if "codes-" in p or p.startswith(".tmp")]


@pytest.mark.parametrize("named", [True, False])
def test_a_write_that_fails_when_the_files_are_closed_is_one_clear_error(tmp_path, named):
    """The codes of a small text wait in the file's buffer until it is flushed at the
    end, so a full disk (or quota) shows there: a real failing write (a file-size limit
    of the process), which once escaped as a traceback from a second flush and left the
    partial entry on the full disk."""
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("the codes of this text stay in a buffer\n" * 100)
    cache = str(tmp_path / "cache") if named else None
    script = textwrap.dedent(f"""
        import resource, signal, sys
        import charrnn.corpus, charrnn.textcache
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit: EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))
        try:
            charrnn.corpus.read_corpus([{str(tmp_path / "text")!r}], [], cache_dir={cache!r})
        except charrnn.textcache.CacheError as e:
            sys.exit("CacheError: " + str(e))
    """)
    failed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=HERE, TMPDIR=str(tmp_path)),
    )
    assert failed.returncode == 1, failed.stderr
    assert failed.stderr.startswith("CacheError: cannot write the encoded text"), failed.stderr
    assert "File too large" in failed.stderr and "Traceback" not in failed.stderr
    if named:
        assert not [p for p in os.listdir(cache) if "codes-" in p or p.startswith(".tmp")]


def test_progress_covers_each_pass_to_its_end(tmp_path, monkeypatch):
    monkeypatch.setattr(charrnn.corpus, "PIECE", 64)
    data, seen = write_text(tmp_path / "text"), {}
    charrnn.corpus.read_corpus(
        data, [], progress=lambda what, done, total: seen.setdefault(what, []).append((done, total))
    )
    assert list(seen) == ["fingerprinting", "counting", "encoding"]
    for calls in seen.values():
        assert len(calls) > 3 and calls[-1][0] == calls[-1][1]
        assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_rows_are_read_from_the_file_as_indexing_the_codes_would(tmp_path):
    data = write_text(tmp_path / "text")
    codes = charrnn.corpus.read_corpus(data, [], cache_dir=str(tmp_path / "cache")).train
    whole = np.asarray(codes)
    assert len(codes) == len(whole) > 1000 and whole.dtype == codes.dtype == np.uint8
    starts = np.array([0, 5, 999, len(whole) - 31])
    assert np.array_equal(codes.rows(starts, 31), whole[starts[:, None] + np.arange(31)])
    with pytest.raises(ValueError, match="beyond the end"):
        codes.rows([len(whole) - 30], 31)


def test_a_file_written_while_it_is_read_is_refused_and_nothing_it_made_is_kept(tmp_path):
    """Its fingerprint was taken before the write: codes or counts kept under it
    would hold some of the new text, and a later run would trust them."""
    data, cache = write_text(tmp_path / "text"), tmp_path / "cache"

    def append_halfway(what, done, total):
        if what == "encoding" and done > total // 2 and not appended:
            appended.append(True)
            with open(tmp_path / "text" / "c.txt", "a") as f:
                f.write("a line written meanwhile\n")

    appended = []

    with pytest.raises(txtutils.CorpusError, match=r"c.txt changed while it was read"):
        charrnn.corpus.read_corpus(data, [], cache_dir=str(cache), progress=append_halfway)
    assert not [p for p in os.listdir(cache) if "codes-" in p]
    assert len(os.listdir(cache / "files")) == len(TEXTS) + len(RAW) - 1  # not c.txt's
    corpus = charrnn.corpus.read_corpus(data, [], cache_dir=str(cache))
    assert np.array_equal(corpus.train, encoded_whole(corpus.train_files, corpus.alphabet))


class Killed(BaseException):
    """A kill -9 as far as the reading can tell: nothing after it runs."""


def test_counts_of_a_file_that_changed_while_counted_are_never_stored(tmp_path):
    """A file written between its fingerprint and its count: its counts, of the new
    text, would be stored under the old text's fingerprint, and a kill before the last
    check (here: at the first encoded piece) kept them for every later run."""
    data, cache = write_text(tmp_path / "text"), tmp_path / "cache"
    c_txt = tmp_path / "text" / "c.txt"
    old_sha = hashlib.sha256(c_txt.read_bytes()).hexdigest()

    def write_then_die(what, done, total):
        if what == "counting" and not written:
            written.append(True)
            with open(c_txt, "a") as f:
                f.write("a line written meanwhile\n")
        if what == "encoding":
            raise Killed

    written = []
    with contextlib.suppress(Killed, txtutils.CorpusError):
        charrnn.corpus.read_corpus(data, [], cache_dir=str(cache), progress=write_then_die)
    assert written
    assert not (cache / "files" / f"{old_sha}.json").exists()


def test_a_file_that_vanishes_while_it_is_read_leaves_nothing_it_made(tmp_path):
    data, cache = write_text(tmp_path / "text"), tmp_path / "cache"

    def remove_at_the_end(what, done, total):
        if what == "encoding" and done == total:
            (tmp_path / "text" / "c.txt").unlink(missing_ok=True)

    with pytest.raises(txtutils.CorpusError, match=r"c.txt changed while it was read"):
        charrnn.corpus.read_corpus(data, [], cache_dir=str(cache), progress=remove_at_the_end)
    assert not [p for p in os.listdir(cache) if "codes-" in p]


def test_counts_that_disagree_with_the_codes_are_forgotten_and_read_again(tmp_path):
    """Counts stored for a file's content that do not add up (written by a version that
    counted otherwise, or by hand): the codes' length gives them away."""
    data, cache = write_text(tmp_path / "text"), tmp_path / "cache"
    first = charrnn.corpus.read_corpus(data, [], cache_dir=str(cache))
    sha = hashlib.sha256((tmp_path / "text" / "c.txt").read_bytes()).hexdigest()
    stored = json.loads((cache / "files" / f"{sha}.json").read_text())
    stored["counts"] = [n + 1 for n in stored["counts"]]  # sensible, and wrong
    (cache / "files" / f"{sha}.json").write_text(json.dumps(stored))
    shutil.rmtree(first.codes_folder)  # so that the codes are encoded again
    again = charrnn.corpus.read_corpus(data, [], cache_dir=str(cache))
    assert again.alphabet == first.alphabet and again.fingerprint == first.fingerprint
    assert np.array_equal(again.train, encoded_whole(again.train_files, again.alphabet))
    assert json.loads((cache / "files" / f"{sha}.json").read_text())["counts"] != stored["counts"]


def test_the_cache_keeps_within_its_size_least_recently_used_out_never_one_in_use(tmp_path):
    """Each edit of a text is a new entry: past the limit the oldest unused go, not
    the one a run (here: a corpus still held) is reading, nor the newest."""
    cache = str(tmp_path / "cache")

    def read(n):  # a text of its own, an entry of ~12 KB
        folder = tmp_path / f"text{n}"
        folder.mkdir()
        (folder / "a.txt").write_text(f"version {n} of the text\n" * 500)
        return charrnn.corpus.read_corpus([str(folder)], [], cache_dir=cache, cache_limit=30_000)

    def kept():
        return sorted(e for e in os.listdir(cache) if e.startswith("codes-"))

    first = read(1)  # held: in use
    second_folder = read(2).codes_folder  # dropped at once: unused
    third = read(3)
    assert len(kept()) == 2 and os.path.basename(second_folder) not in kept()
    assert os.path.isdir(first.codes_folder) and os.path.isdir(third.codes_folder)
    assert np.asarray(first.train).size == 11_000  # still readable
    del first
    fourth = read(4)
    assert kept() == sorted(os.path.basename(c.codes_folder) for c in (third, fourth))
    # least recently used, not oldest: entry 3, read again (a hit), outlives entry 4
    third_entry = os.path.basename(third.codes_folder)
    del third, fourth
    again = charrnn.corpus.read_corpus(
        [str(tmp_path / "text3")], [], cache_dir=cache, cache_limit=30_000
    )
    assert os.path.basename(again.codes_folder) == third_entry
    del again
    fifth = read(5)
    assert kept() == sorted([third_entry, os.path.basename(fifth.codes_folder)])
