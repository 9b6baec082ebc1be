"""Check this project's GPU path on this machine, in one command: `make gpu-check`.

This project has no machine with a GPU, so what only a GPU runs is checked here, by
the first user who has one, after installing the CUDA build (docs/gpu.md):

- the device: TensorFlow's build, the GPUs and their compute capability;
- cuDNN: the training step's graph must hold cuDNN's GRU op (CudnnRNNV3), and the
  graphs of generation and scoring must not (XLA cannot compile it);
- Keras' layers (cuDNN on a GPU) against the fused path, from the same weights, in
  float32 and in mixed precision: one batch's logits and gradients, then the weights
  after STEPS training steps, the same within what the arithmetic allows;
- generation and scoring from the model trained through Keras' layers;
- the time of a training step of the default model, float32 and mixed precision.

It prints the figures and a verdict to paste into a bug report, and exits 1 if a
check failed. Without a GPU it says so and checks what it can (CI runs it so:
gpu_check_test.py).

    python -m tools.gpu_check            # the default model (3 x 512, batch 200 x 30)
    python -m tools.gpu_check --quick    # a tiny model, in seconds
"""

from charrnn import tf_quiet  # noqa: F401, I001  (first: quiets TensorFlow's logging before it loads)

import math
import os
import platform
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import txtutils
from charrnn import cli, settings, training
from charrnn.generate import Generator, Scorer
from charrnn.hardware import cpu_name
from charrnn.model import build_model, loss_and_accuracy, training_dtype

PROG = "gpu_check.py"
STEPS = 50  # training steps compared between the two paths
TIMED = 10  # training steps timed, after as many of warm-up
DEFAULT = {
    "alphasize": txtutils.ALPHASIZE,
    **{k: settings.DEFAULTS[k] for k in ("cell_size", "layers", "seqlen")},
    "batch_size": settings.auto_batch_size(txtutils.ALPHASIZE, on_gpu=True),
}
QUICK = dict(DEFAULT, cell_size=32, layers=2, batch_size=8, seqlen=10)
QUICK_STEPS, QUICK_TIMED = 10, 3
# Keras' layers against the fused path after STEPS steps: |w_keras - w_fused| over
# |w_fused - w_start| (all weights as one vector). The same equations give the same
# weights up to rounding, which the training amplifies as the two runs drift apart.
# Measured on a CPU, default model, 50 steps: 1.6e-5 in float32 (TF32 is off for the
# comparison), 0.0019 in float16, 0.25 in bfloat16 (Keras' layers keep their gates
# and states in 16 bits on a CPU; no GPU trains so). A wrong equation (a swapped gate,
# a lost bias) gives ~1, the size of the change itself.
LIMITS = {"float32": 1e-3, "float16": 0.05, "bfloat16": 0.6}
# One batch's logits and gradients through both paths: the largest difference over
# the largest value, of the logits and of each weight's gradient. The same function
# in float32 differs by the summation order alone; in 16 bits by roundings (u =
# 2**-11 in float16, 2**-8 in bfloat16). Measured on a CPU, default model: 2.1e-6 in
# float32, 12u in float16, 2.8u in bfloat16.
GRADIENT_LIMITS = {"float32": 1e-4, "float16": 32 * 2.0**-11, "bfloat16": 32 * 2.0**-8}
# the learning rate warms up over the steps compared (rnn_train's over its first
# WARMUP), then stays: from the start, the peak rate makes the runs drift apart faster
RECIPE = {
    "learning_rate": settings.LONG_PEAK,  # the peak LIMITS were measured at
    "schedule": "constant",
    "warmup_share": settings.DEFAULTS["warmup_share"],
}
CUDNN_OPS = ("CudnnRNN", "CudnnRNNV2", "CudnnRNNV3")  # forward; and backward:
CUDNN_GRAD_OPS = ("CudnnRNNBackprop", "CudnnRNNBackpropV2", "CudnnRNNBackpropV3")


def parse_args(argv):
    p = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny model: seconds, not minutes")
    p.add_argument(
        "--steps", type=cli.positive_int, help=f"training steps compared (default {STEPS})"
    )
    return p.parse_args(argv)


