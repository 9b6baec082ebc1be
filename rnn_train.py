"""Train a character-level language model: stacked GRU cells unrolled over SEQLEN
characters, with the RNN state carried from each batch to the next.

    python rnn_train.py                       # Shakespeare, the talk's settings
    python rnn_train.py --data 'src/**/*.py'  # any text
    python rnn_train.py --resume              # continue the newest run

Read it top to bottom: the hyperparameters and their flags, the run's settings,
the set-up (run folder, text, model, checkpoints), the training step, then
train() - the loop - and the reports at its end.
"""

import tf_quiet  # noqa: F401, I001  (first: quiets TensorFlow's logging before it loads)

import argparse
import json
import math
import os
import signal
import sys
import time
from types import SimpleNamespace

import keras
import numpy as np
import tensorflow as tf

import ckpt
import cli
import distribute
import txtutils
from cli import UsageError
from distribute import Distribution, WorkerLost
from generate import Generator
from model import build_model, has_bfloat16, loss_and_accuracy, mean_loss_and_accuracy, on_gpu
from tensorboard_log import HeldBackLog

PROG = "rnn_train.py"

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
MIN_CHAR_COUNT = 2  # a rarer character of the text stays "unknown": once is too few to learn
# float16 only (--mixed-precision on a GPU): the loss scale to start from; Keras'
# LossScaleOptimizer halves it at each overflow (skipping that step), doubles it
# after 2,000 steps without one. Not in checkpoints: a resumed run starts here again.
LOSS_SCALE = 2.0**15
# Fixed choices.
SAMPLE_LENGTH = 600  # characters in each sample
SAMPLE_TOPN = 10  # sample among the 10 likeliest characters: early models need it
VALID_SEQLEN = 1024  # validation rows start from a zero state, so make them long
VALID_ROWS = 256  # validation rows per compiled call...
VALID_CHUNK = 128  # ...and characters of each: the state carries over, memory stays small
# (fewer for an alphabet of over 1,024 symbols: the logits grow with it)

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
# What --init-from takes from the parent run: the shapes of its weights.
INHERITED = ("cell_size", "layers")


def parse_args(argv):
    p = cli.ArgumentParser(
        prog=PROG,
        description="Train a character-level GRU language model (TensorFlow without a PhD).",
    )
    add_data_and_model_flags(p.add_argument_group("text and model"))
    add_recipe_flags(p.add_argument_group("training recipe"))
    add_run_flags(p.add_argument_group("run, checkpoints and logs"))
    distribute.add_flags(p.add_argument_group("data-parallel training"))
    return p.parse_args(argv)


def add_data_and_model_flags(p):
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
        "(default: the last files of the sorted list holding over 10%% of the text or "
        "over 90 KB of it, whichever are fewer; none if they hold over a fifth of it)",
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
        "--min-char-count",
        type=cli.positive_int,
        metavar="N",
        help="a character of the training text joins the alphabet (after the talk's 98 "
        f"symbols) if it occurs at least N times; rarer ones are read as unknown "
        f"(default {MIN_CHAR_COUNT})",
    )


def add_recipe_flags(p):
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
    p.add_argument("--seed", type=cli.seed, help=f"random seed (default {SEED})")
    p.add_argument(
        "--mixed-precision",
        action=argparse.BooleanOptionalAction,
        help="compute the matmuls of training in 16 bits (bfloat16 on a CPU, float16 "
        "with dynamic loss scaling on a GPU); weights, softmax and loss stay float32 "
        "(default: on only on CPUs whose hardware runs bfloat16, AVX512-BF16 or AMX; "
        "off on GPUs)",
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        default=None,
        help="turn on TensorFlow's op determinism, so that a run and its resumed "
        "twin give bit-identical weights (slower on a GPU)",
    )


def add_run_flags(p):
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
    p.add_argument("--run", help="name of the run (default: the date and time)")
    p.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="RUN",
        help="continue the newest run, or the one named, where it stopped",
    )
    p.add_argument(
        "--init-from",
        metavar="RUN_OR_CHECKPOINT",
        help="fine-tune: a new run that starts from the weights of another run's newest "
        "checkpoint (or of the one given), its architecture and alphabet, on this --data",
    )
    p.add_argument(
        "--checkpoint-dir",
        default="checkpoints",
        help="where runs keep checkpoints (default checkpoints)",
    )
    p.add_argument("--log-dir", default="log", help="TensorBoard logs (default log)")
    intervals = [
        ("--log-every", "training figures", LOG_EVERY),
        ("--eval-every", "validations", EVAL_EVERY),
        ("--sample-every", "generated samples", SAMPLE_EVERY),
        ("--save-every", "checkpoints", SAVE_EVERY),
    ]
    for flag, what, default in intervals:
        p.add_argument(
            flag, type=cli.positive_int, help=f"batches between {what} (default {default})"
        )
    p.add_argument(
        "--keep", type=cli.positive_int, help=f"checkpoints kept per run (default {KEEP})"
    )


