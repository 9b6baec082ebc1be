"""Measure what a user waits for: training speed against this machine's own matmul
limit, generation and scoring speed, and peak memory, timed in one process; then the
peak memory of a real rnn_train.py run, validation included, in a child process; and
real runs on generated texts of growing size, whose peak memory and time to the first
step should not grow with the text, and the speed of encoding it.

    python -m tools.bench                    # the table (make bench)
    python -m tools.bench --json bench.json  # and the same figures as JSON
    python -m tools.bench --quick            # a tiny model: checks the bench itself runs
    python -m tools.bench --text-sizes 10M,10G --code DIR   # another checkout's rnn_train.py

Every speed is a median over repeated timings after a warm-up; run it on an idle
machine, and compare figures only within one run.
"""

from charrnn import tf_quiet  # noqa: F401, I001  (first: quiets TensorFlow's logging before it loads)

import argparse
import dataclasses
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import keras
import numpy as np
import tensorflow as tf

import charrnn.corpus
import txtutils
from charrnn import cli, settings, training
from charrnn.generate import Scorer, score, score_per_call
from charrnn.hardware import cpu_name
from charrnn.model import build_model
from tools.timing import generation_run, median_time, speeds_in_turn

DEFAULT = {
    "alphasize": 98,
    **{
        k: settings.DEFAULTS[k]
        for k in ("cell_size", "layers", "dropout", "char_dropout", "seqlen")
    },
    "batch_size": settings.auto_batch_size(98),  # (the rows of a 98-symbol run)
}
QUICK = dict(DEFAULT, cell_size=32, layers=2, batch_size=8, seqlen=10)
BIG_ALPHABET = 5000  # symbols: a Chinese or Japanese corpus has thousands


HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout

# The large-text rows (issue 17): does memory grow with the text, does a big one start fast?
TEXT_SIZES, QUICK_TEXT_SIZES = "10M,1G", "1M"
SIZE_UNITS = {"K": 10**3, "M": 10**6, "G": 10**9}  # powers of 1000, as disks count
PART_BYTES = 100 * 10**6  # the text is cut into files of at most this, as big corpora are
BLOCK_BYTES = 8 * 10**6  # generated once (about a second), then written over and over
VALID_BYTES = 10**6  # one validation file at every size: validation costs the same
QUICK_VALID_BYTES = 10**5  # --quick: 2 s less a run
TEXT_STEPS, RESUME_STEPS = 3, 6  # the run's --max-steps, then its --resume's
# the same text in few files and in many (source trees have 100,000): memory must not
# grow with the number of files
FILE_COUNTS, QUICK_FILE_COUNTS = "10,100000", "300"
FILES_TEXT_BYTES, QUICK_FILES_TEXT_BYTES = 10 * 10**6, 3 * 10**5
POLL_SECONDS = 0.1  # how often a run's memory is read
# English words, commonest first (drawn with Zipf-like odds), of every length
ENGLISH = """the of and to a in that is was he for it with as his on be at by had not are but
from or have an they which one you were her all she there would their we him been has when who
will more no if out so said what up its about into than them can only other new some could time
these two may then do first any my now such like our over man me even most made after also did
many before must through back years where much your way well down should because each just those
people how too little state good very make world still own see men work long get here between
both life being under never day same another know while last might us great old year off come
since against go came right used take three himself few house use during without again place
around however home small found thought went say part once general high upon school every don't
does got united left number course war until always away something fact though water less public
put think almost hand enough far took head yet government system better set told nothing night
end why called didn't eyes find going look asked later knew point next program city business
give group toward young days let room president side social given present several order national
possible rather second face per among form important often things looked early white case John
become large big need four within felt children along saw best church ever least power
development light believe family interest want members mind country area others done turned
although open problem sense service whole began certain themselves market either understanding
notwithstanding international responsibility communication extraordinary circumstances
nevertheless particularly administration environmental characteristics representatives
experience knowledge remember question history moment morning evening"""
WORDS = ENGLISH.split()
MARKS, MARK_ODDS = ["", ",", ".", ";", "?"], [0.86, 0.07, 0.05, 0.01, 0.01]  # after a word


def parse_sizes(text):
    """--text-sizes: '10M,1G' -> [10_000_000, 1_000_000_000], ascending (the largest,
    last, is the one kept for the encoding speed). K, M and G are powers of 1000; a
    bare number is bytes."""
    sizes = set()
    for item in text.split(","):
        item = item.strip().upper()
        scale = SIZE_UNITS.get(item[-1:], 1)
        try:
            size = round(float(item[:-1] if scale > 1 else item) * scale)
        except (ValueError, OverflowError):
            size = 0
        if size <= 0:
            raise argparse.ArgumentTypeError(f"{item!r} is no size: give sizes like 10M,1G")
        sizes.add(size)
    return sorted(sizes)


