"""Train a character-level language model: stacked GRU cells unrolled over SEQLEN
characters, with the RNN state carried from each batch to the next.

    python rnn_train.py                       # Shakespeare, the talk's settings
    python rnn_train.py --data 'src/**/*.py'  # any text
    python rnn_train.py --resume              # continue the newest run
"""

import tf_quiet  # noqa: F401, I001  (first: quiets TensorFlow's logging before it loads)

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import ckpt
import cli
import txtutils
from model import Generator, build_model, loss_and_accuracy, mixed_precision_dtype, on_gpu

# ---------------------------------------------------------------------------
# Hyperparameters, each one a flag below: the talk's model, a faster-learning recipe
# (--recipe talk gives back the talk's own; README "Quality" shows what each change buys).
SEQLEN = 30  # characters unrolled: the reach of backpropagation through time
BATCH_SIZE = 200  # rows per batch, each row its own contiguous slice of the text
CELL_SIZE = 512  # GRU units per layer
LAYERS = 3  # stacked GRU cells: depth for higher-order structure
LEARNING_RATE = 0.003  # Adam's peak step size: 3x the talk's, made safe by warm-up and clipping
WARMUP = 100  # steps over which the learning rate rises from 0 to its peak
SCHEDULE = "cosine"  # then down to MIN_LR x the peak at the run's end (or "constant")
MIN_LR = 0.1  # where the cosine schedule ends, as a fraction of the peak
CLIP_NORM = 1.0  # gradients rescaled to this global norm at most: no early blow-ups
DROPOUT = 0.1  # fraction dropped on each layer's input and the output, in training
DROPOUT_FROM = 0.5  # fraction of the run done before dropout starts: early on, it only slows
EPOCHS = 10  # passes over the training text
SEED = 0  # same seed, same initial weights and dropout masks
MIXED_PRECISION = "auto"  # bfloat16 matmuls where the hardware has them: ~1.5x the speed
# Intervals, in batches.
LOG_EVERY = 10  # training loss and accuracy (averaged over the interval)
EVAL_EVERY = 100  # validation loss and accuracy
SAMPLE_EVERY = 500  # a generated sample on the console and in TensorBoard
SAVE_EVERY = 200  # a checkpoint; the TensorBoard log is written out with it
KEEP = 5  # checkpoints kept per run, newest first
LOSS_SCALE = 1024  # float16 only (older GPUs): keeps small gradients from rounding to 0
COLLECTIVE_TIMEOUT = 60  # seconds: multiworker, a worker silent this long is taken for dead
# Fixed choices.
SAMPLE_LENGTH = 600  # characters in each sample
SAMPLE_TOPN = 10  # sample among the 10 likeliest characters: early models need it
VALID_SEQLEN = 1024  # validation rows start from a zero state, so make them long

# --recipe talk: the talk's recipe, one flag away whatever the defaults above say.
TALK_RECIPE = {
    "learning_rate": 0.001,
    "warmup": 0,
    "schedule": "constant",
    "clip_norm": 0.0,
    "dropout": 0.2,
    "dropout_from": 0.0,
}

# A resumed run must keep these: the weights' shapes and the layout of the data
# and of the RNN state depend on them.
ARCHITECTURE = ("alphasize", "cell_size", "layers", "batch_size", "seqlen")


