"""Checkpoints that are crafted, or belong to another model: each is refused in one
CheckpointError line naming the problem, before any model is built from it. They
are made from the tiny run's real checkpoint, its config or its weights edited."""

import json
import os
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import rnn_train
import txtutils
from charrnn import ckpt, memory, runs, settings, training
from charrnn.model import build_model
from conftest import run_cli, run_clis


@pytest.fixture(scope="module")
def real(tiny_run):
    """The tiny run's newest checkpoint: (prefix, model, config)."""
    prefix = runs.find_checkpoint("tiny", str(tiny_run["checkpoints"]), print)
    model, config = runs.load_model(prefix)
    return prefix, model, config


def craft(path, config, weights):
    """A checkpoint at path-1 holding weights ({layer: {name: variable}}) and config, a
    dict (saved as JSON) or the very string to save; returns its prefix."""
    text = config if isinstance(config, str) else json.dumps(config)
    checkpoint = tf.train.Checkpoint(weights=weights, config=tf.Variable(text))
    return checkpoint.save(str(path))  # as training saves: save_counter included


def weights_of(model):
    """The model's named weights in dicts of their own, for a test to edit."""
    return {layer: dict(named) for layer, named in model.named_weights().items()}


def refusal(path):
    """The message of the CheckpointError (or OutOfMemory) that loading path raises,
    and how long it took to come."""
    start = time.monotonic()
    with pytest.raises((ckpt.CheckpointError, memory.OutOfMemory)) as e:
        runs.load_model(path)
    message = str(e.value)
    assert "\n" not in message
    return message, time.monotonic() - start


def without(config, key):
    return {k: v for k, v in config.items() if k != key}


# (what is wrong, the edit, words the message must hold)
BAD_CONFIGS = [
    ("no layers", lambda c: dict(c, layers=0), ["layers is 0", "from 1 to 2**63-1"]),
    ("negative cells", lambda c: dict(c, cell_size=-32), ["cell_size is -32"]),
    ("a bool for an int", lambda c: dict(c, layers=True), ["layers is true", "whole number"]),
    ("a float for an int", lambda c: dict(c, cell_size=32.0), ["cell_size is 32.0"]),
    ("a string for an int", lambda c: dict(c, layers="2"), ['layers is "2"']),
    ("null for an int", lambda c: dict(c, cell_size=None), ["cell_size is null"]),
    ("no cell_size", lambda c: without(c, "cell_size"), ["lacks cell_size"]),
    ("no alphasize", lambda c: without(c, "alphasize"), ["lacks alphasize"]),
    ("alphasize off", lambda c: dict(c, alphasize=97), ["alphasize is 97", "98"]),
    ("another alphabet", lambda c: dict(c, alphabet="abc"), ["alphabet is", "talk's alphabet"]),
    (
        "a symbol twice",
        lambda c: dict(c, alphabet=c["alphabet"] + "жж", alphasize=c["alphasize"] + 2),
        ["alphabet is", "each once"],
    ),
    ("alphasize not the alphabet's", lambda c: dict(c, alphasize=99), ["98 symbols", "is 99"]),
    ("dropout of 1.5", lambda c: dict(c, dropout=1.5), ["dropout is 1.5"]),
    ("epochs in words", lambda c: dict(c, epochs="ten"), ['epochs is "ten"']),
    ("negative seed", lambda c: dict(c, seed=-1), ["seed is -1"]),
    ("a list", lambda c: "[1, 2]", ["not a JSON object"]),
    ("not JSON", lambda c: '{"layers": 2,', ["no readable config"]),
    ("nested too deep", lambda c: "[" * 100_000 + "]" * 100_000, ["no readable config"]),
]


