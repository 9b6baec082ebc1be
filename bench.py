"""Measure what a user waits for: training speed against this machine's own matmul
limit, generation and scoring speed, and peak memory, timed in one process; then the
peak memory of a real rnn_train.py run, validation included, in a child process.

    python bench.py                    # the table (make bench)
    python bench.py --json bench.json  # and the same figures as JSON
    python bench.py --quick            # a tiny model, seconds: checks the bench itself runs

Every speed is a median over repeated timings after a warm-up; run it on an idle
machine, and compare figures only within one run.
"""

import tf_quiet  # noqa: F401, I001  (first: quiets TensorFlow's logging before it loads)

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

import cli
import settings
import training
import txtutils
from generate import SCORE_CHUNK, Scorer, score
from hardware import cpu_name
from model import build_model
from timing import generation_run, median_time, speeds_in_turn

DEFAULT = {
    "alphasize": 98,
    **{k: settings.DEFAULTS[k] for k in ("cell_size", "layers", "dropout", "batch_size", "seqlen")},
}
QUICK = dict(DEFAULT, cell_size=32, layers=2, batch_size=8, seqlen=10)
BIG_ALPHABET = 5000  # symbols: a Chinese or Japanese corpus has thousands


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


def training_speeds(config, steps, warmup, precisions=(False, True)):
    """Characters per second of the real training step (training.make_train_step),
    float32 and mixed precision, timed in alternating blocks so that both see the
    same machine load. Returns {mixed_precision: median chars/s}."""
    B, T = config["batch_size"], config["seqlen"]
    rng = np.random.default_rng(0)
    x = rng.integers(0, config["alphasize"], size=(B, T)).astype(np.int32)  # [BATCH, SEQLEN]
    y = np.roll(x, -1, axis=1)
    runs = {}
    for mixed in precisions:
        keras.utils.set_random_seed(0)
        model = build_model(config, mixed_precision=mixed)
        optimizer = keras.optimizers.Adam(1e-3)
        optimizer.build(model.trainable_variables)
        step_config = dict(config, seed=0, clip_norm=settings.DEFAULTS["clip_norm"])
        runs[mixed] = {
            "step": training.make_train_step(model, optimizer, step_config),
            "state": model.zero_state(B),
            "times": [],
        }

    def one_step(run, step, timed):
        t0 = time.perf_counter()
        loss, _, run["state"] = run["step"](
            x, y, run["state"], tf.constant(step, tf.int64), True
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
    return {mixed: B * T / float(np.median(run["times"])) for mixed, run in runs.items()}


def scoring_run(model, folder, chars):
    """rnn_play.py --score (reading the file included, loading the model not),
    compiled: a function that scores a file of `chars` random characters of the
    alphabet, written into folder (the speed does not depend on what the text says),
    and the characters it scores."""
    rng = np.random.default_rng(0)
    text = txtutils.decode(rng.integers(1, txtutils.ALPHASIZE, size=chars))
    path, first = os.path.join(folder, "text.txt"), os.path.join(folder, "compile.txt")
    with open(path, "w") as f, open(first, "w") as g:
        f.write(text)
        g.write(text[:2])
    scorer = Scorer(model)
    score(scorer, first)  # compiles
    return lambda: score(scorer, path), chars - 1


def generation_and_scoring(config, one_stream_chars, many_stream_chars, score_chars):
    """(1-stream generation, 256-stream generation, scoring) in chars/s and the peak
    memory of generation, MB. Scoring is held to 1-stream generation (its floor), so
    the two are timed in turn."""
    keras.utils.set_random_seed(0)
    reset_peak_memory()
    model = build_model(config)
    one_stream = generation_run(model, 1, one_stream_chars)
    (gen_256,) = speeds_in_turn([generation_run(model, 256, many_stream_chars)], 3)
    gen_rss = peak_memory_mb()
    with tempfile.TemporaryDirectory() as tmp:
        gen_1, score = speeds_in_turn([one_stream, scoring_run(model, tmp, score_chars)], 5)
    return gen_1, gen_256, score, gen_rss


def real_run_memory_mb(config, steps, folder):
    """The peak resident memory, MB, of a real `rnn_train.py` run: `steps` steps of
    config's model on a text of random characters written into folder, then a
    validation pass over 256 rows of 1,024 characters, a sample and a checkpoint. The
    step's own figure leaves out what the program adds around it (validation above
    all: whole rows once held 2 GB more), so the program is measured too."""
    rng = np.random.default_rng(0)
    B, T = config["batch_size"], config["seqlen"]
    train_chars, valid_chars = B * T * (steps + 2), training.VALID_ROWS * 1100
    paths = []
    for name, chars in (("train.txt", train_chars), ("valid.txt", valid_chars)):
        paths.append(os.path.join(folder, name))
        with open(paths[-1], "w") as f:
            f.write(txtutils.decode(rng.integers(1, config["alphasize"], size=chars)))
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
    program = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rnn_train.py")
    argv = [sys.executable, program, *(str(a) for kv in flags.items() for a in kv)]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"rnn_train.py failed: {result.stderr.strip()[-500:]}")
    # the largest peak of the children waited for: this one, the only child
    return max_rss_mb(resource.RUSAGE_CHILDREN)


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
        help="a tiny model and few repeats: checks that the bench runs, in seconds",
    )
    return p.parse_args(argv)