def parse_args(argv):
    p = cli.ArgumentParser(
        prog="rnn_train.py",
        description="Train a character-level GRU language model (TensorFlow without a PhD).",
    )
    p.add_argument(
        "--data",
        nargs="+",
        metavar="GLOB",
        help="training text: files, directories or globs ('**' recursive; quote them) "
        "(default: shakespeare/*.txt)",
    )
    p.add_argument(
        "--validation",
        nargs="+",
        metavar="GLOB",
        help="files held out for validation, never trained on, or 'none' "
        "(default: the last files of the sorted list, about 10%% of the text, "
        "at most 90 KB and a fifth of the files)",
    )
    p.add_argument(
        "--seqlen", type=cli.positive_int, help=f"characters unrolled (default {SEQLEN})"
    )
    p.add_argument(
        "--batch-size", type=cli.positive_int, help=f"sequences per batch (default {BATCH_SIZE})"
    )
    p.add_argument(
        "--cell-size", type=cli.positive_int, help=f"GRU units per layer (default {CELL_SIZE})"
    )
    p.add_argument("--layers", type=cli.positive_int, help=f"stacked GRU layers (default {LAYERS})")
    p.add_argument(
        "--learning-rate",
        type=cli.positive_float,
        help=f"Adam's peak learning rate (default {LEARNING_RATE})",
    )
    p.add_argument(
        "--warmup",
        type=cli.non_negative_int,
        help=f"steps of linear warm-up from 0 to the peak learning rate (default {WARMUP})",
    )
    p.add_argument(
        "--schedule",
        choices=["constant", "cosine"],
        help="the learning rate after warm-up: constant, or a cosine down to "
        f"--min-lr x the peak at the end of the run (default {SCHEDULE})",
    )
    p.add_argument(
        "--min-lr",
        type=cli.fraction,
        help=f"the end of the cosine schedule, a fraction of the peak (default {MIN_LR})",
    )
    p.add_argument(
        "--clip-norm",
        type=cli.non_negative_float,
        help=f"clip the gradients' global norm to this, 0 = never (default {CLIP_NORM:g})",
    )
    p.add_argument(
        "--recipe",
        choices=["talk"],
        help="talk: the talk's original recipe (constant Adam 0.001, no warm-up, "
        "no clipping, dropout 0.2 from the start), whatever the defaults",
    )
    p.add_argument(
        "--dropout",
        type=cli.fraction,
        help=f"fraction of activations dropped in training (default {DROPOUT}; "
        "the talk's keep 0.8 is 0.2)",
    )
    p.add_argument(
        "--dropout-from",
        type=cli.fraction,
        help="start dropout only after this fraction of the run (of its steps, or of "
        f"its --time-limit) (default {DROPOUT_FROM:g})",
    )
    p.add_argument(
        "--epochs",
        type=cli.positive_int,
        help=f"passes over the training text, counted from the start of the run (default {EPOCHS})",
    )
    p.add_argument(
        "--max-steps",
        type=cli.positive_int,
        help="stop after this many batches, counted from the start of the run",
    )
    p.add_argument(
        "--time-limit",
        type=cli.positive_float,
        metavar="MINUTES",
        help="stop after this much time (checkpoint saved), whatever the epoch; "
        "a cosine schedule then ends when the time does",
    )
    p.add_argument("--seed", type=int, help=f"random seed (default {SEED})")
    p.add_argument(
        "--mixed-precision",
        action=argparse.BooleanOptionalAction,
        help="compute the matmuls of training in 16 bits (bfloat16, or float16 on "
        "GPUs older than Ampere); weights, softmax and loss stay float32 "
        "(default: on where bfloat16 runs in hardware: CPUs with AVX512-BF16 "
        "or AMX, GPUs from Ampere on)",
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        default=None,
        help="turn on TensorFlow's op determinism, so that a run and its resumed "
        "twin give bit-identical weights (slower on a GPU)",
    )
    p.add_argument(
        "--strategy",
        choices=["none", "mirrored", "multiworker"],
        default="none",
        help="data-parallel training with tf.distribute: mirrored = the GPUs of this "
        "machine, multiworker = several machines, as TF_CONFIG describes "
        "(default none)",
    )
    p.add_argument(
        "--cpu-replicas",
        type=cli.positive_int,
        default=1,
        metavar="N",
        help="--strategy mirrored on a machine without GPUs: split the CPU into N "
        "replicas (to try distribution out; no faster) (default 1)",
    )
    p.add_argument(
        "--collective-timeout",
        type=cli.positive_float,
        default=COLLECTIVE_TIMEOUT,
        metavar="SECONDS",
        help="--strategy multiworker: give up on a worker that has not answered "
        f"for this long (default {COLLECTIVE_TIMEOUT})",
    )
    p.add_argument("--run", help="name of the run (default: the date and time)")
    p.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="RUN",
        help="continue the newest run, or the one named, where it stopped",
    )
    p.add_argument(
        "--checkpoint-dir",
        default="checkpoints",
        help="where runs keep checkpoints (default checkpoints)",
    )
    p.add_argument("--log-dir", default="log", help="TensorBoard logs (default log)")
    p.add_argument(
        "--log-every",
        type=cli.positive_int,
        help=f"batches between training figures (default {LOG_EVERY})",
    )
    p.add_argument(
        "--eval-every",
        type=cli.positive_int,
        help=f"batches between validations (default {EVAL_EVERY})",
    )
    p.add_argument(
        "--sample-every",
        type=cli.positive_int,
        help=f"batches between generated samples (default {SAMPLE_EVERY})",
    )
    p.add_argument(
        "--save-every",
        type=cli.positive_int,
        help=f"batches between checkpoints (default {SAVE_EVERY})",
    )
    p.add_argument(
        "--keep", type=cli.positive_int, help=f"checkpoints kept per run (default {KEEP})"
    )
    return p.parse_args(argv)