class Report:
    """The lines to paste, and whether every check passed."""

    def __init__(self):
        self.failed = []

    def line(self, text):
        print(text, flush=True)

    def check(self, name, ok, detail):
        """One check's outcome: ok True (passed), False (failed) or None (skipped)."""
        mark = {True: "ok", False: "FAIL", None: "skipped"}[ok]
        self.line(f"  [{mark:7}] {name}: {detail}")
        if ok is False:
            self.failed.append(name)


# ---------------------------------------------------------------------------
# The device


def describe_machine(report):
    build = tf.sysconfig.get_build_info()
    cuda = "CUDA build" if build.get("is_cuda_build") else "CPU-only build"
    versions = f"CUDA {build.get('cuda_version')}, cuDNN {build.get('cudnn_version')}"
    report.line(f"TensorFlow {tf.__version__} ({cuda}; {versions}), Keras {keras.__version__}")
    report.line(f"Python {platform.python_version()}, {platform.platform()}")
    report.line(f"CPU: {cpu_name()}, {os.cpu_count()} cores")
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        capability = ".".join(map(str, details.get("compute_capability", ("?",))))
        report.line(f"GPU: {details.get('device_name', gpu.name)}, compute capability {capability}")
    if not gpus:
        report.line(
            "GPU: none found - the checks run on the CPU; what needs a GPU is skipped"
            + ("" if build.get("is_cuda_build") else " (this is the CPU-only build)")
        )
    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    report.line(f"TF32 matmuls: {'on' if tf32 else 'off'} (float32 timings use them)")
    return bool(gpus)


def graph_ops(function, *args):
    """The op types of a tf.function's graph traced for args, those of the functions
    it calls included (a loop's body, a gradient)."""
    graph = function.get_concrete_function(*args).graph.as_graph_def()
    ops = {node.op for node in graph.node}
    for f in graph.library.function:
        ops.update(node.op for node in f.node_def)
    return ops


# ---------------------------------------------------------------------------
# Training through both paths


def practice_text(chars, seed=0):
    """Codes of simple English-like lines: something to learn in a few steps."""
    rng = np.random.default_rng(seed)
    names, verbs = ["ROMEO", "JULIET", "NURSE"], ["loves", "sees", "calls", "greets"]
    lines, length = [], 0
    while length < chars:
        line = f"{rng.choice(names)}: the {rng.choice(['moon', 'sun'])} {rng.choice(verbs)}.\n"
        lines.append(line)
        length += len(line)
    return txtutils.DEFAULT.encode("".join(lines))


def twins(config, mixed_precision):
    """The same weights in a model trained through the fused path and in one trained
    through Keras' layers (cuDNN on a GPU)."""
    keras.utils.set_random_seed(0)
    # dropout as training's defaults apply it (none on the characters read)
    drops = {k: settings.DEFAULTS[k] for k in ("dropout", "char_dropout")}
    config = dict(config, **drops)
    fused = build_model(config, fused=True, mixed_precision=mixed_precision)
    layers = build_model(config, fused=False, mixed_precision=mixed_precision)
    for a, b in zip(fused.weights, layers.weights, strict=True):
        b.assign(a)
    return fused, layers


class Trainer:
    """A model with its optimizer and training.make_train_step, as training runs it:
    dropout and clipping on, the learning rate warming up over `warmup` steps."""

    def __init__(self, model, config, text, warmup=1):
        self.model, self.config = model, config
        self.recipe = dict(RECIPE, warmup=warmup)
        self.optimizer = keras.optimizers.Adam(RECIPE["learning_rate"])
        self.optimizer.build(model.trainable_variables)
        # the default recipe for what the step reads (clipping, zero-state rows), this
        # model's shapes over it
        step_config = dict(settings.DEFAULTS, **config, seed=0)
        self.step = training.make_train_step(model, self.optimizer, step_config)
        self.batches = txtutils.minibatch_sequencer(
            text, config["batch_size"], config["seqlen"], epochs=10**6
        )
        self.state = model.zero_state(config["batch_size"])  # [BATCH, LAYERS*CELL]
        self.steps, self.losses = 0, []

    def train(self, steps):
        for _ in range(steps):
            x, y, _ = next(self.batches)
            rate = training.learning_rate_at(self.steps, 0.0, self.recipe)
            self.optimizer.learning_rate.assign(rate)
            loss, _, self.state = self.step(
                x, y, self.state, tf.constant(self.steps, tf.int64), True
            )
            self.losses.append(float(loss))  # waits for the step to end
            self.steps += 1

    def weights(self):
        return np.concatenate([v.numpy().ravel() for v in self.model.trainable_variables])