def size_label(size):
    """10_000_000 -> '10 MB', in the largest unit it reaches: a size as the table names it."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} bytes"


def text_key(size):
    """10_000_000 -> 'text_10mb': how the JSON's keys name the figures of a text size."""
    return "text_" + size_label(size).replace(" ", "").lower()


def english_text(size, seed):
    """`size` bytes of English-like ASCII text, a uint8 array: the words of WORDS at
    Zipf-like odds (the commonest the most often, as in English), some followed by
    , . ; or ?, a capital after a full stop, a line feed every 60 to 80 characters or
    so. The program then reads what it reads in a book (some 60 symbols, short lines),
    not uniform random symbols; and numpy makes 8 MB of it in about a second."""
    rng = np.random.default_rng(seed)
    tokens = [word + mark for word in WORDS for mark in MARKS]  # word i, mark j: i*len + j
    odds = 1 / np.arange(2, len(WORDS) + 2)
    odds /= odds.sum()
    mean = float(odds @ [len(w) for w in WORDS]) + 1.2  # a space, now and then a mark
    n = int(size / mean * 1.1) + 100
    picks = rng.choice(len(WORDS), size=n, p=odds) * len(MARKS)
    picks += rng.choice(len(MARKS), size=n, p=MARK_ODDS)
    text = " ".join(map(tokens.__getitem__, picks.tolist())).encode("ascii")
    a = np.resize(np.frombuffer(text, np.uint8), size + 2)  # resize: repeats if short
    stop = np.flatnonzero((a[:-2] == ord(".")) | (a[:-2] == ord("?"))) + 2  # the space between
    stop = stop[(a[stop] >= ord("a")) & (a[stop] <= ord("z"))]
    a[stop] -= ord("a") - ord("A")
    spaces = np.flatnonzero(a == ord(" "))
    ends = np.cumsum(rng.integers(60, 81, size=size // 60 + 1))  # the first space after each
    a[spaces[np.minimum(np.searchsorted(spaces, ends), len(spaces) - 1)]] = ord("\n")
    a = a[:size]
    a[-1] = ord("\n")
    return a


def write_text(folder, size, block, part_bytes=PART_BYTES):
    """Write `size` bytes of text into folder as part-0000.txt, part-0001.txt, ... of at
    most part_bytes each, and return the glob that matches them. The text is `block`
    (english_text) over and over, each time rotated to start at another of its lines,
    so that no two copies are alike: 10 GB takes what the disk takes, not minutes of
    generating."""
    os.makedirs(folder)
    starts = np.flatnonzero(block[:-1] == ord("\n")) + 1
    offsets = np.random.default_rng(0).choice(starts, size=size // len(block) + 1)

    def pieces():  # the block whole, then rotated
        yield memoryview(block)
        for offset in offsets:
            yield memoryview(block[offset:])
            yield memoryview(block[:offset])

    stream, pending = pieces(), memoryview(b"")
    for part, first in enumerate(range(0, size, part_bytes)):
        left = min(part_bytes, size - first)
        with open(os.path.join(folder, f"part-{part:04d}.txt"), "wb") as f:
            while left:
                if not pending:
                    pending = next(stream)
                n = min(left, len(pending))
                f.write(pending[:n])
                pending, left = pending[n:], left - n
    return os.path.join(folder, "*.txt")


@dataclasses.dataclass
class Watched:
    """What watch_run saw of one run of a program."""

    peak_mb: float  # its peak resident memory, MB (MiB, as the other memory figures)
    first_step_s: float | None  # from starting it to its first "step " line; None: none came
    seconds: float  # from starting it to its end
    stopped: bool  # killed for passing the memory limit


def watch_run(argv, cwd, limit_mb, stderr_path):
    """Run argv to its end, reading its output as it comes, and say what was Watched.

    The peak memory is the kernel's own figure for the program, VmHWM in /proc/PID/status,
    read every POLL_SECONDS while it runs, so only its last moments can slip by;
    getrusage's figure for a child would also count the size of this process when it
    started the child. A run whose resident memory passes limit_mb is killed and
    reported (stopped), rather than left to take the machine down; any other failure
    raises RuntimeError with the end of its stderr. stderr goes to stderr_path, a file:
    TensorFlow writes a lot there, and a full pipe would stall the program."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # lines as they come, flushed or not
    found = []
    start = time.perf_counter()
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err)
    reader = threading.Thread(target=note_first_step, args=(proc.stdout, start, found))
    reader.start()
    try:
        peak_mb, stopped, status, usage = poll_until_exit(proc.pid, limit_mb)
    except BaseException:  # Ctrl-C, say: the program must not outlive the bench
        os.kill(proc.pid, signal.SIGKILL)
        os.wait4(proc.pid, 0)
        raise
    finally:
        reader.join()  # the output ends when the program does
        proc.stdout.close()
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not wait again
    if not peak_mb:  # no /proc (not Linux): the child's getrusage figure, the best there is
        peak_mb = usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)
    if proc.returncode != 0 and not stopped:
        with open(stderr_path, "rb") as f:
            f.seek(max(0, os.path.getsize(stderr_path) - 2000))
            tail = f.read().decode(errors="replace").strip()[-500:]
        program = os.path.basename(argv[1])
        raise RuntimeError(f"{program} failed (exit status {proc.returncode}): {tail}")
    return Watched(peak_mb, found[0] if found else None, seconds, stopped)


def note_first_step(stream, start, found):
    """Read a program's output to its end (a full pipe would stall it), appending to
    `found` the seconds from start to its first progress line, `step 1/3  epoch 1/10
    loss 4.585 ...`. Bytes, not text: a sample may hold what the locale cannot decode."""
    for line in stream:
        if not found and line.startswith(b"step "):
            found.append(time.perf_counter() - start)


def poll_until_exit(pid, limit_mb):
    """Wait for the child pid to end, reading its memory every POLL_SECONDS and killing
    it once its resident memory passes limit_mb. Returns (peak MB, 0 if there is no
    /proc; whether it was killed; its wait status; its rusage). os.wait4 reaps it: the
    rusage is the fallback figure where /proc is missing."""
    peak_mb, stopped = 0.0, False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return peak_mb, stopped, status, usage
        memory = proc_memory_mb(pid)
        if memory:
            rss, hwm = memory
            peak_mb = max(peak_mb, hwm)
            if rss > limit_mb and not stopped:
                os.kill(pid, signal.SIGKILL)
                stopped = True
        time.sleep(POLL_SECONDS)


def proc_memory_mb(pid):
    """(resident, peak resident) memory of a running process in MB, VmRSS and VmHWM of
    /proc/PID/status; None where there are none: not Linux, or the process has just
    ended (a zombie has no memory lines)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if line.startswith("Vm"))
        return tuple(int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM"))
    except (OSError, KeyError, ValueError):
        return None


def takes_flag(code, flag):
    """Whether code's rnn_train.py takes flag, by its --help: --cache-dir is new, and an
    older checkout, run for before-and-after figures, would refuse it."""
    result = subprocess.run(
        [sys.executable, "rnn_train.py", "--help"], cwd=code, capture_output=True, text=True
    )
    return flag in result.stdout


def train_argv(code, folder, train_glob, valid, model_flags, cache_dir, resume):
    """The rnn_train.py command of a text row: TEXT_STEPS steps, a progress line each
    (the first one marks the first step), of the program's default model or model_flags;
    resume: --resume to RESUME_STEPS. Everything it writes goes into folder.
    train_glob is one argument, a quoted glob: the program expands it."""
    flags = {
        "--data": train_glob,
        "--validation": valid,
        "--max-steps": RESUME_STEPS if resume else TEXT_STEPS,
        "--log-every": 1,
        "--checkpoint-dir": os.path.join(folder, "checkpoints"),
        "--log-dir": os.path.join(folder, "log"),
        "--run": "bench",
    }
    if cache_dir:
        flags["--cache-dir"] = os.path.join(folder, "cache")
    if resume:
        flags["--resume"] = "bench"
    argv = [sys.executable, os.path.join(code, "rnn_train.py")]
    return argv + [str(a) for kv in flags.items() for a in kv] + model_flags


def text_run_figures(key, code, folder, train_glob, valid, model_flags, cache_dir, limit_mb):
    """The figures of one text size, keys starting with key: a real rnn_train.py run on
    the text, then its --resume (which reads the text again, and checks it is the one
    it trained on). For each: the peak memory, MB; the seconds to the first step (what
    a user waits for before training starts: reading, counting and encoding the text
    included) and to the end; whether the memory limit stopped it (a stopped run has no
    --resume: its figures are None)."""
    figures = {}
    watched = None
    for name, resume in ((key, False), (key + "_resume", True)):
        if watched is None or not watched.stopped:
            argv = train_argv(code, folder, train_glob, valid, model_flags, cache_dir, resume)
            stderr = os.path.join(folder, f"{name}.stderr")
            watched = watch_run(argv, code, limit_mb, stderr)
            first = watched.first_step_s
            figures[name + "_peak_rss_mb"] = round(watched.peak_mb)
            figures[name + "_first_step_s"] = None if first is None else round(first, 2)
            figures[name + "_run_s"] = round(watched.seconds, 2)
            figures[name + "_stopped"] = watched.stopped
        else:
            for figure in ("peak_rss_mb", "first_step_s", "run_s", "stopped"):
                figures[f"{name}_{figure}"] = None
    return figures


def write_files(folder, size, count, seed=2):
    """`size` bytes of text (english_text) in `count` files of about the same size, a
    thousand to a folder, as a source tree is; returns the folder."""
    text = english_text(size, seed)
    bounds = np.linspace(0, size, count + 1).astype(np.int64)
    for i in range(count):
        path = os.path.join(folder, f"{i // 1000:03d}", f"{i:06d}.txt")
        if i % 1000 == 0:
            os.makedirs(os.path.dirname(path))
        text[bounds[i] : bounds[i + 1]].tofile(path)
    return folder


def file_count_figures(counts, size, code, model_flags, cache_dir, limit_mb, valid_bytes):
    """text_run_figures of the same `size` bytes of text cut into each of counts files
    (keys files_N_...): a real run and its --resume each."""
    figures = {"file_counts": counts, "file_count_text_bytes": size}
    with tempfile.TemporaryDirectory(prefix="bench-files-") as tmp:
        valid = os.path.join(tmp, "valid.txt")
        english_text(valid_bytes, seed=1).tofile(valid)
        for count in counts:
            folder = os.path.join(tmp, f"files{count}")
            train = write_files(os.path.join(folder, "train"), size, count)
            key = f"files_{count}"
            figures.update(
                text_run_figures(key, code, folder, train, valid, model_flags, cache_dir, limit_mb)
            )
            shutil.rmtree(folder)
    return figures


def encoding_mb_per_s(train_glob, valid, text_bytes, folder):
    """MB/s (10^6 bytes of text a second) of charrnn.corpus.read_corpus reading, counting and
    encoding the text into a fresh cache folder: what a first run on a new text does
    before it can start, timed in this process on this checkout's txtutils."""
    start = time.perf_counter()
    corpus = charrnn.corpus.read_corpus(
        [train_glob], [valid], cache_dir=os.path.join(folder, "encode-cache")
    )
    seconds = time.perf_counter() - start
    del corpus  # its arrays map the cache's files, deleted with the folder
    return text_bytes / seconds / 1e6


def flags_of_model(config):
    """config's model as rnn_train.py's flags."""
    keys = ("layers", "cell_size", "batch_size", "seqlen")
    return [str(a) for k in keys for a in ("--" + k.replace("_", "-"), config[k])]


def text_figures(sizes, code, model_flags, cache_dir, limit_mb, valid_bytes=VALID_BYTES):
    """The large-text figures (issue 17), keyed as the JSON names them: for each size,
    ascending, text_run_figures on that much generated text (train/part-*.txt, and
    the same valid.txt of valid_bytes at every size), then the encoding speed of the
    largest. Each size's text is deleted before the next is written: the disk holds
    one at a time."""
    figures = {"text_sizes_bytes": sizes, "memory_limit_gb": limit_mb / 1024}
    with tempfile.TemporaryDirectory(prefix="bench-text-") as tmp:
        valid = os.path.join(tmp, "valid.txt")
        english_text(valid_bytes, seed=1).tofile(valid)
        block = english_text(min(BLOCK_BYTES, sizes[-1]), seed=0)
        for size in sizes:
            key = text_key(size)
            folder = os.path.join(tmp, key)
            train_glob = write_text(os.path.join(folder, "train"), size, block)
            figures.update(
                text_run_figures(
                    key, code, folder, train_glob, valid, model_flags, cache_dir, limit_mb
                )
            )
            if size == sizes[-1]:
                speed = encoding_mb_per_s(train_glob, valid, size + valid_bytes, folder)
                figures["encode_mb_per_s"] = round(speed, 1)
            shutil.rmtree(folder)
    return figures


def train_flops_per_char(config):
    """The fixed FLOP count of one training character, whatever the implementation
    actually runs (the fused GRU looks the first layer's input products up, for one),
    so that fractions of the limit compare implementations and runs: per layer, 3 gates
    x (input width + CELL) x CELL multiply-adds (2 FLOPs), the first layer's input
    counted as a one-hot matmul of ALPHASIZE; plus the logits layer, CELL x ALPHASIZE;
    all x3 for forward + backward (input and weight gradients). Default model: 24.8 M."""
    cell, layers, alphasize = config["cell_size"], config["layers"], config["alphasize"]
    forward = sum(3 * ((alphasize if i == 0 else cell) + cell) * cell * 2 for i in range(layers))
    forward += cell * alphasize * 2
    return 3 * forward


def matmul_gflops(m, k, n, repeats):
    """Sustained float32 GFLOP/s of one [m, k] x [k, n] matmul."""
    a, b = tf.random.normal([m, k]), tf.random.normal([k, n])
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))  # the sum: one float back
    for _ in range(3):
        matmul().numpy()
    return 2 * m * k * n / median_time(lambda: matmul().numpy(), repeats) / 1e9


def training_limit(config, repeats):
    """The training speed this machine's sustained float32 rate allows at the fixed FLOP
    count: ((m, k, n), GFLOP/s, FLOPs per character, characters/s). The rate is
    measured on a reference shape the size of a whole batch's GRU products,
    [BATCH*SEQLEN, 2*CELL] x [2*CELL, 3*CELL]. No implementation runs this product;
    the shape stays so that the figures compare with earlier runs."""
    m, k, n = (
        config["batch_size"] * config["seqlen"],
        2 * config["cell_size"],
        3 * config["cell_size"],
    )
    gflops = matmul_gflops(m, k, n, repeats)
    flops = train_flops_per_char(config)
    return (m, k, n), gflops, flops, gflops * 1e9 / flops


def training_speeds(variants, steps, warmup):
    """Characters per second of the real training step (training.make_train_step) of
    each variant, {key: (config, mixed_precision)}, timed in alternating blocks so that
    all see the same machine load. Returns {key: median chars/s}."""
    runs = {}
    for key, (config, mixed) in variants.items():
        B, T = config["batch_size"], config["seqlen"]
        rng = np.random.default_rng(0)
        x = rng.integers(0, config["alphasize"], size=(B, T)).astype(np.int32)  # [BATCH, SEQLEN]
        keras.utils.set_random_seed(0)
        model = build_model(config, mixed_precision=mixed)
        optimizer = keras.optimizers.Adam(1e-3)
        optimizer.build(model.trainable_variables)
        # the default recipe for what the step reads (clipping, zero-state rows), this
        # model's shapes over it
        step_config = dict(settings.DEFAULTS, **config, seed=0)
        runs[key] = {
            "step": training.make_train_step(model, optimizer, step_config),
            "state": model.zero_state(B),
            "x": x,
            "y": np.roll(x, -1, axis=1),
            "times": [],
        }

    def one_step(run, step, timed):
        t0 = time.perf_counter()
        loss, _, run["state"] = run["step"](
            run["x"], run["y"], run["state"], tf.constant(step, tf.int64), True
        )  # dropout on
        float(loss)  # waits for the step to finish
        if timed:
            run["times"].append(time.perf_counter() - t0)

    block = 5
    for step in range(warmup + steps):
        for run in runs.values():
            if step < warmup:
                one_step(run, step, timed=False)
        if step >= warmup and (step - warmup) % block == 0:
            for run in runs.values():
                for i in range(min(block, warmup + steps - step)):
                    one_step(run, step + i, timed=True)
    return {
        key: config["batch_size"] * config["seqlen"] / float(np.median(runs[key]["times"]))
        for key, (config, _) in variants.items()
    }


def big_alphabet(size):
    """The talk's 98 symbols, then CJK ideographs (from U+4E00) up to size symbols."""
    return txtutils.Alphabet(
        txtutils.ALPHABET + "".join(map(chr, range(0x4E00, 0x4E00 + size - 98)))
    )


def scoring_run(model, folder, chunks, alphabet=txtutils.DEFAULT):
    """rnn_play.py --score (reading the file included, loading the model not),
    compiled: a function that scores a file of random characters of the alphabet,
    written into folder (the speed does not depend on what the text says), and the
    characters it scores: `chunks` whole compiled calls of the model's score_per_call,
    so that a big alphabet's shorter chunk is not timed with a padded last one."""
    chars = chunks * score_per_call(model.alphasize) + 1  # every character but the first scored
    rng = np.random.default_rng(0)
    text = alphabet.decode(rng.integers(1, alphabet.size, size=chars))
    path, first = os.path.join(folder, "text.txt"), os.path.join(folder, "compile.txt")
    with open(path, "w") as f, open(first, "w") as g:
        f.write(text)
        g.write(text[:2])
    scorer = Scorer(model)
    score(scorer, first, alphabet)  # compiles
    return lambda: score(scorer, path, alphabet), chars - 1


def generation_and_scoring(config, one_stream_chars, many_stream_chars, score_chunks):
    """(1-stream generation, 256-stream generation, scoring) in chars/s and the peak
    memory of generation, MB, of config's model; then 1-stream generation and scoring
    with a BIG_ALPHABET of symbols. Scoring is held to 1-stream generation (its floor),
    and the big alphabet to the small, so the four are timed in turn."""
    keras.utils.set_random_seed(0)
    reset_peak_memory()
    model = build_model(config)
    one_stream = generation_run(model, 1, one_stream_chars)
    (gen_256,) = speeds_in_turn([generation_run(model, 256, many_stream_chars)], 3)
    gen_rss = peak_memory_mb()
    big = build_model(dict(config, alphasize=BIG_ALPHABET))
    with tempfile.TemporaryDirectory() as small_dir, tempfile.TemporaryDirectory() as big_dir:
        runs = [
            one_stream,
            scoring_run(model, small_dir, score_chunks),
            generation_run(big, 1, one_stream_chars),
            scoring_run(big, big_dir, score_chunks, big_alphabet(BIG_ALPHABET)),
        ]
        gen_1, score, big_gen_1, big_score = speeds_in_turn(runs, 5)
    return gen_1, gen_256, score, gen_rss, big_gen_1, big_score


def real_run_memory_mb(config, steps, folder, code, limit_mb):
    """The peak resident memory, MB, of a real `rnn_train.py` run (code's): `steps` steps
    of config's model on a text of random characters written into folder, then a
    validation pass over 128 rows of 512 characters, a sample and a checkpoint. The
    step's own figure leaves out what the program adds around it (validation above
    all: whole rows once held 2 GB more), so the program is measured too."""
    rng = np.random.default_rng(0)
    B, T = config["batch_size"], config["seqlen"]
    train_chars, valid_chars = B * T * (steps + 2), txtutils.VALID_MAX_ROWS * 2200
    paths = []
    for name, chars in (("train.txt", train_chars), ("valid.txt", valid_chars)):
        paths.append(os.path.join(folder, name))
        with open(paths[-1], "w") as f:
            f.write(txtutils.DEFAULT.decode(rng.integers(1, config["alphasize"], size=chars)))
    flags = {
        "--data": paths[0],
        "--validation": paths[1],
        "--layers": config["layers"],
        "--cell-size": config["cell_size"],
        "--batch-size": B,
        "--seqlen": T,
        "--max-steps": steps,
        "--checkpoint-dir": os.path.join(folder, "checkpoints"),
        "--log-dir": os.path.join(folder, "log"),
    }
    program = os.path.join(code, "rnn_train.py")
    argv = [sys.executable, program, *(str(a) for kv in flags.items() for a in kv)]
    watched = watch_run(argv, code, limit_mb, os.path.join(folder, "stderr.txt"))
    if watched.stopped:  # a few steps of a small text: a bug, not a figure
        raise RuntimeError(f"rnn_train.py passed the memory limit, {limit_mb:,.0f} MB")
    return watched.peak_mb


def reset_peak_memory():
    """Linux: start counting the peak resident memory again from now."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return max_rss_mb(resource.RUSAGE_SELF)  # not Linux: the peak since the start


def max_rss_mb(who):
    """getrusage's peak resident memory in MB: it counts kilobytes, bytes on macOS."""
    return resource.getrusage(who).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


def parse_args(argv):
    p = cli.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a tiny model, few repeats, small texts: checks that the bench runs, in a minute "
        "or two",
    )
    p.add_argument(
        "--text-sizes",
        metavar="SIZES",
        type=parse_sizes,
        help="sizes of generated training text to time a real rnn_train.py run on, "
        "comma-separated; K, M, G are powers of 1000 bytes "
        f"(default {TEXT_SIZES}; with --quick {QUICK_TEXT_SIZES})",
    )
    p.add_argument(
        "--file-counts",
        metavar="COUNTS",
        type=lambda text: [int(n) for n in text.split(",")],
        help="the same text (10 MB; --quick: 300 kB) cut into this many files, comma-"
        f"separated, for a real run each (default {FILE_COUNTS}; --quick {QUICK_FILE_COUNTS})",
    )
    p.add_argument(
        "--code",
        metavar="DIR",
        type=os.path.abspath,
        default=HERE,
        help="the checkout whose rnn_train.py the real runs run, e.g. a git worktree of an "
        "older commit, for before-and-after figures; the other figures, the encoding "
        "speed included, are this checkout's (default: the folder of bench.py)",
    )
    p.add_argument(
        "--memory-limit",
        metavar="GB",
        type=float,
        default=16,
        help="kill a real run whose resident memory passes this many GB (of 1024 MB), "
        "reported as 'over GB (stopped)', before it takes the machine down (default 16)",
    )
    args = p.parse_args(argv)
    if args.text_sizes is None:
        args.text_sizes = parse_sizes(QUICK_TEXT_SIZES if args.quick else TEXT_SIZES)
    if args.file_counts is None:
        counts = QUICK_FILE_COUNTS if args.quick else FILE_COUNTS
        args.file_counts = [int(n) for n in counts.split(",")]
    if not os.path.isfile(os.path.join(args.code, "rnn_train.py")):
        p.error(f"--code {args.code} holds no rnn_train.py")
    if not args.memory_limit > 0:
        p.error("--memory-limit must be more than 0 GB")
    return args


