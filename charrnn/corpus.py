"""Reading a corpus: the files a run reads, its split into training and validation
text, the alphabet grown from it, its codes encoded once into the text cache
(textcache.py), and the fingerprint a resume checks (changes).

A text of any size costs the memory of a small one: every file is read in pieces
(txtutils.read_pieces), and the codes live on disk, read a batch at a time.
"""

import glob
import hashlib
import os
import re
import stat
from collections import Counter, deque
from typing import NamedTuple

import numpy as np

import txtutils
from charrnn import settings, textcache
from txtutils import DEFAULT, MIN_COUNT, VALID_MAX_ROWS, VALID_SEQLEN, Alphabet, CorpusError


def find_files(patterns):
    """Expand globs (``**`` allowed) and directories (every regular file below, hidden
    ones skipped) into a sorted list of absolute paths, so every machine picks the same
    files in the same order. Globs and directories take regular files and links to them
    only: a FIFO, socket, device or dangling link among them is skipped, and a link to
    a folder is not followed (it would read a file twice, or forever). A path named as
    it is (no wildcard) is kept whatever it is, for reading to refuse in words. A file
    reached by several paths (links, a folder named two ways) is one file: its first
    path in sorted order is kept."""
    found = {}  # identity -> path
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        for path in _expand(pattern):
            below = _regular_files_below(path) if os.path.isdir(path) else [path]
            for p in below:
                if p == pattern or os.path.isfile(p):
                    p, key = os.path.abspath(p), identity(p)
                    found[key] = min(found.get(key, p), p)
    return sorted(found.values())


def identity(path):
    """What a file is, whatever the path to it: its device and inode (a path that
    names nothing is only itself)."""
    try:
        st = os.stat(path)
    except OSError:
        return ("path", os.path.abspath(path))
    return (st.st_dev, st.st_ino)


def _expand(pattern):
    """The paths a glob matches: glob's, but for ``**``, which Python's glob expands by
    following links to folders (a link to a parent folder reads the text again and
    again); here it walks the folders as a --data DIR walk does."""
    parts = pattern.split(os.sep)
    if "**" not in parts:
        return glob.glob(pattern)
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base = os.sep.join(parts[:fixed]) or (os.sep if pattern.startswith(os.sep) else "")
    matches = _pattern_regex(parts[fixed:]).fullmatch
    # hidden folders are walked only if the pattern names one (** never enters them)
    hidden = any(part.startswith(".") for part in parts[fixed:])
    found = []
    for root, dirs, files in os.walk(base or os.curdir):
        dirs[:] = [d for d in dirs if hidden or not d.startswith(".")]
        for name in files + [d for d in dirs if not os.path.islink(os.path.join(root, d))]:
            path = os.path.join(root, name)
            if matches(os.path.relpath(path, base or os.curdir).replace(os.sep, "/")):
                found.append(path if base else os.path.relpath(path))
    return found


def _pattern_regex(parts):
    """A regular expression of glob's meaning of pattern parts (split at /): ``*``, ``?``
    and ``[...]`` within one name, ``**`` any number of folders, and no wildcard
    matching a name's leading dot."""
    out = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(r"(?:(?!\.)[^/]+/)*" + (r"(?!\.)[^/]+" if last else ""))
            continue
        regex = "" if part.startswith(".") else r"(?!\.)"
        for m in re.finditer(r"\*|\?|\[!?\]?[^\]]*\]|.", part):
            token = m.group()
            if token == "*":
                regex += "[^/]*"
            elif token == "?":
                regex += "[^/]"
            elif token.startswith("[") and len(token) > 2:
                regex += "[^" + token[2:-1] + "]" if token[1] == "!" else token
            else:
                regex += re.escape(token)
        out.append(regex + ("" if last else "/"))
    return re.compile("".join(out))


