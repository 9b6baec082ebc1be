"""Self-describing checkpoints: where they live, how to find them, what they hold.

    checkpoints/<run>/ckpt-<step>.index, .data-*   TensorFlow checkpoint (no pickle)
    checkpoints/<run>/checkpoint                    which of them is newest

A checkpoint holds the model's weights, and for resuming the optimizer, the step
and the RNN state of every batch row - plus `config`, a JSON string with the
hyperparameters and the alphabet, so rnn_play.py needs no flags repeated.
"""

import json
import os

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
        raise CheckpointError(f"{path} is not a readable checkpoint of this project "
                              f"({str(e).splitlines()[0]})") from None
    return json.loads(raw)


def newest_in(run_dir):
    """Prefix of the newest checkpoint in a run directory, or None."""
    return tf.train.latest_checkpoint(run_dir) if os.path.isdir(run_dir) else None


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


def resolve(what, checkpoint_dir):
    """Find a checkpoint prefix from what a user typed: None (the newest run), a run
    name under checkpoint_dir, a run directory, or a checkpoint prefix."""
    if what is None:
        run = newest_run(checkpoint_dir)
        if run is None:
            raise CheckpointError(f"no checkpoint in {checkpoint_dir}/: train one first "
                                  "(make train, or python rnn_train.py), or name one")
        return newest_in(os.path.join(checkpoint_dir, run))
    if os.path.isfile(what + ".index"):
        return what
    for run_dir in (what, os.path.join(checkpoint_dir, what)):
        prefix = newest_in(run_dir)
        if prefix:
            return prefix
    if os.path.isdir(what) or os.path.isdir(os.path.join(checkpoint_dir, what)):
        raise CheckpointError(f"{what} holds no checkpoint: name a run directory "
                              f"from {checkpoint_dir}/ or a checkpoint like RUN/ckpt-100")
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