def measure(config, quick, text_sizes, file_counts, code, limit_gb):
    """Every figure, in an order that keeps each peak memory figure its own:
    a dict of the JSON's figures, and the training limit's (shape, FLOPs per char,
    chars/s) for the table. text_sizes, code and limit_gb: text_figures'."""
    steps, warmup, repeats = (5, 2, 3) if quick else (30, 5, 20)
    run_steps = 3 if quick else 20
    one_stream_chars, many_stream_chars = (128, 64) if quick else (2048, 256)
    score_chunks = 1 if quick else 5
    limit_mb = limit_gb * 1024
    # the text rows run the default model, as a user does; --quick, the tiny one: seconds
    text_model = flags_of_model(config) if quick else []

    # First the real runs, children, while this process is small: a run on a big text may
    # need much of the machine's memory. (Their peaks are read from /proc, so that this
    # process's own size does not count, as it does in getrusage's figure for a child.)
    valid_bytes = QUICK_VALID_BYTES if quick else VALID_BYTES
    cache_dir = takes_flag(code, "--cache-dir")  # an older checkout's has none
    texts = text_figures(text_sizes, code, text_model, cache_dir, limit_mb, valid_bytes)
    files_bytes = QUICK_FILES_TEXT_BYTES if quick else FILES_TEXT_BYTES
    texts.update(
        file_count_figures(
            file_counts, files_bytes, code, text_model, cache_dir, limit_mb, valid_bytes
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        run_rss = real_run_memory_mb(config, run_steps, tmp, code, limit_mb)
    shape, gflops, flops, limit = training_limit(config, repeats)
    gen_1, gen_256, score, gen_rss, big_gen_1, big_score = generation_and_scoring(
        config, one_stream_chars, many_stream_chars, score_chunks
    )
    reset_peak_memory()
    speeds = training_speeds({m: (config, m) for m in (False, True)}, steps, warmup)
    train_rss = peak_memory_mb()
    # a CJK corpus: thousands of symbols widen the input kernel and the logits; timed
    # beside the small alphabet's again, so that each ratio is of one machine load
    big = dict(config, alphasize=BIG_ALPHABET)
    variants = {
        (a, m): (c, m) for a, c in ((98, config), (BIG_ALPHABET, big)) for m in (False, True)
    }
    both = training_speeds(variants, steps, warmup)

    figures = {
        "matmul_gflops": round(gflops, 1),
        "train_chars_per_s": round(speeds[False]),
        "train_fraction_of_limit": round(speeds[False] / limit, 3),
        "train_bf16_chars_per_s": round(speeds[True]),
        "train_5000_symbols_chars_per_s": round(both[BIG_ALPHABET, False]),
        "train_5000_symbols_ratio": round(both[BIG_ALPHABET, False] / both[98, False], 3),
        "train_bf16_5000_symbols_chars_per_s": round(both[BIG_ALPHABET, True]),
        "train_bf16_5000_symbols_ratio": round(both[BIG_ALPHABET, True] / both[98, True], 3),
        "generate_1_5000_symbols_chars_per_s": round(big_gen_1),
        "score_5000_symbols_chars_per_s": round(big_score),
        "generate_1_chars_per_s": round(gen_1),
        "generate_256_chars_per_s": round(gen_256),
        "score_chars_per_s": round(score),
        "train_peak_rss_mb": round(train_rss),
        "generate_peak_rss_mb": round(gen_rss),
        "train_run_peak_rss_mb": round(run_rss),
        **texts,
    }
    return figures, (shape, flops, limit)


def table(figures, config, shape, flops, limit):
    """The figures as rows of (what, how much), read from the JSON's figures so that
    both show the same, with the ratio of each to the figure it is compared with."""
    m, k, n = shape
    f = figures
    fp32, bf16 = f["train_chars_per_s"], f["train_bf16_chars_per_s"]
    gen_1, score = f["generate_1_chars_per_s"], f["score_chars_per_s"]
    big_gen_1, big_score = (
        f["generate_1_5000_symbols_chars_per_s"],
        f["score_5000_symbols_chars_per_s"],
    )
    model = f"{config['layers']}x{config['cell_size']} GRU"
    model += f", batch {config['batch_size']} x {config['seqlen']}"
    return [
        (f"fp32 matmul [{m}x{k}] x [{k}x{n}]", f"{f['matmul_gflops']:.0f} GFLOP/s"),
        (
            "= training limit at the fixed FLOP count",
            f"{limit:,.0f} chars/s ({flops / 1e6:.1f} MFLOP/char)",
        ),
        (
            f"training, float32 ({model})",
            f"{fp32:,.0f} chars/s = {f['train_fraction_of_limit']:.2f} of the limit",
        ),
        ("training, --mixed-precision", f"{bf16:,.0f} chars/s = {bf16 / fp32:.2f}x float32"),
        (
            f"training, float32, {BIG_ALPHABET:,}-symbol alphabet",
            f"{f['train_5000_symbols_chars_per_s']:,.0f} chars/s = "
            f"{f['train_5000_symbols_ratio']:.2f}x 98 symbols (timed in turn)",
        ),
        (
            f"training, --mixed-precision, {BIG_ALPHABET:,} symbols",
            f"{f['train_bf16_5000_symbols_chars_per_s']:,.0f} chars/s = "
            f"{f['train_bf16_5000_symbols_ratio']:.2f}x 98 symbols (timed in turn)",
        ),
        ("generation, 1 stream", f"{gen_1:,.0f} chars/s"),
        ("generation, 256 streams", f"{f['generate_256_chars_per_s']:,.0f} chars/s in all"),
        ("scoring (rnn_play.py --score)", f"{score:,.0f} chars/s = {score / gen_1:.1f}x 1 stream"),
        (
            f"generation, 1 stream, {BIG_ALPHABET:,} symbols",
            f"{big_gen_1:,.0f} chars/s = {big_gen_1 / gen_1:.2f}x 98 symbols",
        ),
        (
            f"scoring, {BIG_ALPHABET:,} symbols",
            f"{big_score:,.0f} chars/s = {big_score / score:.2f}x 98 symbols",
        ),
        ("peak memory, training step", f"{f['train_peak_rss_mb']:,.0f} MB"),
        ("peak memory, rnn_train.py run (validation on)", f"{f['train_run_peak_rss_mb']:,.0f} MB"),
        ("peak memory, generation", f"{f['generate_peak_rss_mb']:,.0f} MB"),
        *text_rows(f),
    ]


def text_rows(f):
    """The large-text rows, from the JSON's figures: for each size, a run's peak memory,
    seconds to its first step and to its end, the same for its --resume; then the
    encoding speed of the largest text."""
    limit = f"over {f['memory_limit_gb']:g} GB (stopped)"

    def run(key):
        if f[key + "_stopped"] is None:
            return "not run: the first run was stopped"
        memory = limit if f[key + "_stopped"] else f"{f[key + '_peak_rss_mb']:,} MB"
        first = f[key + "_first_step_s"]
        first = "no step" if first is None else f"{first:.1f} s"
        return f"{memory} / {first} / {f[key + '_run_s']:.1f} s"

    rows = []
    for size in f["text_sizes_bytes"]:
        key, label = text_key(size), size_label(size)
        rows.append((f"text {label}: peak memory / first step / whole run", run(key)))
        rows.append((f"text {label}, --resume: the same", run(key + "_resume")))
    largest = size_label(f["text_sizes_bytes"][-1])
    rows.append((f"encoding (read, count, encode) {largest}", f"{f['encode_mb_per_s']:,.1f} MB/s"))
    label = size_label(f["file_count_text_bytes"])
    for count in f["file_counts"]:
        key = f"files_{count}"
        rows.append((f"text {label} in {count:,} files: the same", run(key)))
        rows.append((f"text {label} in {count:,} files, --resume: the same", run(key + "_resume")))
    return rows


def main(argv=None):
    args = parse_args(argv)
    config = QUICK if args.quick else DEFAULT
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    print(
        f"{cpu_name()}, {os.cpu_count()} cores; TensorFlow {tf.__version__} on the {device}"
        f"{' (--quick: a tiny model)' if args.quick else ''}",
        flush=True,
    )
    if args.code != HERE:
        print(f"rnn_train.py runs: {args.code}'s", flush=True)
    figures, (shape, flops, limit) = measure(
        config, args.quick, args.text_sizes, args.file_counts, args.code, args.memory_limit
    )
    rows = table(figures, config, shape, flops, limit)
    width = max(len(what) for what, _ in rows)
    for what, value in rows:
        print(f"{what:<{width}}  {value}")
    if args.json:
        figures.update(
            cpu=cpu_name(),
            tensorflow=tf.__version__,
            quick=args.quick,
            train_flops_per_char=flops,
            code=args.code,
        )
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