def _regular_files_below(folder):
    """The regular files (or links to them) below folder, hidden ones skipped: reading
    a FIFO would wait for a writer forever, and a dangling link holds no text."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = os.path.join(root, name)
            if not name.startswith(".") and os.path.isfile(path):
                yield path


def _stamp(path):
    """(size, mtime, inode) of a regular file, what changes when it is written; raise
    CorpusError if it is not one (or a link to one). Checked before opening it:
    opening a FIFO for reading waits for a writer, forever."""
    if os.path.islink(path) and not os.path.exists(path):
        raise CorpusError(
            f"{path} is a dangling link (to {os.readlink(path)}): fix it or remove it"
        )
    with txtutils.reading(path):
        st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise CorpusError(f"{path} is {kind}, not a text file: name text files only")
    return (st.st_size, st.st_mtime_ns, st.st_ino)


_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
    stat.S_IFDIR: "a directory",
}


VALID_CAP = 90 * 1024  # characters: the default split holds out at most the files past it


def default_validation_count(sizes):
    """How many of the last files to hold out: the fewest that hold more than 10% of
    the text, or more than 90 KB of it (92,160 characters), whichever are fewer -
    unless those hold more than a fifth of the text, when none are (a validation
    split that takes that much from training is for the user to choose). So four
    files of equal size or fewer give none. sizes: the files' lengths in characters."""
    total = sum(sizes)

    def files_to_exceed(limit):
        held = 0
        for n, size in enumerate(reversed(sizes), start=1):
            held += size
            if held > limit:
                return n
        return len(sizes)

    n = min(files_to_exceed(total / 10), files_to_exceed(VALID_CAP))
    return n if sum(sizes[len(sizes) - n :]) * 5 <= total else 0


class Corpus(NamedTuple):
    """The text of a run, from reading it (read_corpus) to the training loop."""

    train: textcache.Codes  # codes of the training text, files one after the other
    valid: textcache.Codes  # codes of the validation text (both read from disk)
    train_files: list
    valid_files: list
    alphabet: Alphabet
    not_utf8: dict  # {path: bytes that are not UTF-8}, for the files that have some
    fingerprint: dict  # {"train"|"valid": [[path, bytes, sha256], ...]}: see changes()
    unknown: tuple  # the shares of unknown characters in the training, validation text
    symbol_counts: np.ndarray  # int64 [ALPHASIZE]: each symbol's count in the training text
    min_count: int | None  # the count a character needed to join the alphabet
    codes_folder: str | None  # where the codes are kept (None: nowhere after the process)
    encoded: bool  # whether they were encoded now (else found in the cache)
    # the validation rows (validation_rows), int32 [ROWS, VALID_SEQLEN] each; None
    # without validation text, or when not asked for (a worker that does not validate)
    valid_x: np.ndarray | None
    valid_y: np.ndarray | None