def compare_paths(report, config, steps, mixed_precision, text):
    """One batch's gradients, then STEPS training steps, through both paths from the
    same weights: the same within what rounding allows? Returns their Trainers
    (fused, Keras' layers), or None if they could not train."""
    dtype = training_dtype(mixed_precision).name
    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    # TF32 (on by default on Ampere and newer) rounds float32 matmuls to 10 bits, which
    # would hide a float32 difference below that: off for the comparison
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        fused, layers = twins(config, mixed_precision)
        trainers = tuple(Trainer(m, config, text, warmup=steps) for m in (fused, layers))
        compare_gradients(report, fused, layers, config, text, dtype)
        start = trainers[0].weights()
        for trainer in trainers:
            trainer.train(steps)
    except Exception as e:  # whatever breaks, the verdict must still be printed
        report.check(f"training, {dtype}", False, f"training failed: {one_line(e)}")
        return None
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(tf32)
    w_fused, w_keras = (t.weights() for t in trainers)
    drift = float(np.linalg.norm(w_keras - w_fused) / np.linalg.norm(w_fused - start))
    (fused_losses, keras_losses) = (t.losses for t in trainers)
    report.check(
        f"training, {dtype}",
        math.isfinite(drift) and drift <= LIMITS[dtype],
        f"{steps} steps through Keras' layers and the fused path from the same weights: "
        f"the weights differ by {drift:.2g} of their change (limit {LIMITS[dtype]:g}); "
        f"loss {fused_losses[0]:.3f} -> {fused_losses[-1]:.3f} (fused), "
        f"{keras_losses[0]:.3f} -> {keras_losses[-1]:.3f} (Keras' layers)",
    )
    return trainers


def compare_gradients(report, fused, layers, config, text, dtype):
    """One batch's logits and weight gradients (dropout on) through both paths, each
    compiled as the training step is."""
    x, y, _ = next(txtutils.minibatch_sequencer(text, config["batch_size"], config["seqlen"], 1))
    shape = [config["batch_size"], fused.state_size]
    state = tf.random.stateless_normal(shape, [0, 1]) * 0.5  # [BATCH, LAYERS*CELL]
    (logits_f, grads_f), (logits_k, grads_k) = (
        logits_and_gradients(model, call, x, y, state)
        for model, call in ((fused, fused), (layers, layers.keras_call))
    )
    errors = [relative_error(logits_k, logits_f)]
    errors += [relative_error(k, f) for k, f in zip(grads_k, grads_f, strict=True)]
    worst = max(errors)
    report.check(
        f"gradients, {dtype}",
        math.isfinite(worst) and worst <= GRADIENT_LIMITS[dtype],
        f"one batch through Keras' layers and the fused path: logits and gradients "
        f"differ by {worst:.2g} of their largest value at most (limit "
        f"{GRADIENT_LIMITS[dtype]:.2g})",
    )


def logits_and_gradients(model, call, x, y, state):
    @tf.function(autograph=False)
    def run(x, y, state):
        with tf.GradientTape() as tape:
            seed = tf.constant([0, 1], tf.int64)
            logits, _ = call(x, state, training=True, dropout_seed=seed)
            loss = loss_and_accuracy(logits, y)[0]
        return logits, tape.gradient(loss, model.trainable_variables)

    logits, grads = run(x, y, state)
    return logits.numpy(), [tf.convert_to_tensor(g).numpy() for g in grads]


def relative_error(got, want):
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def check_cudnn(report, trainer, gpu):
    """The training step through Keras' layers: cuDNN's op in its graph on a GPU."""
    x = np.zeros([trainer.config["batch_size"], trainer.config["seqlen"]], np.int32)
    step = tf.constant(0, tf.int64)
    ops = graph_ops(trainer.step, x, x, trainer.state, step, True)
    found = sorted(ops.intersection(CUDNN_OPS + CUDNN_GRAD_OPS))
    if gpu:
        detail = (
            f"the training step runs Keras' GRU through {', '.join(found)}"
            if ops.intersection(CUDNN_OPS)
            else "no cuDNN op in the training step: Keras' GRU falls back to its slow "
            "loop (see model.gru_layer for the settings cuDNN needs)"
        )
        report.check("cuDNN", bool(ops.intersection(CUDNN_OPS)), detail)
    else:
        report.check("cuDNN", None, "no GPU: Keras' GRU runs its generic loop here")