def make_config(args, saved=None):
    """The run's settings: flags given, else the checkpoint's (when resuming), else
    the defaults above. Raises UsageError if a flag contradicts the architecture of
    the checkpoint being resumed."""
    defaults = {
        "alphasize": txtutils.ALPHASIZE,
        "alphabet": txtutils.ALPHABET,
        "data": ["shakespeare/*.txt"],
        "validation": None,
        "seqlen": SEQLEN,
        "batch_size": BATCH_SIZE,
        "cell_size": CELL_SIZE,
        "layers": LAYERS,
        "learning_rate": LEARNING_RATE,
        "warmup": WARMUP,
        "schedule": SCHEDULE,
        "min_lr": MIN_LR,
        "clip_norm": CLIP_NORM,
        "dropout": DROPOUT,
        "dropout_from": DROPOUT_FROM,
        "epochs": EPOCHS,
        "max_steps": None,
        "seed": SEED,
        "mixed_precision": MIXED_PRECISION,
        "deterministic": False,
        "log_every": LOG_EVERY,
        "eval_every": EVAL_EVERY,
        "sample_every": SAMPLE_EVERY,
        "save_every": SAVE_EVERY,
        "keep": KEEP,
    }
    config = dict(defaults, **(saved or {}))
    if getattr(args, "recipe", None) == "talk":
        config.update(TALK_RECIPE)
    for key in defaults:
        given = getattr(args, key, None)
        if given is None:
            continue
        if key == "validation" and [v.lower() for v in given] == ["none"]:
            given = []
        if saved and key in ARCHITECTURE and given != saved[key]:
            flag = "--" + key.replace("_", "-")
            raise UsageError(
                f"the run being resumed was trained with {flag} {saved[key]}, "
                f"not {given}: drop {flag} to resume it, or start a new run"
            )
        config[key] = given
    return config


class UsageError(Exception):
    """Flags that cannot work together; the message says what to do."""


class Diverged(Exception):
    """The loss or the weights stopped being finite numbers."""


class StopRequest:
    """While in use, Ctrl-C and SIGTERM ask the loop to stop after the current batch,
    so that the checkpoint it saves is consistent. A second Ctrl-C quits at once."""

    def __enter__(self):
        self.signal = None
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        print(
            "\nstopping: saving a checkpoint first (Ctrl-C again to quit without saving)",
            file=sys.stderr,
            flush=True,
        )