def min_count_for(chars):
    """--min-char-count auto: a character joins the alphabet if it is at least one in a
    million characters of the training text, and seen at least MIN_COUNT times: the
    rarer a symbol, the fewer chances the model has to learn it, and each one widens
    the softmax of every step. Texts under 3 M characters keep MIN_COUNT."""
    return max(MIN_COUNT, chars // AUTO_CHARS_PER_COUNT)


AUTO_CHARS_PER_COUNT = 1_000_000
PIECE = 4 << 20  # bytes read at a time: memory does not grow with a file's size


def read_corpus(
    data_patterns,
    validation_patterns=None,
    alphabet=DEFAULT,
    min_count=MIN_COUNT,
    cache_dir=None,
    progress=None,
    with_validation_rows=True,
    cache_limit=None,
):
    """Read the training and validation text (Corpus), in pieces: a text of any size
    costs the memory of a small one; its codes live on disk, in the cache (cache_dir;
    None: unnamed temporary files; cache_limit: the bytes of codes it keeps, None:
    any), and read from there a batch at a time.

    validation_patterns: None picks the last files of the sorted list
    (default_validation_count); [] means no validation; otherwise globs of the
    files to hold out. Validation files are never trained on, even when
    data_patterns also match them.

    alphabet: the alphabet to start from, grown by the characters of the training
    text seen at least min_count times ("auto": min_count_for the text's size; None:
    not grown, as when resuming).

    Every file is read through once to fingerprint it (SHA-256, quick); what is counted
    and encoded is found in the cache by the files' contents, so only a text not seen
    before is counted (a second pass) and encoded (a third). progress(what, done,
    total): called as the bytes of each pass go by. Raises CorpusError for bad input,
    textcache.CacheError if the cache cannot be written."""
    for attempt in (1, 2):
        try:
            return _read(
                data_patterns,
                validation_patterns,
                alphabet,
                min_count,
                textcache.Cache(cache_dir, cache_limit),
                progress,
                with_validation_rows,
            )
        except _StaleCounts:  # removed from the cache: counted again, once
            if attempt == 2:
                raise CorpusError("the text changed while it was read: run again") from None
    raise AssertionError("unreachable")


class _StaleCounts(Exception):
    """Counts from the cache that disagree with the codes: forgotten, read again."""


def _read(data_patterns, validation_patterns, alphabet, min_count, cache, progress, rows):
    """One reading of the text (read_corpus's); raises _StaleCounts if the counts found
    in the cache do not add up to the codes (then they are removed)."""
    files, valid_files = _find_text(data_patterns, validation_patterns)
    every = files + [p for p in valid_files or [] if p not in set(files)]
    sums = _Sums(None if validation_patterns is None else set(valid_files))
    stats = _file_stats(every, cache, progress, sums)
    train_files, valid_files = _split(files, valid_files, stats, data_patterns)
    if validation_patterns is None:
        sums.hold_out(len(valid_files))
    train_counts, valid_counts = sums.train.pairs(), sums.valid.pairs()
    if min_count == "auto":
        min_count = min_count_for(sum(stats[p].chars for p in train_files))
    if min_count is not None:
        alphabet = alphabet.grown(*train_counts, min_count)
    codes, folder, encoded = _encode(train_files, valid_files, stats, alphabet, cache, progress)
    _check_unchanged(every, stats, cache, folder if encoded else None)
    for name, paths in (("train", train_files), ("valid", valid_files)):
        if len(codes[name]) != sum(stats[p].chars for p in paths):
            cache.forget(folder)
            for path in every:
                cache.forget_file_stats(stats[path].sha256)
            raise _StaleCounts

    def share_unknown(paths, counts):
        chars = sum(stats[p].chars for p in paths)
        return alphabet.unknown_count(*counts) / chars if chars else 0.0

    def fingerprint(paths):
        return [[p, stats[p].size, stats[p].sha256] for p in paths]

    valid_x = valid_y = None
    if rows and len(codes["valid"]) >= 2:
        valid_x, valid_y = txtutils.validation_rows(codes["valid"], VALID_SEQLEN, VALID_MAX_ROWS)
    return Corpus(
        train=codes["train"],
        valid=codes["valid"],
        train_files=train_files,
        valid_files=valid_files,
        alphabet=alphabet,
        not_utf8={p: stats[p].not_utf8 for p in every if stats[p].not_utf8},
        fingerprint={"train": fingerprint(train_files), "valid": fingerprint(valid_files)},
        unknown=(
            share_unknown(train_files, train_counts),
            share_unknown(valid_files, valid_counts),
        ),
        symbol_counts=alphabet.symbol_counts(*train_counts),
        min_count=min_count,
        codes_folder=folder,
        encoded=encoded,
        valid_x=valid_x,
        valid_y=valid_y,
    )


def check_named(data_patterns, validation_patterns):
    """CorpusError if --data or --validation names a path (no wildcard) that is not
    there. Globs drop it, so beside files that are there the run would train on less
    text than asked, unsaid; a glob that matches nothing is dropped, as a shell drops
    it. (Not for a resumed run's saved paths: its text's changes say what is gone.)"""
    for flag, patterns in (("--data", data_patterns), ("--validation", validation_patterns)):
        for pattern in patterns or []:
            if not glob.has_magic(pattern) and not os.path.lexists(os.path.expanduser(pattern)):
                raise CorpusError(f"{flag} names {pattern}, which does not exist: check the path")


def _find_text(data_patterns, validation_patterns):
    """The files --data names, and those --validation names ([] for none; None for
    the default split); CorpusError if either names no file."""
    files = find_files(data_patterns)
    if not files and list(data_patterns) == settings.DEFAULTS["data"]:
        raise CorpusError(
            f"--data {' '.join(data_patterns)} matches no file: `make corpus` fetches "
            "Shakespeare, or train on your own text with --data"
        )
    if not files:
        raise CorpusError(
            f"--data {' '.join(data_patterns)} matches no file: "
            "check the path, and quote globs so the shell does not expand them"
        )
    valid_files = None if validation_patterns is None else []
    if validation_patterns:
        valid_files = find_files(validation_patterns)
        if not valid_files:
            raise CorpusError(
                f"--validation {' '.join(validation_patterns)} matches no file: "
                "check the path, or pass --validation none"
            )
        # a held-out file named by another path than --data's (a link, a folder named
        # two ways) is the same file: known by --data's path, so it is held out
        same = {identity(p): p for p in files}
        valid_files = sorted({same.get(identity(p), p) for p in valid_files})
    return files, valid_files


def _split(files, valid_files, stats, data_patterns):
    """(training files, validation files): the files held out (valid_files; None: the
    default split of the last files, by their sizes) and the rest; CorpusError if the
    training files hold no text."""
    if valid_files is None:
        n = default_validation_count([stats[p].chars for p in files])
        train_files, valid_files = files[: len(files) - n], files[len(files) - n :]
    else:
        held_out = set(valid_files)
        train_files = [p for p in files if p not in held_out]
    if not any(stats[p].chars for p in train_files):
        if valid_files and any(stats[p].chars for p in files):
            raise CorpusError(
                "the validation files take all of the training text: "
                "pass --validation with fewer files, or --validation none"
            )
        raise CorpusError(f"--data {' '.join(data_patterns)} holds no text (the files are empty)")
    return train_files, valid_files


def _check_unchanged(paths, stats, cache, encoded_folder):
    """CorpusError if a file changed (or vanished) while it was read, and what was
    stored of it forgotten: the codes encoded now (in encoded_folder) hold some of the
    new text, and its counts were stored under its old fingerprint."""
    changed = [p for p in paths if not _same(p, stats[p].stamp)]
    if changed:
        if encoded_folder:
            cache.forget(encoded_folder)
        for path in changed:
            cache.forget_file_stats(stats[path].sha256)
        raise _changed(changed[0])


def _same(path, stamp):
    """Whether the file at path is still the one stamped (CorpusError counts as no)."""
    try:
        return _stamp(path) == stamp
    except CorpusError:
        return False


def _changed(path):
    return CorpusError(f"{path} changed while it was read: run again once it is written")


class FileStats(NamedTuple):
    """What a file holds, as far as reading it needs: found by its bytes' SHA-256.
    Its characters' counts are not kept: they are summed as the files go (_Sums)."""

    size: int  # bytes in the file
    sha256: str
    stamp: tuple  # (size, mtime, inode) when it was first read: a change is noticed
    chars: int  # characters (CRLF read as LF)
    not_utf8: int  # bytes that are not UTF-8: each read as one lone surrogate


def _file_stats(paths, cache, progress, sums):
    """{path: FileStats}: every file fingerprinted (a quick pass), then counted (a
    slower one) unless the cache knows its content, its counts added to sums in the
    files' order. Counts are stored in the cache only if the file is still the one
    fingerprinted once counted: a kill never leaves counts under a wrong fingerprint."""
    stamps = {p: _stamp(p) for p in paths}
    fingerprinting = _Pass(progress, "fingerprinting", sum(s[0] for s in stamps.values()))
    prints = {p: (stamps[p], _sha256(p, fingerprinting)) for p in paths}
    del stamps
    to_count = sum(st[0] for st, sha in prints.values() if not cache.has_file_stats(sha))
    counting = _Pass(progress, "counting", to_count)
    stats = {}
    for path in paths:
        stamp, sha = prints.pop(path)
        size = stamp[0]
        counted = _counts_from_json(cache.file_stats(sha), size)
        if counted is None:
            counted = _count(path, size, counting)
            if not _same(path, stamp):
                raise _changed(path)
            points, counts = counted
            cache.put_file_stats(
                sha, {"size": size, "points": points.tolist(), "counts": counts.tolist()}
            )
        points, counts = counted
        not_utf8 = int(counts[(points >= 0xDC80) & (points <= 0xDCFF)].sum())
        stats[path] = FileStats(size, sha, stamp, int(counts.sum()), not_utf8)
        sums.add(path, stats[path].chars, points, counts)
    return stats


class _Counts:
    """Characters counted by code point, summed file by file: the memory of the
    alphabet's range, not of the files."""

    def __init__(self):
        self.counts = np.zeros(0, dtype=np.int64)

    def add(self, points, counts):
        top = int(points[-1]) + 1 if len(points) else 0  # points: sorted
        if top > len(self.counts):
            self.counts = np.pad(self.counts, (0, top - len(self.counts)))
        self.counts[points] += counts

    def pairs(self):
        """(code points, counts), as np.unique gives them."""
        points = np.flatnonzero(self.counts)
        return points, self.counts[points]


class _Sums:
    """The training and the validation text's counts, summed as the files are read.
    held_out: the validation files, or None for the default split, which is known only
    once every file is counted; it holds out at most the last files past VALID_CAP
    characters, so only those are kept apart until then (a window of files, whatever
    their number)."""

    def __init__(self, held_out):
        self.train, self.valid, self.held_out = _Counts(), _Counts(), held_out
        self.last, self.last_chars = deque(), 0  # [(chars, points, counts)]

    def add(self, path, chars, points, counts):
        if self.held_out is not None:
            (self.valid if path in self.held_out else self.train).add(points, counts)
            return
        self.last.append((chars, points, counts))
        self.last_chars += chars
        while len(self.last) > 1 and self.last_chars - self.last[0][0] > VALID_CAP:
            first, points, counts = self.last.popleft()
            self.last_chars -= first
            self.train.add(points, counts)

    def hold_out(self, n):
        """The default split: the last n files are validation (n <= the window)."""
        for i, (_, points, counts) in enumerate(self.last):
            (self.valid if i >= len(self.last) - n else self.train).add(points, counts)
        self.last.clear()


def _count(path, size, counting):
    """(code points, counts) of the characters of a file of size bytes, CRLF read as
    LF, read a piece at a time; counting: its _Pass."""
    counts, counted = np.zeros(0, dtype=np.int64), counting.done
    for text in txtutils.read_text_pieces(path, PIECE):
        text = text.replace("\r\n", "\n")
        # ASCII (most text) counted as bytes: a quarter of the memory traffic
        piece = np.bincount(
            np.frombuffer(text.encode("ascii"), np.uint8)
            if text.isascii()
            else txtutils.code_points(text)
        )
        if len(piece) > len(counts):
            counts = np.pad(counts, (0, len(piece) - len(counts)))
        counts[: len(piece)] += piece
        counting.add(len(text))  # characters: near enough to bytes for a progress line
    counting.add(size - (counting.done - counted))  # bytes beyond its characters
    points = np.flatnonzero(counts)
    return points, counts[points]


def _counts_from_json(known, size):
    """(code points, counts) from the cache's JSON, or None if there is none or it
    does not make sense (then the file is counted again)."""
    try:
        points, counts = (np.array(known[k], dtype=np.int64) for k in ("points", "counts"))
        sorted_ = points.ndim == 1 and bool(np.all(np.diff(points) > 0))
        if known["size"] == size and points.shape == counts.shape and sorted_:
            return points, counts
    except (TypeError, KeyError, ValueError):
        pass
    return None


class _Pass:
    """One pass over the text, for progress(what, done, total)."""

    def __init__(self, progress, what, total):
        self.progress, self.what, self.total, self.done = progress, what, total, 0

    def add(self, n):
        self.done = min(self.done + n, self.total)
        if self.progress:
            self.progress(self.what, self.done, self.total)


def _sha256(path, progress):
    """The SHA-256 of a file's bytes, read in pieces; refuses a binary file (a NUL byte)."""
    sha = hashlib.sha256()
    with txtutils.reading(path), open(path, "rb") as f:
        while raw := f.read(PIECE):
            txtutils.refuse_binary(raw, path)
            sha.update(raw)
            progress.add(len(raw))
    return sha.hexdigest()


def _encode(train_files, valid_files, stats, alphabet, cache, progress):
    """({"train"|"valid": codes}, the cache folder they are in, whether encoded now):
    from the cache if it has them, else encoded file by file into it (a CR ending one
    file is no CRLF with the next)."""
    description = {
        "train": [stats[p].sha256 for p in train_files],
        "valid": [stats[p].sha256 for p in valid_files],
        "alphabet": alphabet.chars,
    }
    key = textcache.key_of(description)
    found = cache.open_codes(key, description)
    if found is not None:
        return found, cache.codes_folder(key), False
    parts = {"train": train_files, "valid": valid_files}
    total = sum(stats[p].chars for p in train_files + valid_files)
    encoding = _Pass(progress, "encoding", total)
    itemsize = np.dtype(alphabet.dtype).itemsize
    with cache.write_codes(key, description, alphabet.dtype, total * itemsize) as writer:
        for name, paths in parts.items():
            f = writer.file(name)
            for path in paths:
                for codes in txtutils.read_pieces(path, PIECE, alphabet):
                    f.write(codes)
                    encoding.add(len(codes))
    return writer.arrays, cache.codes_folder(key), True


def changes(old, new):
    """What differs between two corpus fingerprints (Corpus.fingerprint), in a few
    words, or None if they are the same text. The same files, byte for byte, in
    another directory are the same text. A file is known by its path inside the folder
    the text is read from, so that when that folder moved, an edited file reads as
    edited, not as added and removed; a file moved inside the text is known by its name
    when no other file added or removed has it."""

    def same(a, b):  # file by file, by name and content, no list of either made
        return len(a) == len(b) and all(
            os.path.basename(x[0]) == os.path.basename(y[0]) and x[1:] == y[1:]
            for x, y in zip(a, b, strict=True)
        )

    if all(same(old[k], new[k]) for k in ("train", "valid")):
        return None
    old_root, new_root = _roots(old, new)
    old_home, new_home = _folder(old), _folder(new)  # where each reads, for people
    said = [] if old_home == new_home else [f"read from {new_home} (was {old_home})"]
    for k, what in (("train", "training"), ("valid", "validation")):
        before = {os.path.relpath(p, old_root): sha for p, _, sha in old[k]}
        after = {os.path.relpath(p, new_root): sha for p, _, sha in new[k]}
        _match_by_name(before, after)
        for verb, paths in (
            ("added", sorted(after.keys() - before.keys())),
            ("removed", sorted(before.keys() - after.keys())),
            ("edited", sorted(p for p in after.keys() & before.keys() if after[p] != before[p])),
        ):
            if paths:
                more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
                said.append(f"{what} files {verb}: {', '.join(paths[:3])}{more}")
    return "; ".join(said) or "the files are ordered or split otherwise"


def _roots(old, new):
    """The folders that two fingerprints' paths are known inside: the same folder for
    both if they share a file, else each its own (the text moved)."""
    if _paths(old) & _paths(new):
        return (os.path.commonpath([_folder(old), _folder(new)]),) * 2
    return _folder(old), _folder(new)


def _paths(fingerprint):
    return {p for k in fingerprint for p, _, _ in fingerprint[k]}


def _folder(fingerprint):
    """The folder that holds every file of a fingerprint."""
    return os.path.commonpath([os.path.dirname(p) for p in _paths(fingerprint)])


def _match_by_name(before, after):
    """Move in after each added file to the place of the removed file of the same name,
    if that name is no other added or removed file's: it is that file, moved."""

    def by_name(paths):
        counts = Counter(os.path.basename(p) for p in paths)
        return {os.path.basename(p): p for p in paths if counts[os.path.basename(p)] == 1}

    removed = by_name(before.keys() - after.keys())
    added = by_name(after.keys() - before.keys())
    for name in removed.keys() & added.keys():
        after[removed[name]] = after.pop(added[name])