@pytest.mark.parametrize(
    "edit, words", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_a_crafted_config_is_refused_in_one_line(real, tmp_path, edit, words):
    _, model, config = real
    runs.load_model(craft(tmp_path / "unedited", config, weights_of(model)))  # the control
    message, _ = refusal(craft(tmp_path / "c", edit(config), weights_of(model)))
    for word in words:
        assert word in message, message


def test_a_huge_config_is_refused_before_anything_is_built(real, tmp_path):
    _, model, config = real
    a, c, layers = config["alphasize"], config["cell_size"], config["layers"]
    for edit, words in [
        ({"cell_size": 10**6}, ["gru0/kernel", f"[{a}, {3 * c}] in the file", f"[{a}, 3000000]"]),
        ({"layers": 100_000}, [f"holds {layers} GRU layers", "says 100000"]),
    ]:
        message, seconds = refusal(craft(tmp_path / "c", dict(config, **edit), weights_of(model)))
        for word in words:
            assert word in message, message
        # refused before building: building it would take minutes and gigabytes (a
        # loose bound, as this machine is shared; speed is bench.py's to measure)
        assert seconds < 20, f"{edit}: refused after {seconds:.1f} s"


def test_weights_that_do_not_match_the_config_are_refused(real, tmp_path):
    prefix, model, config = real
    a, c, layers = config["alphasize"], config["cell_size"], config["layers"]
    other = build_model(dict(config, cell_size=c // 2))
    deeper = build_model(dict(config, layers=config["layers"] + 1))
    missing = weights_of(model)
    del missing["gru1"]["recurrent_kernel"]
    wrong_type = weights_of(model)
    wrong_type["softmax"]["bias"] = tf.Variable(np.zeros(a, np.float64))
    cases = [
        (weights_of(other), ["weight gru0/kernel", f"[{a}, {3 * c // 2}] in the file"]),
        # the old code loaded the first layers of the deeper model, without a word
        (weights_of(deeper), [f"holds {layers + 1} GRU layers", f"says {layers}"]),
        (missing, ["lacks the weight gru1/recurrent_kernel"]),
        (wrong_type, [f"softmax/bias is float64 [{a}]", f"float32 [{a}]"]),
    ]
    for i, (weights, words) in enumerate(cases):
        message, _ = refusal(craft(tmp_path / f"c{i}", config, weights))
        for word in words:
            assert word in message, message
    runs.load_model(prefix)  # the real one still loads


def test_an_rnn_state_of_another_batch_size_is_refused(real, tmp_path):
    _, model, config = real
    shape = [config["batch_size"] + 1, model.state_size]
    checkpoint = tf.train.Checkpoint(
        weights=model.named_weights(),
        config=tf.Variable(json.dumps(config)),
        state=tf.Variable(tf.zeros(shape)),
    )
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.read_config(checkpoint.save(str(tmp_path / "c")))
    assert f"RNN state is {shape} in the file" in str(e.value)


def test_a_model_beyond_this_machine_s_memory_is_refused(real, monkeypatch):
    prefix, _, config = real
    needed = memory.needed(config, rows=1, length=1)
    monkeypatch.setattr(memory, "available", lambda: needed - 1)
    message, _ = refusal(prefix)
    assert "needs at least" in message and "available" in message, message
    monkeypatch.setattr(memory, "available", lambda: needed)
    runs.load_model(prefix)


def test_the_estimate_counts_the_model_s_real_weights(real):
    _, model, config = real
    assert memory.parameters(config) == sum(int(np.prod(v.shape)) for v in model.weights)
    bigger = dict(config, batch_size=2 * config["batch_size"])
    training = memory.needed(config, config["batch_size"], config["seqlen"], training=True)
    assert training > memory.needed(config, config["batch_size"], config["seqlen"])
    assert training < memory.needed(bigger, 2 * config["batch_size"], 8, training=True)


def the_default_run():
    """The config of a default `make train`, as rnn_train.py makes it."""
    config = settings.with_batch_size(settings.merge(rnn_train.parse_args([])), txtutils.ALPHASIZE)
    return dict(config, alphabet=txtutils.ALPHABET, alphasize=txtutils.ALPHASIZE)


def test_new_runs_beyond_memory_are_refused_and_the_default_run_is_not(monkeypatch):
    config = the_default_run()
    validation = (txtutils.VALID_MAX_ROWS, training.VALID_PER_CALL)
    for edit, words in [
        ({"cell_size": 10**6}, ["1 x 1000000 GRU", "--cell-size"]),
        ({"layers": 100_000}, ["100000 x 512 GRU", "--layers"]),
    ]:
        edited = {**config, "layers": 1, **edit}
        with pytest.raises(memory.OutOfMemory, match="needs at least") as e:
            memory.check_training(edited, validation)  # arithmetic only: nothing is built
        for word in words:
            assert word in str(e.value)
    # an 8 GB laptop with half of it free trains the default model
    monkeypatch.setattr(memory, "available", lambda: 4 * 10**9)
    memory.check_training(config, validation)


def test_restore_refuses_a_checkpoint_of_another_batch_or_without_an_optimizer(real, tmp_path):
    prefix, model, config = real

    def run_objects(batch):  # what runs.Saver restores
        optimizer = keras.optimizers.Adam(0.01)
        optimizer.build(model.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64)
        state = tf.Variable(model.zero_state(batch))
        return ckpt.checkpoint_object(model, config, optimizer, step, state, log=tf.Variable(""))

    ckpt.restore(run_objects(config["batch_size"]), prefix)
    with pytest.raises(ckpt.CheckpointError, match="does not hold what this run"):
        ckpt.restore(run_objects(config["batch_size"] + 1), prefix)
    weights_only = craft(tmp_path / "c", config, model.named_weights())
    with pytest.raises(ckpt.CheckpointError, match="does not hold what this run"):
        ckpt.restore(run_objects(config["batch_size"]), weights_only)


def one_error_line(result, prog):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), result.stderr
    return lines[0]


def test_the_programs_refuse_a_crafted_checkpoint_in_one_line(real, tmp_path):
    _, model, config = real
    run_dir = tmp_path / "checkpoints" / "crafted"
    os.makedirs(run_dir)
    prefix = craft(run_dir / "ckpt", dict(config, cell_size=10**6), weights_of(model))
    files = {name: (run_dir / name).read_bytes() for name in os.listdir(run_dir)}
    # a config that is not even a string
    number = tf.train.Checkpoint(weights=model.named_weights(), config=tf.Variable(3.0))
    number_prefix = number.save(str(tmp_path / "number" / "ckpt"))
    corpus = txtutils.__file__  # any text: the checkpoint is refused before it is read
    played, played_number, resumed = run_clis(
        ("rnn_play.py", prefix),
        ("rnn_play.py", number_prefix),
        (
            "rnn_train.py",
            "--resume",
            "crafted",
            "--data",
            corpus,
            "--checkpoint-dir",
            str(tmp_path / "checkpoints"),
            "--log-dir",
            str(tmp_path / "log"),
        ),
    )
    assert "cell_size 1000000" in one_error_line(played, "rnn_play.py")
    assert "not float32" in one_error_line(played_number, "rnn_play.py")
    assert "cell_size 1000000" in one_error_line(resumed, "rnn_train.py")
    # nothing lost: the checkpoint is as it was
    assert {name: (run_dir / name).read_bytes() for name in files} == files


def test_streams_beyond_memory_are_refused_in_one_line(real):
    prefix, _, _ = real
    # the old code ran out of memory building the streams' prime (a MemoryError traceback
    # under a 6 GB limit), or TensorFlow allocating their states
    result = run_cli("rnn_play.py", prefix, "--streams", "100000000", timeout=120)
    line = one_error_line(result, "rnn_play.py")
    assert "--streams 100000000" in line and "needs at least" in line, line
    assert "at the very most here" in line
    assert result.stdout == ""