def measure(config, quick):
    """Every figure, in an order that keeps each peak memory figure its own:
    a dict of the JSON's figures, and the training limit's (shape, FLOPs per char,
    chars/s) for the table."""
    steps, warmup, repeats = (5, 2, 3) if quick else (30, 5, 20)
    run_steps = 3 if quick else 20
    one_stream_chars, many_stream_chars = (128, 64) if quick else (2048, 256)
    score_chars = 2000 if quick else 5 * SCORE_CHUNK

    # First, while this process is small: getrusage's peak for children is the larger of
    # the child's own and this process's size when it forked the child
    with tempfile.TemporaryDirectory() as tmp:
        run_rss = real_run_memory_mb(config, run_steps, tmp)
    shape, gflops, flops, limit = training_limit(config, repeats)
    gen_1, gen_256, score, gen_rss = generation_and_scoring(
        config, one_stream_chars, many_stream_chars, score_chars
    )
    reset_peak_memory()
    speeds = training_speeds(config, steps, warmup)
    train_rss = peak_memory_mb()
    # a CJK corpus: thousands of symbols widen the input kernel and the logits
    big = dict(config, alphasize=BIG_ALPHABET)
    (big_speed,) = training_speeds(big, steps, warmup, precisions=(False,)).values()

    figures = {
        "matmul_gflops": round(gflops, 1),
        "train_chars_per_s": round(speeds[False]),
        "train_fraction_of_limit": round(speeds[False] / limit, 3),
        "train_bf16_chars_per_s": round(speeds[True]),
        "train_5000_symbols_chars_per_s": round(big_speed),
        "generate_1_chars_per_s": round(gen_1),
        "generate_256_chars_per_s": round(gen_256),
        "score_chars_per_s": round(score),
        "train_peak_rss_mb": round(train_rss),
        "generate_peak_rss_mb": round(gen_rss),
        "train_run_peak_rss_mb": round(run_rss),
    }
    return figures, (shape, flops, limit)


def table(figures, config, shape, flops, limit):
    """The figures as rows of (what, how much), read from the JSON's figures so that
    both show the same, with the ratio of each to the figure it is compared with."""
    m, k, n = shape
    f = figures
    fp32, bf16 = f["train_chars_per_s"], f["train_bf16_chars_per_s"]
    big = f["train_5000_symbols_chars_per_s"]
    gen_1, score = f["generate_1_chars_per_s"], f["score_chars_per_s"]
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
            f"{big:,.0f} chars/s = {big / fp32:.2f}x 98 symbols",
        ),
        ("generation, 1 stream", f"{gen_1:,.0f} chars/s"),
        ("generation, 256 streams", f"{f['generate_256_chars_per_s']:,.0f} chars/s in all"),
        ("scoring (rnn_play.py --score)", f"{score:,.0f} chars/s = {score / gen_1:.1f}x 1 stream"),
        ("peak memory, training step", f"{f['train_peak_rss_mb']:,.0f} MB"),
        ("peak memory, rnn_train.py run (validation on)", f"{f['train_run_peak_rss_mb']:,.0f} MB"),
        ("peak memory, generation", f"{f['generate_peak_rss_mb']:,.0f} MB"),
    ]


def main(argv=None):
    args = parse_args(argv)
    config = QUICK if args.quick else DEFAULT
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    print(
        f"{cpu_name()}, {os.cpu_count()} cores; TensorFlow {tf.__version__} on the {device}"
        f"{' (--quick: a tiny model)' if args.quick else ''}",
        flush=True,
    )
    figures, (shape, flops, limit) = measure(config, args.quick)
    rows = table(figures, config, shape, flops, limit)
    width = max(len(what) for what, _ in rows)
    for what, value in rows:
        print(f"{what:<{width}}  {value}")
    if args.json:
        figures.update(
            cpu=cpu_name(), tensorflow=tf.__version__, quick=args.quick, train_flops_per_char=flops
        )
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