class HeldBackLog:
    """TensorBoard figures, held back in memory until the checkpoint that covers them
    is saved, then written out. The log on disk never runs ahead of the newest
    checkpoint, so a run killed at any moment and resumed logs no step twice.
    (TensorFlow's own writer sends each summary to the file at once, whatever its
    max_queue and flush_millis say.)"""

    LOSS = "cross-entropy, nats per character"
    ACCURACY = "next character predicted right"

    def __init__(self, log_dir, runs):
        """log_dir None: a log that writes nothing (a worker that is not the chief)."""
        self.writers = (
            {run: tf.summary.create_file_writer(os.path.join(log_dir, run)) for run in runs}
            if log_dir
            else {}
        )
        self.pending = []

    def scalar(self, run, tag, value, step, description=None):
        self.pending.append((run, tf.summary.scalar, tag, float(value), step, description))

    def text(self, run, tag, text, step):
        # Markdown: a code block keeps the sample's line breaks
        self.pending.append((run, tf.summary.text, tag, f"```\n{text}\n```", step, None))

    def write_out(self):
        pending, self.pending = self.pending, []  # taken first: a failed write never repeats
        if not self.writers:
            return
        for run, summary, tag, value, step, description in pending:
            with self.writers[run].as_default(step=step):
                summary(tag, value, description=description)
        for writer in self.writers.values():
            writer.flush()


def pick_run(args):
    """The name of the run to train, and whether it is resumed."""
    if args.resume is None:
        run = args.run or time.strftime("%Y%m%d-%H%M%S")
        if ckpt.newest_in(os.path.join(args.checkpoint_dir, run)):
            raise UsageError(
                f"run {run} exists already: continue it with --resume {run}, "
                "or choose another --run"
            )
        return run, False
    if args.run and args.resume and args.run != args.resume:
        raise UsageError(f"--run {args.run} and --resume {args.resume} name different runs")
    run = args.resume or args.run or ckpt.newest_run(args.checkpoint_dir)
    if run is None:
        raise UsageError(
            f"nothing to resume: no run in {args.checkpoint_dir}/ has a checkpoint; "
            "start one without --resume"
        )
    if not ckpt.newest_in(os.path.join(args.checkpoint_dir, run)):
        raise UsageError(
            f"nothing to resume: {args.checkpoint_dir}/{run} has no checkpoint; "
            f"see the runs in {args.checkpoint_dir}/"
        )
    return run, True


