"""Self-describing checkpoints: where they live, how to find them, what they hold.

    checkpoints/<run>/ckpt-<step>.index, .data-*   TensorFlow checkpoint (no pickle)
    checkpoints/<run>/checkpoint                    which of them is newest

A checkpoint holds the model's weights, and for resuming the optimizer, the step
and the RNN state of every batch row - plus `config`, a JSON string with the
hyperparameters and the alphabet, so rnn_play.py needs no flags repeated.
"""

import fcntl
import glob
import json
import os
import re
import shutil

import tensorflow as tf

from model import build_model

CONFIG_KEY = "config/.ATTRIBUTES/VARIABLE_VALUE"


class CheckpointError(Exception):
    """A checkpoint that cannot be found or used; the message says what to do."""


def checkpoint_object(model, config, optimizer=None, step=None, state=None):
    """The tf.train.Checkpoint for saving or restoring these objects. Weights are
    named explicitly (model.named_weights) rather than trusted to Keras tracking."""
    objects = {"weights": model.named_weights(), "config": tf.Variable(json.dumps(config))}
    if optimizer is not None:
        objects.update(optimizer=optimizer, step=step, state=state)
    return tf.train.Checkpoint(**objects)


def read_config(path):
    """The config dict stored in the checkpoint at path (a prefix like .../ckpt-100)."""
    try:
        raw = tf.train.load_checkpoint(path).get_tensor(CONFIG_KEY)
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a readable checkpoint of this project ({str(e).splitlines()[0]})"
        ) from None
    return json.loads(raw)


def _step_of(prefix):
    return int(prefix.rsplit("-", 1)[1])


def all_in(run_dir):
    """Prefixes of the complete checkpoints in a run directory, newest first. Found by
    their .index files, which TensorFlow renames into place last, rather than by the
    `checkpoint` state file, which may itself be damaged."""
    found = glob.glob(os.path.join(glob.escape(run_dir), "ckpt-*.index"))
    prefixes = [f.removesuffix(".index") for f in found]
    prefixes = [p for p in prefixes if p.rsplit("-", 1)[1].isdigit()]
    return sorted(prefixes, key=_step_of, reverse=True)


def newest_in(run_dir):
    """Prefix of the newest checkpoint in a run directory, or None."""
    prefixes = all_in(run_dir) if os.path.isdir(run_dir) else []
    return prefixes[0] if prefixes else None


def short_reason(error):
    """The gist of a TensorFlow or OS error, without TensorFlow's function-node noise:
    '{{function_node ...}} /path/...; File too large [Op:SaveV2]' -> 'File too large'."""
    text = re.sub(r"\{\{.*?\}\}|\[Op:\w+\]", "", str(error)).strip()
    lines = text.splitlines() or [type(error).__name__]
    return lines[0].split("; ")[-1].strip()[:200]


def remove_partial_saves(run_dir):
    """Delete the ckpt-N_temp folders a save leaves when it is killed or fails: never
    a checkpoint, only the pieces of one. Call it holding the run's lock."""
    for partial in glob.glob(os.path.join(glob.escape(run_dir), "ckpt-*_temp")):
        shutil.rmtree(partial, ignore_errors=True)


def verify(path):
    """Read every tensor of a checkpoint, so that a truncated or scribbled file shows
    now (TensorFlow checks each tensor's CRC32C) and not halfway through a restore."""
    try:
        reader = tf.train.load_checkpoint(path)
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
        json.loads(reader.get_tensor(CONFIG_KEY))
    # what TensorFlow's reader raises on a damaged file varies with the damage
    except (tf.errors.OpError, ValueError, KeyError, IndexError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {path} is damaged ({short_reason(e)})") from None


def newest_good(run_dir, warn):
    """The newest checkpoint of a run that reads back whole. Damaged newer ones are
    skipped, each with a warning that names it; none is deleted."""
    for prefix in all_in(run_dir):
        try:
            verify(prefix)
            return prefix
        except CheckpointError as e:
            warn(f"warning: {e}; falling back to the one before")
    return None


def newest_run(checkpoint_dir):
    """Name of the run whose newest checkpoint was written last, or None."""
    best, best_time = None, None
    if os.path.isdir(checkpoint_dir):
        for name in os.listdir(checkpoint_dir):
            prefix = newest_in(os.path.join(checkpoint_dir, name))
            if prefix:
                mtime = os.path.getmtime(prefix + ".index")
                if best_time is None or mtime > best_time:
                    best, best_time = name, mtime
    return best


class RunLock:
    """One writer per run: an exclusive flock on RUN/lock, held while training. The
    kernel releases it when the process ends, however it ends, so a crash never
    leaves it stuck."""

    def __init__(self, run_dir):
        self.file = open(os.path.join(run_dir, "lock"), "a+")  # noqa: SIM115 (held open)
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            pid = self.file.read().strip() or "?"
            self.file.close()
            raise CheckpointError(
                f"{run_dir} is being trained by another process (pid {pid}): "
                "wait for it to finish, or stop it first"
            ) from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()


def resolve(what, checkpoint_dir, warn):
    """Find a checkpoint prefix from what a user typed: None (the newest run), a run
    name under checkpoint_dir, a run directory (its newest good checkpoint), or a
    checkpoint prefix."""
    if what is None:
        what = newest_run(checkpoint_dir)
        if what is None:
            raise CheckpointError(
                f"no checkpoint in {checkpoint_dir}/: train one first "
                "(make train, or python rnn_train.py), or name one"
            )
    if os.path.isfile(what + ".index"):
        verify(what)
        return what
    for run_dir in (what, os.path.join(checkpoint_dir, what)):
        if newest_in(run_dir):
            prefix = newest_good(run_dir, warn)
            if prefix is None:
                raise CheckpointError(f"every checkpoint in {run_dir} is damaged")
            return prefix
    if os.path.isdir(what) or os.path.isdir(os.path.join(checkpoint_dir, what)):
        raise CheckpointError(
            f"{what} holds no checkpoint: name a run directory "
            f"from {checkpoint_dir}/ or a checkpoint like RUN/ckpt-100"
        )
    raise CheckpointError(f"no run or checkpoint named {what}: see the runs in {checkpoint_dir}/")


def load_model(path):
    """The model stored at checkpoint path, rebuilt from its own config: (model, config)."""
    config = read_config(path)
    model = build_model(config)
    status = checkpoint_object(model, config).restore(path).expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError:
        raise CheckpointError(f"{path} does not hold the weights its config describes") from None
    return model, config
