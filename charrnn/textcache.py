"""The text cache: what reading a training text found out, kept on disk so that a
text of any size is read, counted and encoded once, and each run after reads the
rows of its batches from the codes instead of reading the text again.

    CACHE/                          --cache-dir (default: CHECKPOINT_DIR/.text)
      files/SHA256.json             one per file content: its size and character counts
      codes-KEY/                    one per text and alphabet (KEY: the files' contents,
        train.codes  valid.codes    which are training and validation, the alphabet):
        done.json                   the codes, uint8 or uint16, files one after the other,
                                    and what they are; done.json is checked on reading

Entries are found by what they were made from (SHA-256s of the files' bytes), never
by path or date: an edited file is a new entry, the same bytes anywhere the same one.
The entries of codes are kept within a size (--cache-size): when a new one passes it,
the least recently used go first, but never one that a process has open (each holds
a shared flock on its done.json while it reads the codes).
Each is written under a temporary name and renamed into place complete, so a kill,
a full disk or two runs encoding the same text at once leave nothing half-written
that a later run would trust. Any entry may be deleted at any time: it is made again
when needed. Nothing here knows what a code means (txtutils does).
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import tempfile

import numpy as np

from charrnn import cli

VERSION = 1  # of the layout above: a new layout is a new key, never a misread old entry
_TMP = ".tmp-"  # prefix of what is being written: host-pid-random


class CacheError(Exception):
    """The cache cannot be written (full disk, no permission); the message says how to fix."""


def key_of(description):
    """A stable key for a JSON-able description of what an entry is made from."""
    text = json.dumps({"version": VERSION, **description}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Cache:
    """A cache folder (None: nothing is kept; codes go to unnamed temporary files that
    vanish with the process, for tests and one-off reads)."""

    def __init__(self, folder, limit=None):
        self.folder, self.limit = folder, limit  # limit: bytes of codes kept, None: any
        if folder and os.path.isdir(folder):
            _remove_dead_temporaries(folder)

    # -- file statistics: small JSON, one per file content

    def file_stats(self, sha256):
        """The stats stored for a file's content, or None."""
        if not self.folder:
            return None
        try:
            with open(os.path.join(self.folder, "files", sha256 + ".json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None  # absent, unreadable or damaged: counted again

    def has_file_stats(self, sha256):
        """Whether stats are stored for a file's content (they may still be damaged)."""
        return bool(self.folder) and os.path.exists(
            os.path.join(self.folder, "files", sha256 + ".json")
        )

    def put_file_stats(self, sha256, stats):
        """Store a file's stats; a cache that cannot be written only costs a recount."""
        if not self.folder:
            return
        folder = os.path.join(self.folder, "files")
        with contextlib.suppress(OSError):
            os.makedirs(folder, exist_ok=True)
            tmp = os.path.join(folder, _temporary_name())
            try:
                with open(tmp, "w") as f:
                    json.dump(stats, f)
                os.replace(tmp, os.path.join(folder, sha256 + ".json"))
            finally:
                with contextlib.suppress(OSError):
                    os.remove(tmp)

    def forget_file_stats(self, sha256):
        if self.folder:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(self.folder, "files", sha256 + ".json"))

    def forget(self, codes_folder):
        """Remove an entry of codes (made from a file that changed while it was read)."""
        if codes_folder:
            shutil.rmtree(codes_folder, ignore_errors=True)

    # -- encoded texts: big binary files, read a few rows at a time

    def codes_folder(self, key):
        return os.path.join(self.folder, "codes-" + key) if self.folder else None

    def open_codes(self, key, description):
        """{name: read-only array} of a complete entry made from description, or None
        if there is none (or it does not match: damaged, or cut short). Its done.json
        stays open, locked shared, as long as the arrays: no trim removes it."""
        folder = self.codes_folder(key)
        if not folder:
            return None
        arrays = {}
        try:
            in_use = open(os.path.join(folder, "done.json"))  # noqa: SIM115
        except OSError:
            return None
        try:
            fcntl.flock(in_use, fcntl.LOCK_SH)
            done = json.load(in_use)
            if done.get("description") == description:
                dtype = np.dtype(done["dtype"])
                for name, length in done["lengths"].items():
                    path = os.path.join(folder, name + ".codes")
                    arrays[name] = Codes(open(path, "rb"), dtype, in_use)  # noqa: SIM115
                    if os.fstat(arrays[name].file.fileno()).st_size != length * dtype.itemsize:
                        break
                else:
                    # its last use, for trim (oldest out first); a cache this process may
                    # read but not touch (another user's) still serves its entry
                    with contextlib.suppress(OSError):
                        os.utime(in_use.fileno())
                    return arrays
        except (OSError, ValueError, KeyError, TypeError):
            pass
        for array in arrays.values():
            array.file.close()
        in_use.close()
        return None

    def trim(self):
        """Remove the entries of codes least recently used until they fit the limit,
        passing over those a process has open (and the newest: one entry is kept
        whatever its size)."""
        if not (self.folder and self.limit):
            return
        entries = []
        for name in os.listdir(self.folder):
            folder = os.path.join(self.folder, name)
            with contextlib.suppress(OSError):
                if name.startswith("codes-"):
                    used = os.path.getmtime(os.path.join(folder, "done.json"))
                    size = sum(e.stat().st_size for e in os.scandir(folder))
                    entries.append((used, size, folder))
        entries.sort()
        total = sum(size for _, size, _ in entries)
        for _, size, folder in entries[:-1]:
            if total <= self.limit:
                break
            if _remove_unused(folder):
                total -= size

    @contextlib.contextmanager
    def write_codes(self, key, description, dtype, needed_bytes):
        """Write an entry: yields a Writer whose .file(name) is a binary file to write
        name's codes to; on leaving, the entry is renamed into place (or, if another
        process got there first, theirs is used) and .arrays holds the codes (Codes).
        Raises CacheError, before writing, if the disk has too little room for
        needed_bytes, and if writing fails; the partial entry is removed either way."""
        writer = _Writer(dtype)
        if not self.folder:  # unnamed files: gone when the process ends
            try:
                yield writer.unnamed()
                writer.reopen_unnamed()
            except OSError as e:
                writer.discard()
                raise CacheError(
                    f"cannot write the encoded text into a temporary file ({e.strerror}): "
                    "free some space in the temporary folder, or pass --cache-dir"
                ) from None
            return
        final = self.codes_folder(key)
        try:
            os.makedirs(self.folder, exist_ok=True)
            free = shutil.disk_usage(self.folder).free
        except OSError as e:
            raise CacheError(
                f"cannot write in {self.folder}: {e.strerror}; choose another --cache-dir "
                "(by default the folder .text of --checkpoint-dir)"
            ) from None
        if free < needed_bytes + (64 << 20):
            raise CacheError(
                f"the encoded text needs {cli.size(needed_bytes)} in {self.folder}, which has "
                f"{cli.size(free)} free: free some space, or pass --cache-dir another disk"
            )
        tmp = os.path.join(self.folder, _temporary_name())
        try:
            os.makedirs(tmp)
            yield writer.in_folder(tmp)
            lengths = writer.close()
            with open(os.path.join(tmp, "done.json"), "w") as f:
                json.dump({"description": description, "dtype": writer.dtype.name,
                           "lengths": lengths}, f)  # fmt: skip
                f.flush()
                os.fsync(f.fileno())
            try:
                os.rename(tmp, final)
            except OSError:  # another run wrote it meanwhile (theirs is used), or a
                if self.open_codes(key, description) is None:  # damaged one is there
                    shutil.rmtree(final, ignore_errors=True)
                    os.rename(tmp, final)
        except OSError as e:
            raise CacheError(
                f"cannot write the encoded text into {self.folder} ({e.strerror}): "
                "free some space, or pass --cache-dir another folder"
            ) from None
        finally:  # (closing again may fail again: a flush that failed is not retried)
            writer.discard()
            shutil.rmtree(tmp, ignore_errors=True)
        arrays = self.open_codes(key, description)
        if arrays is None:
            raise CacheError(f"the encoded text in {final} does not read back: delete it")
        writer.arrays = arrays
        self.trim()


class _Writer:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.files, self.arrays = {}, None

    def unnamed(self):
        self.folder = None
        return self

    def in_folder(self, folder):
        self.folder = folder
        return self

    def file(self, name):
        if self.folder:
            f = open(os.path.join(self.folder, name + ".codes"), "wb")  # noqa: SIM115
        else:
            f = tempfile.TemporaryFile()  # noqa: SIM115
        self.files[name] = f
        return f

    def close(self):
        """Flush every file to the disk; returns {name: codes written}."""
        lengths = {}
        for name, f in self.files.items():
            if not f.closed:
                f.flush()
                os.fsync(f.fileno())
                lengths[name] = f.tell() // self.dtype.itemsize
                if self.folder:
                    f.close()
        return lengths

    def discard(self):
        """Close every file, whatever flushing it gives: after a failure, what is left
        in its buffer is lost with the entry."""
        for f in self.files.values():
            with contextlib.suppress(OSError):
                f.close()

    def reopen_unnamed(self):
        self.close()
        self.arrays = {name: Codes(f, self.dtype) for name, f in self.files.items()}


def _remove_unused(folder):
    """Remove an entry unless a process has it open (then False)."""
    try:
        with open(os.path.join(folder, "done.json")) as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(folder, ignore_errors=True)
            return True
    except OSError:  # locked (in use), or gone already
        return False


class Codes:
    """The codes of a text in a file, read a few rows at a time: len(), .dtype, and
    .rows(starts, length); np.asarray() reads them all (tests, small texts).

    Rows are read with pread, not through a memory map: a mapped page stays in the
    process's resident memory, and the kernel maps the page cache in large pieces,
    measured at ~1.5 MB a row touched here (300 MB for the 200 rows of one batch)."""

    def __init__(self, f, dtype, lock=None):
        self.file, self.dtype = f, np.dtype(dtype)
        self.lock = lock  # the entry's done.json, locked shared while these are read
        self.itemsize = self.dtype.itemsize
        self.length = os.fstat(f.fileno()).st_size // self.itemsize

    def __len__(self):
        return self.length

    def rows(self, starts, length):
        """[len(starts), length]: codes[start : start + length] for each start."""
        size, fd = length * self.itemsize, self.file.fileno()
        raw = b"".join(os.pread(fd, size, int(start) * self.itemsize) for start in starts)
        if len(raw) != len(starts) * size:
            raise ValueError("a row reaches beyond the end of the text")
        return np.frombuffer(raw, self.dtype).reshape(len(starts), length)

    def __array__(self, dtype=None, copy=None):
        whole = self.rows([0], self.length)[0] if self.length else np.zeros(0, self.dtype)
        return whole if dtype is None else whole.astype(dtype)


def _temporary_name():
    return f"{_TMP}{socket.gethostname()}-{os.getpid()}-{os.urandom(4).hex()}"


def _remove_dead_temporaries(folder):
    """Remove what a killed process of this machine left half-written. Another
    machine's (a shared folder) are left alone: its process may still be writing."""
    host = socket.gethostname()
    for place in (folder, os.path.join(folder, "files")):
        with contextlib.suppress(OSError):
            for name in os.listdir(place):
                if not name.startswith(_TMP):
                    continue
                with contextlib.suppress(ValueError):
                    who, pid, _ = name[len(_TMP) :].rsplit("-", 2)
                    if who == host and not _alive(int(pid)):
                        path = os.path.join(place, name)
                        if os.path.isdir(path):
                            shutil.rmtree(path, ignore_errors=True)
                        else:
                            with contextlib.suppress(OSError):
                                os.remove(path)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: alive
    return True