def make_config(args, saved=None, parent=None):
    """The run's settings: flags given, else the checkpoint's (when resuming), else
    the defaults above; fine-tuning (parent: the config of the checkpoint it starts
    from) takes the parent's architecture. Raises UsageError if a flag contradicts
    the architecture of the checkpoint being resumed or fine-tuned. The alphabet and
    the data's fingerprint are read_text's."""
    defaults = {
        "alphasize": txtutils.ALPHASIZE,
        "alphabet": txtutils.ALPHABET,
        "min_char_count": MIN_CHAR_COUNT,
        "parent": None,
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
    if parent:
        config.update({key: parent[key] for key in INHERITED})
    if getattr(args, "recipe", None) == "talk":
        config.update(TALK_RECIPE)
    for key in defaults:
        given = getattr(args, key, None)
        if given is None:
            continue
        if key == "validation" and [v.lower() for v in given] == ["none"]:
            given = []
        flag = "--" + key.replace("_", "-")
        if saved and key in ARCHITECTURE and given != saved[key]:
            raise UsageError(
                f"the run being resumed was trained with {flag} {saved[key]}, "
                f"not {given}: drop {flag} to resume it, or start a new run"
            )
        if parent and key in INHERITED and given != parent[key]:
            raise UsageError(
                f"--init-from {args.init_from} has {flag} {parent[key]}, not {given}: "
                f"fine-tuning keeps the parent's architecture, so drop {flag}"
            )
        config[key] = given
    return config


# ---------------------------------------------------------------------------
# Set-up: each function returns what the training loop needs.


def open_run(args, chief):
    """The run to train: its name and folders, and when resuming, the checkpoint to
    resume from and its settings. The chief takes the run's lock first, before it
    chooses a checkpoint that another writer might be adding to."""
    name, resuming = pick_run(args)
    run = SimpleNamespace(
        name=name,
        dir=os.path.join(args.checkpoint_dir, name),
        log_dir=os.path.join(args.log_dir, name),
        lock=None,  # held until the process ends
        resume_from=None,
        saved_config=None,
        parent=None,  # fine-tuning: the checkpoint it starts from, and its config
        parent_config=None,
    )
    if args.init_from is not None:
        if resuming:
            raise UsageError(
                "--init-from starts a new run and --resume continues one: give one of them"
            )
        run.parent = ckpt.resolve(args.init_from, args.checkpoint_dir, cli.warn)
        run.parent_config = ckpt.read_config(run.parent)
    if resuming:
        if chief:
            run.lock = ckpt.RunLock(run.dir)
            ckpt.remove_partial_saves(run.dir)
        run.resume_from = ckpt.newest_good(run.dir, cli.warn)
        if run.resume_from is None:
            raise ckpt.CheckpointError(f"every checkpoint in {run.dir} is damaged: start a new run")
        run.saved_config = ckpt.read_config(run.resume_from)
    return run


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


def create_folders(run, chief):
    """The run's checkpoint and log folders, made only once the text has been read,
    so that bad input leaves nothing behind. Only the chief writes in them."""
    if not chief:
        return
    try:
        os.makedirs(run.dir, exist_ok=True)
        os.makedirs(run.log_dir, exist_ok=True)
        run.lock = run.lock or ckpt.RunLock(run.dir)
    except OSError as e:
        raise UsageError(
            f"cannot write in {e.filename}: {e.strerror}; choose another "
            "--checkpoint-dir or --log-dir"
        ) from None


def read_text(config, run, dist):
    """The training text, how many steps the run has, and the validation rows
    (validation is the chief's: it involves no other worker). Sets the config's
    alphabet: a resumed run's own; a new run's grown from the talk's (or from the
    parent's, fine-tuning) by the characters of its training text. A resumed run
    must find the text it was trained on (UsageError)."""
    if run.resume_from:
        start, min_count = ckpt.alphabet_of(config), None
    else:
        start = ckpt.alphabet_of(run.parent_config) if run.parent else txtutils.DEFAULT
        min_count = config["min_char_count"]
    corpus = txtutils.read_corpus(config["data"], config["validation"], start, min_count)
    train, valid = corpus.train, corpus.valid
    train_files, valid_files = corpus.train_files, corpus.valid_files
    saved_fingerprint = config.get("data_fingerprint") if run.resume_from else None
    changed = saved_fingerprint and txtutils.changes(saved_fingerprint, corpus.fingerprint)
    if changed:
        raise UsageError(
            f"the text of run {run.name} has changed ({changed}): resume it on the text "
            f"it was trained on, or train on this text in a new run with --init-from {run.name}"
        )
    config.update(
        alphabet=corpus.alphabet.chars,
        alphasize=corpus.alphabet.size,
        data_fingerprint=corpus.fingerprint,
        parent=run.parent if run.parent else config["parent"],
    )
    dist.check_batch_size(config["batch_size"])
    batches = txtutils.batches_per_epoch(len(train), config["batch_size"], config["seqlen"])
    total_steps = config["epochs"] * batches
    if config["max_steps"]:
        total_steps = min(total_steps, config["max_steps"])
    valid_x = valid_y = None
    if len(valid) >= 2 and dist.chief:
        valid_x, valid_y = txtutils.validation_rows(valid, VALID_SEQLEN)  # [ROWS, VALID_SEQLEN]
    return SimpleNamespace(
        alphabet=corpus.alphabet,
        not_utf8=corpus.not_utf8,
        unknown=(txtutils.unknown_share(train), txtutils.unknown_share(valid)),
        train=train,
        valid_chars=len(valid),
        train_files=train_files,
        valid_files=valid_files,
        batches_per_epoch=batches,
        total_steps=total_steps,
        valid_x=valid_x,
        valid_y=valid_y,
    )


def make_model(config, dist):
    """The model and its optimizer, with their variables made (on every replica)."""
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
    with dist.scope():
        model = build_model(config, mixed_precision=mixed_precision)
        optimizer = keras.optimizers.Adam(config["learning_rate"])  # (clipping: in the step)
        optimizer.build(model.trainable_variables)  # Keras restores its slots only once built
    return model, optimizer


class Saver:
    """The run's checkpoints - weights, Adam's state, the step, the RNN state of every
    row of the batch and the TensorBoard figures up to the step - each followed by
    writing those figures to the log."""

    def __init__(self, run_dir, model, optimizer, config, log, dist):
        self.model, self.log, self.dist, self.config = model, log, dist, config
        self.step = tf.Variable(0, dtype=tf.int64)
        self.state = tf.Variable(model.zero_state(config["batch_size"]))  # [BATCH, LAYERS*CELL]
        self.figures = tf.Variable("[]")  # the log's figures up to the step, as JSON
        objects = (model, config, optimizer, self.step, self.state)
        self.checkpoint = ckpt.checkpoint_object(*objects, log=self.figures)
        # checkpoints from before figures travelled inside them
        self.checkpoint_without_figures = ckpt.checkpoint_object(*objects)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, run_dir, max_to_keep=config["keep"], checkpoint_name="ckpt"
        )
        self.saved_step = 0

    def restore(self, prefix):
        """(step, state [BATCH, LAYERS*CELL]) of the checkpoint at prefix, None: a new
        run's. The figures it covers are written to the log if they are not there yet."""
        if prefix:
            has_figures = tf.train.load_checkpoint(prefix).has_tensor(ckpt.LOG_KEY)
            checkpoint = self.checkpoint if has_figures else self.checkpoint_without_figures
            ckpt.restore(checkpoint, prefix)
            # the saves to come hold this run's settings, not the checkpoint's: a longer
            # --max-steps, say, or the fingerprint a checkpoint of an older version lacks
            self.checkpoint.config.assign(json.dumps(self.config))
            if has_figures:
                self.log.recover(self.figures.numpy().decode())
        self.saved_step = int(self.step.numpy())
        return self.saved_step, self.state.value()

    def save(self, step, state, x, y):
        """Checkpoint at step, then write out the log up to it; True if saved. A failed
        save (disk full, say) is reported and leaves the earlier checkpoints as they
        were. state: the RNN state after step, per replica under a strategy; x, y
        [BATCH, SEQLEN]: a batch on which the weights must give a finite loss."""
        self.check_finite(step, x, y)
        self.step.assign(step)
        self.state.assign(self.dist.gather(state))  # every worker's part in the save
        if not self.dist.chief:
            self.saved_step = step
            return True
        self.figures.assign(self.log.pending_json())
        try:
            self.manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as e:
            cli.warn(
                f"warning: could not save a checkpoint at step {step} "
                f"({ckpt.short_reason(e)}); the one at step {self.saved_step} is intact"
            )
            return False
        self.saved_step = step
        try:
            self.log.write_out()
        except (OSError, tf.errors.OpError) as e:  # the checkpoint is safe: say so, go on
            cli.warn(
                f"warning: the TensorBoard log up to step {step} could not be written "
                f"({ckpt.short_reason(e)})"
            )
        return True

    def check_finite(self, step, x, y):
        """Raise Diverged unless the weights are finite and give a finite loss on x, y
        (from a zero state): weights of 1e38 are finite, yet useless to save."""
        if not all(tf.reduce_all(tf.math.is_finite(v)) for v in self.model.trainable_variables):
            raise Diverged(f"the weights became infinite or NaN by step {step}")
        logits, _ = self.model.infer(x, self.model.zero_state(len(x)))
        loss = float(loss_and_accuracy(logits, y)[0])
        if not math.isfinite(loss):
            raise Diverged(f"the weights of step {step} give a loss of {loss}")