def has_bfloat16():
    """Whether bfloat16 matmuls run in hardware here: GPUs from Ampere on, CPUs with
    AVX512-BF16 or AMX (as Linux tells; elsewhere, assume not)."""
    if on_gpu():
        return mixed_precision_dtype() == tf.bfloat16
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def learning_rate_at(step, progress, config):
    """The learning rate of a step: a linear warm-up over the first config["warmup"]
    steps, then constant or a cosine from the peak down to min_lr x the peak at
    progress 1 (the fraction of the run done: of its steps, or of its time limit)."""
    peak, warmup = config["learning_rate"], config["warmup"]
    if step < warmup:
        return peak * (step + 1) / warmup
    if config["schedule"] == "constant":
        return peak
    low = peak * config["min_lr"]
    return low + (peak - low) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def format_duration(seconds):
    minutes = int(seconds // 60)
    return (
        f"{minutes // 60}h{minutes % 60:02d}m"
        if minutes >= 60
        else f"{minutes}m{int(seconds) % 60:02d}s"
    )


def evaluate(model, x, y, rows_per_call=256):
    """Validation loss and accuracy: every row from a zero state, no dropout."""
    losses, accuracies, weights = [], [], []
    for i in range(0, len(x), rows_per_call):
        xb, yb = x[i : i + rows_per_call], y[i : i + rows_per_call]  # [ROWS, VALID_SEQLEN]
        logits, _ = model.predict(xb, model.zero_state(len(xb)))
        loss, acc = loss_and_accuracy(logits, yb)
        losses.append(float(loss))
        accuracies.append(float(acc))
        weights.append(len(xb))
    return np.average(losses, weights=weights), np.average(accuracies, weights=weights)


def make_train_step(model, optimizer, config, strategy=None):
    """The compiled training step: (x, y, state, step, dropout) -> (loss, accuracy, new
    state); dropout, a Python bool, turns dropout on or off (one trace each).

    Under a tf.distribute strategy, x, y and state are per-replica values (each
    replica its own rows of the batch, see per_replica) and so is the new state;
    loss and accuracy are averaged over all of them. The step computes what one
    process would: the same dropout masks, the gradients of the whole batch's mean
    loss (summed over replicas), clipped to the global norm after summing."""
    seed, clip_norm = config["seed"], config["clip_norm"]
    replicas = strategy.num_replicas_in_sync if strategy else 1
    rows_each = config["batch_size"] // replicas
    loss_scale = LOSS_SCALE if model.train_dtype == tf.float16 else 1

    def replica_step(x, y, state, step, dropout):
        # x, y: [BATCH/REPLICAS, SEQLEN]; state: [BATCH/REPLICAS, LAYERS*CELL]
        # The dropout masks depend on (seed, step) alone: a resumed run draws the same ones.
        dropout_seed = tf.stack([tf.constant(seed, tf.int64), step]) if dropout else None
        rows = None
        if strategy:
            first = tf.distribute.get_replica_context().replica_id_in_sync_group * rows_each
            rows = tf.stack([first, config["batch_size"]])
        with tf.GradientTape() as tape:
            logits, new_state = model(x, state, training=True, dropout_seed=dropout_seed, rows=rows)
            loss, accuracy = loss_and_accuracy(logits, y)
            share = loss * loss_scale / replicas  # of the whole batch's mean loss
        grads = [
            tf.convert_to_tensor(g) / loss_scale
            for g in tape.gradient(share, model.trainable_variables)
        ]
        if clip_norm and strategy:
            # Keras' optimizer sums the replicas' gradients, but would clip each
            # replica's share first: sum them here, clip the sum, and give it back
            # evenly shared. (A second all-reduce per step: the price of clipping.)
            total = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, grads
            )
            total, _ = tf.clip_by_global_norm(total, clip_norm)
            grads = [g / replicas for g in total]
        elif clip_norm:
            grads, _ = tf.clip_by_global_norm(grads, clip_norm)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss, accuracy, new_state

    # autograph=False here and in model.py: nothing needs it, and it re-reads the source
    # files when it traces, so editing them during a run could break a later trace
    if not strategy:
        return tf.function(replica_step, autograph=False)

    @tf.function(autograph=False)
    def train_step(x, y, state, step, dropout):
        loss, accuracy, new_state = strategy.run(replica_step, args=(x, y, state, step, dropout))
        mean = tf.distribute.ReduceOp.MEAN
        return (
            strategy.reduce(mean, loss, axis=None),
            strategy.reduce(mean, accuracy, axis=None),
            new_state,
        )

    return train_step


def make_strategy(args):
    """The tf.distribute strategy of --strategy, or None. Made before anything else
    touches TensorFlow's devices, as both strategies require."""
    if args.strategy == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_replicas
        )
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(args.cpu_replicas)])
    if args.strategy == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise UsageError(
                "--strategy multiworker needs the cluster in TF_CONFIG; see the "
                'README\'s "Beyond one machine"'
            )
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError as e:
            raise UsageError(f"TF_CONFIG is not valid JSON ({e})") from None
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=args.collective_timeout
        )
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return None


def is_chief(strategy):
    """Whether this process writes the checkpoints and logs: always, but under
    --strategy multiworker, where only the chief does (the "chief" task, else worker 0)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    if "chief" in resolver.cluster_spec().as_dict():
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def per_replica(strategy, rows):
    """rows [BATCH, ...] (the whole batch, which every worker has) as a per-replica
    value: replica r gets rows r*BATCH/REPLICAS up to (r+1)*BATCH/REPLICAS, always the
    same ones, so each replica's rows continue its rows of the previous batch."""
    each = len(rows) // strategy.num_replicas_in_sync

    def share(context):
        r = context.replica_id_in_sync_group
        return tf.convert_to_tensor(rows[r * each : (r + 1) * each])

    return strategy.experimental_distribute_values_from_function(share)