# ---------------------------------------------------------------------------
# Generation, scoring, speed


def check_inference(report, model, text):
    """Generation and scoring from a model trained through Keras' layers (inference
    runs the fused path on every device): no cuDNN op, XLA compiles, figures sane."""
    codes = tf.TensorSpec([None], tf.int32)
    state = tf.TensorSpec([None, model.state_size], tf.float32)
    ops = graph_ops(tf.function(model.step, autograph=False), codes, state)
    ops |= graph_ops(model.infer, tf.zeros([1, 2], tf.int32), model.zero_state(1))
    in_graph = sorted(ops.intersection(CUDNN_OPS + CUDNN_GRAD_OPS))
    report.check(
        "inference graphs",
        not in_graph,
        f"cuDNN ops in generation or scoring: {', '.join(in_graph)}"
        if in_graph
        else "generation and scoring run the fused cell (no cuDNN op)",
    )
    try:
        generator = Generator(model, topn=2)
        generator.start(txtutils.DEFAULT.encode("\n")[None], seed=0)
        generator.next(100)  # compiles
        t0 = time.perf_counter()
        sample = generator.next(100)[0]
        speed = 100 / (time.perf_counter() - t0)
        scorer = Scorer(model, per_call=1000)
        scorer.feed(text)
        nats, accuracy, chars = scorer.finish()
    except Exception as e:  # XLA failing to compile the loop, say: report it, go on
        report.check("generation and scoring", False, one_line(e))
        return
    valid = bool(np.all((sample >= 0) & (sample < model.alphasize)))
    report.check(
        "generation",
        valid,
        f"{speed:,.0f} chars/s for one stream; {txtutils.DEFAULT.decode(sample[:40])!r}",
    )
    uniform = math.log(model.alphasize)
    report.check(
        "scoring",
        math.isfinite(nats) and nats < uniform,
        f"{nats / math.log(2):.3f} bits/char, accuracy {accuracy:.3f} over {chars:,} "
        f"characters (a uniform guess: {uniform / math.log(2):.2f})",
    )


def time_steps(trainer, steps):
    """Median seconds of a training step (the trainer is warm: it has trained)."""
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.train(1)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def one_line(error):
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


# ---------------------------------------------------------------------------


def run_checks(report, config, steps, timed, gpu):
    """Every check, in order; returns {type: median seconds of a training step}."""
    text = practice_text(config["batch_size"] * config["seqlen"] * (steps + timed + 1))
    speeds = {}
    for mixed in (False, True):
        trainers = compare_paths(report, config, steps, mixed, text)
        if trainers is None:
            continue
        if not mixed:
            check_cudnn(report, trainers[1], gpu)
            check_inference(report, trainers[1].model, practice_text(5000, seed=1))
        else:
            # set by model.py for cuDNN's float16 GRU: float32 arithmetic on 16-bit data
            compute = os.environ.get("TF_FP16_RNN_USE_FP32_COMPUTE", "unset")
            report.line(f"  [info   ] TF_FP16_RNN_USE_FP32_COMPUTE={compute}")
        own = trainers[1] if gpu else trainers[0]  # the path training takes here
        speeds[own.model.train_dtype.name] = time_steps(own, timed)
    return speeds


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    config = QUICK if args.quick else DEFAULT
    steps = args.steps or (QUICK_STEPS if args.quick else STEPS)
    timed = QUICK_TIMED if args.quick else TIMED
    report = Report()
    report.line(f"{PROG}: the GPU path of this project on this machine; paste from here on")
    gpu = describe_machine(report)
    shape = f"{config['layers']} x {config['cell_size']} GRU"
    report.line(f"model: {shape}, batch {config['batch_size']} x {config['seqlen']}")
    speeds = run_checks(report, config, steps, timed, gpu)
    chars = config["batch_size"] * config["seqlen"]
    figures = [f"{t} {s * 1000:.1f} ms ({chars / s:,.0f} chars/s)" for t, s in speeds.items()]
    report.line(f"  [info   ] training step (median of {timed}): {'; '.join(figures)}")
    where = "" if gpu else " (no GPU: checked on the CPU only)"
    if report.failed:
        report.line(f"verdict: FAIL - {', '.join(report.failed)}{where}")
        return 1
    report.line(f"verdict: PASS - every check that could run passed{where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