# ---------------------------------------------------------------------------
# The training step


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


def make_train_step(model, optimizer, config, dist=None):
    """The compiled training step: (x, y, state, step, dropout) -> (loss, accuracy, new
    state); dropout, a Python bool, turns dropout on or off (one trace each).

    Under a tf.distribute strategy, x, y and state are per-replica values (each
    replica its own rows of the batch, see Distribution.split) and so is the new
    state; loss and accuracy are averaged over all of them. The step computes what
    one process would: the same dropout masks, the gradients of the whole batch's
    mean loss (summed over replicas), clipped to the global norm after summing.

    float16 (--mixed-precision on a GPU) scales the loss dynamically (LOSS_SCALE):
    a step whose gradients overflow is skipped, its weights left as they were."""
    dist = dist or Distribution()
    seed, clip_norm = config["seed"], config["clip_norm"]
    scaler = None
    if model.train_dtype == tf.float16:  # float16's range: small gradients would round to 0
        with dist.scope():
            scaler = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=LOSS_SCALE)
            scaler.build(model.trainable_variables)  # its own two variables; Adam's are made

    def replica_step(x, y, state, step, dropout):
        # x, y: [BATCH/REPLICAS, SEQLEN]; state: [BATCH/REPLICAS, LAYERS*CELL]
        # The dropout masks depend on (seed, step) alone: a resumed run draws the same ones.
        dropout_seed = tf.stack([tf.constant(seed, tf.int64), step]) if dropout else None
        rows = dist.rows_of_this_replica(config["batch_size"])
        with tf.GradientTape() as tape:
            logits, new_state = model(x, state, training=True, dropout_seed=dropout_seed, rows=rows)
            loss, accuracy = loss_and_accuracy(logits, y)
            share = loss / dist.replicas  # of the whole batch's mean loss
            share = share if scaler is None else scaler.scale_loss(share)
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(share, model.trainable_variables)]
        if scaler is None:
            grads = dist.clip(grads, clip_norm)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss, accuracy, new_state
        # Clipped unscaled (an overflow stays inf or NaN through clipping), then scaled
        # back for the scaler, which skips the step if any is not finite, else unscales
        # and applies them: exactly, the scale being a power of 2.
        scale = scaler.dynamic_scale
        grads = [g * scale for g in dist.clip([g / scale for g in grads], clip_norm)]
        scaler.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss, accuracy, new_state

    return dist.compile(replica_step)