def any_worker(strategy, flag):
    """Whether flag is true on any worker (a collective: every worker must ask)."""
    flags = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(int(flag))
    )
    return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, flags, axis=None) > 0)


class WorkerLost(Exception):
    """A collective operation failed: another worker died or cannot be reached."""


def train(args):
    t_start = time.perf_counter()
    deadline = t_start + 60 * args.time_limit if args.time_limit else None
    strategy = make_strategy(args)
    multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    chief = is_chief(strategy)
    say = print if chief else (lambda *a, **k: None)  # one voice: the chief's
    run, resuming = pick_run(args)
    run_dir = os.path.join(args.checkpoint_dir, run)
    log_dir = os.path.join(args.log_dir, run)
    lock = resume_from = saved = None  # the lock is held until train() returns
    if resuming:
        if chief:
            lock = ckpt.RunLock(run_dir)  # before choosing a checkpoint another writer may add
            ckpt.remove_partial_saves(run_dir)
        resume_from = ckpt.newest_good(run_dir, cli.warn)
        if resume_from is None:
            raise ckpt.CheckpointError(f"every checkpoint in {run_dir} is damaged: start a new run")
        saved = ckpt.read_config(resume_from)
    config = make_config(args, saved)
    if saved and saved["alphabet"] != txtutils.ALPHABET:
        raise UsageError("the run being resumed uses another alphabet than this version")

    train_text, valid_text, train_files, valid_files = txtutils.read_corpus(
        config["data"], config["validation"]
    )
    B, T = config["batch_size"], config["seqlen"]
    if strategy and B % strategy.num_replicas_in_sync:
        raise UsageError(
            f"--batch-size {B} does not split evenly over "
            f"{strategy.num_replicas_in_sync} replicas: choose a multiple"
        )
    nb_batches = txtutils.batches_per_epoch(len(train_text), B, T)
    total_steps = config["epochs"] * nb_batches
    if config["max_steps"]:
        total_steps = min(total_steps, config["max_steps"])
    if len(valid_text) >= 2:
        valid_x, valid_y = txtutils.validation_rows(
            valid_text, VALID_SEQLEN
        )  # [ROWS, VALID_SEQLEN]
    else:
        valid_x = None

    try:
        if chief:
            os.makedirs(run_dir, exist_ok=True)
            os.makedirs(log_dir, exist_ok=True)
            lock = lock or ckpt.RunLock(run_dir)
    except OSError as e:
        raise UsageError(
            f"cannot write in {e.filename}: {e.strerror}; choose another "
            "--checkpoint-dir or --log-dir"
        ) from None
    if config["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    mixed_precision = config["mixed_precision"]
    if mixed_precision == "auto":
        mixed_precision = has_bfloat16()
    elif mixed_precision and not has_bfloat16() and not on_gpu():
        cli.warn(
            "warning: this CPU has no bfloat16 instructions (AVX512-BF16 or AMX): "
            "--mixed-precision will train slower than without"
        )

    keras.utils.set_random_seed(config["seed"])
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = build_model(config, mixed_precision=mixed_precision)
        optimizer = keras.optimizers.Adam(config["learning_rate"])  # (clipping: in the step)
        optimizer.build(model.trainable_variables)  # Keras restores its slots only once built
    step_var = tf.Variable(0, dtype=tf.int64)
    state_var = tf.Variable(model.zero_state(B))  # [BATCH, LAYERS*CELL]
    checkpoint = ckpt.checkpoint_object(model, config, optimizer, step_var, state_var)
    manager = tf.train.CheckpointManager(
        checkpoint, run_dir, max_to_keep=config["keep"], checkpoint_name="ckpt"
    )
    if resume_from:
        checkpoint.restore(resume_from).assert_consumed()
    step = saved_step = int(step_var.numpy())
    if step >= total_steps:
        say(
            f"run {run} is complete at step {step} of {total_steps}: "
            "raise --epochs or --max-steps to train it further"
        )
        return 0

    train_step = make_train_step(model, optimizer, config, strategy)
    sampler = Generator(model, topn=SAMPLE_TOPN)
    if not chief:
        valid_x = None  # validation and samples: the chief's (they involve no other worker)
    log = HeldBackLog(
        log_dir if chief else None,
        ["training", "validation"] if valid_x is not None else ["training"],
    )

    def save():
        """Checkpoint, then write out the log up to this step. A failed save (disk full,
        say) is reported and leaves the earlier checkpoints as they were."""
        nonlocal saved_step
        if not all(tf.reduce_all(tf.math.is_finite(v)) for v in model.trainable_variables):
            raise Diverged(f"the weights became infinite or NaN by step {step}")
        step_var.assign(step)
        state_var.assign(strategy.gather(state, axis=0) if strategy else state)  # all rows
        if not chief:  # the gather above was this worker's part of the save
            saved_step = step
            return True
        try:
            manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as e:
            cli.warn(
                f"warning: could not save a checkpoint at step {step} "
                f"({ckpt.short_reason(e)}); the one at step {saved_step} is intact"
            )
            return False
        saved_step = step
        try:
            log.write_out()
        except (OSError, tf.errors.OpError) as e:  # the checkpoint is safe: say so, go on
            cli.warn(
                f"warning: the TensorBoard log up to step {step} could not be written "
                f"({ckpt.short_reason(e)})"
            )
        return True

    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    replicas = f", {strategy.num_replicas_in_sync} replicas" if strategy else ""
    say(
        f"run {run}: {f'resuming at step {step}' if resume_from else 'new'}; "
        f"{config['layers']} x {config['cell_size']} GRU, {params:,} parameters, "
        f"{model.train_dtype.name} matmuls in training{replicas}"
    )
    say(
        f"training on {len(train_text):,} characters ({len(train_files)} files), validating on "
        f"{len(valid_text):,} ({', '.join(os.path.basename(f) for f in valid_files) or 'none'})"
    )
    say(
        f"{nb_batches:,} batches of {B} x {T} per epoch; checkpoints in {run_dir}, "
        f"TensorBoard logs in {log_dir} (make tensorboard)",
        flush=True,
    )

    try:
        with StopRequest() as stop:
            state = state_var.value()  # [BATCH, LAYERS*CELL]
            if strategy:
                state = per_replica(strategy, state)
            batches = txtutils.minibatch_sequencer(
                train_text, B, T, config["epochs"], start_step=step
            )
            started, first_step = time.perf_counter(), step
            window_loss = window_acc = window_time = (
                0.0  # sums over the steps since the last log line
            )
            window_steps = 0
            out_of_time = False
            for x, y, epoch in batches:
                if step >= total_steps or stop.signal:
                    break
                progress = step / total_steps
                if deadline:
                    progress = max(progress, (time.perf_counter() - t_start) / (deadline - t_start))
                learning_rate = learning_rate_at(step, progress, config)
                optimizer.learning_rate.assign(learning_rate)
                # x, y: [BATCH, SEQLEN]; this batch's output state is the next one's input state
                t0 = time.perf_counter()
                if strategy:
                    x, y = per_replica(strategy, x), per_replica(strategy, y)
                dropout = progress >= config["dropout_from"]
                loss, accuracy, state = train_step(
                    x, y, state, tf.constant(step, tf.int64), dropout
                )
                if not math.isfinite(float(loss)):  # float() waits for the step to finish
                    raise Diverged(f"the loss became {float(loss)} at step {step + 1}")
                window_loss += float(loss)
                window_acc += float(accuracy)
                window_time += time.perf_counter() - t0
                window_steps += 1
                step += 1
                out_of_time = deadline is not None and time.perf_counter() >= deadline
                if multiworker:  # every worker stops after the same step, or the others hang
                    out_of_time = any_worker(strategy, out_of_time or stop.signal is not None)
                last = step == total_steps or out_of_time

                if step % config["log_every"] == 0 or last:
                    chars_per_s = window_steps * B * T / window_time
                    # time left at this run's pace so far (validation, samples, saves included)
                    left = (
                        (total_steps - step) * (time.perf_counter() - started) / (step - first_step)
                    )
                    if deadline:
                        left = min(left, max(0.0, deadline - time.perf_counter()))
                    loss_avg, acc_avg = window_loss / window_steps, window_acc / window_steps
                    say(
                        f"step {step:>{len(str(total_steps))}}/{total_steps}  epoch {epoch + 1}/"
                        f"{config['epochs']}  loss {loss_avg:.3f}  acc {acc_avg:.3f}  "
                        f"{chars_per_s / 1000:.1f}k chars/s  {format_duration(left)} left",
                        flush=True,
                    )
                    log.scalar("training", "loss", loss_avg, step, log.LOSS)
                    log.scalar("training", "accuracy", acc_avg, step, log.ACCURACY)
                    log.scalar("training", "chars_per_second", chars_per_s, step)
                    log.scalar("training", "learning_rate", learning_rate, step)
                    window_loss = window_acc = window_time = 0.0
                    window_steps = 0

                if valid_x is not None and (step % config["eval_every"] == 0 or last):
                    valid_loss, valid_acc = evaluate(model, valid_x, valid_y)
                    print(f"validation: loss {valid_loss:.3f}  acc {valid_acc:.3f}", flush=True)
                    log.scalar("validation", "loss", valid_loss, step, log.LOSS)
                    log.scalar("validation", "accuracy", valid_acc, step, log.ACCURACY)

                if chief and (step % config["sample_every"] == 0 or last):
                    sampler.start([txtutils.encode("\n")], seed=config["seed"] + step)
                    text = txtutils.decode(sampler.next(SAMPLE_LENGTH)[0])
                    print(f"---- sample at step {step} ----\n{text}\n----", flush=True)
                    log.text("training", "sample", text, step)

                if step % config["save_every"] == 0:
                    save()  # on failure, training goes on: the next interval tries again
                if stop.signal or out_of_time:
                    break

        if step != saved_step and not save():
            cli.warn(
                f"rnn_train.py: error: the last {step - saved_step} steps could not be saved; "
                f"free some space and --resume {run} from step {saved_step}"
            )
            return 1
    except tf.errors.OpError as e:
        if not multiworker:
            raise
        raise WorkerLost(
            f"lost contact with another worker at step {step} "
            f"({type(e).__name__}); start every worker again with "
            f"--resume {run} (the last checkpoint is at step {saved_step})"
        ) from None
    except Diverged as e:
        lower = f"--learning-rate {config['learning_rate'] / 4:g}"
        if manager.latest_checkpoint:
            cli.warn(
                f"rnn_train.py: error: {e}: training diverged. Nothing was saved after step "
                f"{saved_step}; resume from there with a lower learning rate: "
                f"--resume {run} {lower}"
            )
        else:
            cli.warn(
                f"rnn_train.py: error: {e}: training diverged before any checkpoint; "
                f"start again with a lower learning rate, e.g. {lower}"
            )
        return 1
    if stop.signal:
        print(
            f"stopped at step {step}: checkpoint saved; continue with "
            f"python rnn_train.py --resume {run}",
            file=sys.stderr,
        )
        return 128 + stop.signal
    if out_of_time and step < total_steps:
        say(
            f"time limit of {args.time_limit:g} minutes reached at step {step}: checkpoint "
            f"{manager.latest_checkpoint} saved; continue with python rnn_train.py --resume {run}"
        )
        return 0
    say(f"done: step {step}, checkpoint {manager.latest_checkpoint}")
    return 0


def main(argv=None):
    args = parse_args(argv)
    try:
        return train(args)
    except (txtutils.CorpusError, ckpt.CheckpointError, UsageError) as e:
        cli.fail("rnn_train.py", e)
    except WorkerLost as e:
        cli.warn(f"rnn_train.py: error: {e}")
        return 1
    except KeyboardInterrupt:
        print(
            "\nrnn_train.py: quit without saving; the previous checkpoint is intact",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