# ---------------------------------------------------------------------------
# The loop


class Diverged(Exception):
    """The loss or the weights stopped being finite numbers."""


class TrainingFailed(Exception):
    """The run could not go on (diverged, could not save, lost a worker); the message
    says what was kept and what to do."""


# Why a run stops before its end, in the order that wins when workers differ: a
# signal's number (SIGINT 2, SIGTERM 15) beats the time limit.
GO_ON, OUT_OF_TIME = 0, 1


class StopRequest:
    """While in use, Ctrl-C and SIGTERM ask the loop to stop after the current batch,
    so that the checkpoint it saves is consistent; a second Ctrl-C or SIGTERM quits at
    once. It stays in use until the last checkpoint is saved. The handler only takes
    note (printing from a signal handler can interrupt a print in progress): the
    loop says what happens."""

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


class Clock:
    """The run's one clock, started when the process starts training: the --time-limit
    deadline, and the pace of the steps trained so far."""

    def __init__(self, minutes):
        self.start = time.perf_counter()
        self.limit = 60 * minutes if minutes else None

    def elapsed(self):
        return time.perf_counter() - self.start

    def fraction_used(self):
        """The fraction of the time limit used, 0 without one."""
        return self.elapsed() / self.limit if self.limit else 0.0

    def out_of_time(self):
        return self.limit is not None and self.elapsed() >= self.limit

    def time_left(self, steps_left, steps_done, since):
        """Seconds left at the pace of the steps_done trained since `since` (elapsed
        seconds), validation, samples and checkpoints included, within the limit."""
        left = steps_left * (self.elapsed() - since) / steps_done
        return min(left, max(0.0, self.limit - self.elapsed())) if self.limit else left


class Window:
    """Training figures summed over the steps since the last progress line."""

    def __init__(self):
        self.loss = self.accuracy = self.seconds = 0.0
        self.steps = 0

    def add(self, loss, accuracy, seconds):
        self.loss += loss
        self.accuracy += accuracy
        self.seconds += seconds
        self.steps += 1


def format_duration(seconds):
    minutes = int(seconds // 60)
    if minutes >= 60:
        return f"{minutes // 60}h{minutes % 60:02d}m"
    return f"{minutes}m{int(seconds) % 60:02d}s"


def train(args):
    clock = Clock(args.time_limit)
    dist = Distribution.from_flags(args)
    say = print if dist.chief else lambda *a, **k: None  # one voice: the chief's
    run = open_run(args, dist.chief)
    config = make_config(args, run.saved_config, run.parent_config)
    text = read_text(config, run, dist)
    validation = (VALID_ROWS, valid_chunk(config["alphasize"]))
    ckpt.check_training(config, validation if text.valid_x is not None else None)
    create_folders(run, dist.chief)
    model, optimizer = make_model(config, dist)
    if run.parent:  # a new run fine-tuned from another: its weights, grown to this alphabet
        ckpt.load_parent_weights(model, run.parent, run.parent_config)
    log_runs = ["training", "validation"] if text.valid_x is not None else ["training"]
    log = HeldBackLog(run.log_dir if dist.chief else None, log_runs)
    saver = Saver(run.dir, model, optimizer, config, log, dist)
    step, state = saver.restore(run.resume_from)  # state: [BATCH, LAYERS*CELL]
    B, T, total = config["batch_size"], config["seqlen"], text.total_steps
    if step >= total:
        say(
            f"run {run.name} is complete at step {step} of {total}: "
            "raise --epochs or --max-steps to train it further"
        )
        return 0
    say_start(say, run, config, text, model, dist, step)
    train_step = make_train_step(model, optimizer, config, dist)
    sampler = Generator(model, topn=SAMPLE_TOPN)
    window, first_step, since = Window(), step, clock.elapsed()
    reason = GO_ON
    try:
        with StopRequest() as stop:
            state = dist.split(state)
            batches = txtutils.minibatch_sequencer(text.train, B, T, config["epochs"], step)
            for x, y, epoch in batches:  # x, y: [BATCH, SEQLEN]
                if step >= total:  # (a signal is heeded after the step, by every worker)
                    break
                progress = max(step / total, clock.fraction_used())
                learning_rate = learning_rate_at(step, progress, config)
                optimizer.learning_rate.assign(learning_rate)
                t0 = time.perf_counter()
                # this batch's output state is the next batch's input state
                loss, accuracy, state = train_step(
                    dist.split(x),
                    dist.split(y),
                    state,
                    tf.constant(step, tf.int64),
                    progress >= config["dropout_from"],
                )
                loss, accuracy = float(loss), float(accuracy)  # float() waits for the step
                if not math.isfinite(loss):
                    raise Diverged(f"the loss became {loss} at step {step + 1}")
                window.add(loss, accuracy, time.perf_counter() - t0)
                step += 1
                reason = dist.stop_together(int(stop.signal or clock.out_of_time()))
                last = step == total or reason == OUT_OF_TIME
                if reason > OUT_OF_TIME:
                    say_stopping(reason)

                if step % config["log_every"] == 0 or last:
                    left = clock.time_left(total - step, step - first_step, since)
                    log_progress(say, log, window, step, epoch, config, total, left, learning_rate)
                    window = Window()
                if text.valid_x is not None and (step % config["eval_every"] == 0 or last):
                    validate(model, text, log, step)
                if dist.chief and (step % config["sample_every"] == 0 or last):
                    sample(sampler, text.alphabet, log, step, config["seed"])
                if step % config["save_every"] == 0:
                    saver.save(step, state, x, y)  # on failure, training goes on: the next retries
                if reason:
                    break
            # the last save, still under StopRequest: a signal now waits for it to end
            if step != saver.saved_step and not saver.save(step, state, x, y):
                raise TrainingFailed(
                    f"the last {step - saver.saved_step} steps could not be saved; "
                    f"free some space and --resume {run.name} from step {saver.saved_step}"
                )
    except (Diverged, tf.errors.OpError) as e:
        raise failure(e, run.name, step, saver, config, dist) from None
    reason = max(reason, stop.signal or GO_ON)  # a signal during the last save counts too
    return report_end(say, run.name, step, total, reason, clock, saver)


def say_start(say, run, config, text, model, dist, step):
    params = sum(math.prod(v.shape) for v in model.trainable_variables)
    replicas = f", {dist.replicas} replicas" if dist.strategy else ""
    if run.resume_from:
        started = f"resuming at step {step}"
    else:
        started = f"new, fine-tuning {run.parent}" if run.parent else "new"
    say(
        f"run {run.name}: {started}; "
        f"{config['layers']} x {config['cell_size']} GRU, {params:,} parameters, "
        f"{model.train_dtype.name} matmuls in training{replicas}"
    )
    valid_names = ", ".join(os.path.basename(f) for f in text.valid_files) or "none"
    say(
        f"training on {len(text.train):,} characters ({len(text.train_files)} files), "
        f"validating on {text.valid_chars:,} ({valid_names})"
    )
    say(describe_alphabet(text.alphabet, text.unknown))
    for path, count in text.not_utf8.items() if dist.chief else ():
        cli.warn(
            f"warning: {path}: {count:,} bytes are not UTF-8 and are read as unknown "
            "characters; convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        )
    say(
        f"{text.batches_per_epoch:,} batches of {config['batch_size']} x {config['seqlen']} "
        f"per epoch; checkpoints in {run.dir}, TensorBoard logs in {run.log_dir} "
        "(make tensorboard)",
        flush=True,
    )


def describe_alphabet(alphabet, unknown):
    """One line: the alphabet's size, the symbols that came from the text (a few shown),
    and the shares of unknown characters (not in the alphabet) in the training and
    validation text."""
    extra = alphabet.chars[txtutils.ALPHASIZE :]
    shown = " ".join(c if c.isprintable() else repr(c)[1:-1] for c in extra[:10])
    if len(extra) > 10:
        shown += " ..."
    origin = f"the talk's 98 + {len(extra):,} from the text: {shown}" if extra else "the talk's"
    return (
        f"alphabet: {alphabet.size:,} symbols ({origin}); unknown characters: "
        f"{unknown[0]:.2%} of the training text, {unknown[1]:.2%} of the validation text"
    )


def log_progress(say, log, window, step, epoch, config, total, left, learning_rate):
    """A progress line, and the training figures averaged over the window."""
    chars_per_s = window.steps * config["batch_size"] * config["seqlen"] / window.seconds
    loss, accuracy = window.loss / window.steps, window.accuracy / window.steps
    say(
        f"step {step:>{len(str(total))}}/{total}  epoch {epoch + 1}/{config['epochs']}  "
        f"loss {loss:.3f}  acc {accuracy:.3f}  {chars_per_s / 1000:.1f}k chars/s  "
        f"{format_duration(left)} left",
        flush=True,
    )
    log.scalar("training", "loss", loss, step, log.LOSS)
    log.scalar("training", "accuracy", accuracy, step, log.ACCURACY)
    log.scalar("training", "chars_per_second", chars_per_s, step)
    log.scalar("training", "learning_rate", learning_rate, step)


def valid_chunk(alphasize):
    """Characters per validation call: VALID_CHUNK, fewer with an alphabet of over
    1,024 symbols, so that its logits [VALID_ROWS, CHUNK, ALPHASIZE] stay within
    128 MB (a 5,000-symbol alphabet: 26 characters)."""
    return max(1, VALID_CHUNK * min(1024, alphasize) // alphasize)


def validate(model, text, log, step):
    """Loss and accuracy on the validation rows, each from a zero state, no dropout.
    Computed VALID_ROWS rows by VALID_CHUNK characters at a time, the state carried
    along each row: the same figures as whole rows at once, in a fraction of the
    memory (whole rows of 256 x 1024 characters took ~2 GB)."""
    x, y = text.valid_x, text.valid_y  # [ROWS, VALID_SEQLEN]
    chunk = valid_chunk(model.alphasize)
    totals, chars = np.zeros(2), 0
    for i in range(0, len(x), VALID_ROWS):
        pieces = (
            (x[i : i + VALID_ROWS, j : j + chunk], y[i : i + VALID_ROWS, j : j + chunk])
            for j in range(0, x.shape[1], chunk)
        )
        loss, accuracy, n = mean_loss_and_accuracy(model, pieces, carry_state=True)
        totals += n * np.array([loss, accuracy])
        chars += n
    loss, accuracy = totals / chars
    print(f"validation: loss {loss:.3f}  acc {accuracy:.3f}", flush=True)
    log.scalar("validation", "loss", loss, step, log.LOSS)
    log.scalar("validation", "accuracy", accuracy, step, log.ACCURACY)


def sample(sampler, alphabet, log, step, seed):
    """A sample of the model's text, after a line feed, on the console and in the log."""
    sampler.start([alphabet.encode("\n")], seed=seed + step)
    text = alphabet.decode(sampler.next(SAMPLE_LENGTH)[0])
    print(f"---- sample at step {step} ----\n{text}\n----", flush=True)
    log.text("training", "sample", text, step)


def failure(error, run, step, saver, config, dist):
    """The TrainingFailed that a divergence, or a lost worker, ends the run with."""
    if isinstance(error, Diverged):
        lower = f"--learning-rate {config['learning_rate'] / 4:g}"
        if saver.manager.latest_checkpoint:
            return TrainingFailed(
                f"{error}: training diverged. Nothing was saved after step {saver.saved_step}; "
                f"resume from there with a lower learning rate: --resume {run} {lower}"
            )
        return TrainingFailed(
            f"{error}: training diverged before any checkpoint; start again with a lower "
            f"learning rate, e.g. {lower}"
        )
    if not dist.multiworker:
        raise error
    return WorkerLost(
        f"lost contact with another worker at step {step} ({type(error).__name__}); start "
        f"every worker again with --resume {run} (the last checkpoint is at step "
        f"{saver.saved_step})"
    )


def say_stopping(signum):
    """Said on stderr once the loop has taken note of a signal, here or on another worker."""
    print(
        f"\nstopping on {signal.Signals(signum).name}: saving a checkpoint first "
        "(Ctrl-C again to quit without saving)",
        file=sys.stderr,
        flush=True,
    )


def report_end(say, run, step, total, reason, clock, saver):
    """The last word of a run that ended well, and its exit status: 0, or 128 + the
    number of the signal that stopped it (on any worker), as a shell reports it."""
    resume = f"continue with python {PROG} --resume {run}"
    if reason > OUT_OF_TIME:
        print(f"stopped at step {step}: checkpoint saved; {resume}", file=sys.stderr)
        return 128 + reason
    if reason == OUT_OF_TIME and step < total:
        say(
            f"time limit of {clock.limit / 60:g} minutes reached at step {step}: checkpoint "
            f"{saver.manager.latest_checkpoint} saved; {resume}"
        )
        return 0
    say(f"done: step {step}, checkpoint {saver.manager.latest_checkpoint}")
    return 0


def main(argv=None):
    args = parse_args(argv)
    cli.utf8_output()
    try:
        return train(args)
    except (txtutils.CorpusError, ckpt.CheckpointError, UsageError) as e:
        cli.fail(PROG, e)  # input the user can fix: exit status 2
    except (TrainingFailed, WorkerLost) as e:
        cli.error(PROG, e)
        return 1
    except KeyboardInterrupt:
        print(f"\n{PROG}: quit without saving; the previous checkpoint is intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
