"""Self-describing checkpoints: what they hold, and the checks before one is used.
(Where they live and how the newest good one is found: runs.py.)

A checkpoint (TensorFlow's format, no pickle) holds the model's weights, named
explicitly; for resuming, Adam's state, the step, the RNN state of every batch row
and the TensorBoard figures that it covers and the log may not hold yet; and
`config`, a JSON string: the run's settings (settings.py) with its alphabet, the
fingerprint of the files it was trained on and the checkpoint it was fine-tuned
from - so rnn_play.py needs no flag repeated.

A checkpoint is input like any other: before a model is built from one, its config
is checked (keys, types, ranges: check_config) and every weight's shape in the file
against the config (check_shapes); memory.py then checks the memory the model needs.
A restore must match every object on both sides (restore). Fine-tuning grows a
parent's weights to a larger alphabet (load_parent_weights).
"""

import json
import re

import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import trackable_object_graph_pb2

import txtutils
from charrnn import settings
from charrnn.model import weight_shapes

CONFIG_KEY = "config/.ATTRIBUTES/VARIABLE_VALUE"
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
LOG_KEY = "log/.ATTRIBUTES/VARIABLE_VALUE"


class CheckpointError(Exception):
    """A checkpoint that cannot be found or used; the message says what to do."""


def checkpoint_object(model, config, optimizer=None, step=None, state=None, log=None):
    """The tf.train.Checkpoint for saving or restoring these objects. Weights are
    named explicitly (model.named_weights) rather than trusted to Keras tracking.
    log: a string variable holding the TensorBoard figures that this checkpoint
    covers, as JSON (checkpoints written before they travelled inside have none)."""
    objects = {"weights": model.named_weights(), "config": tf.Variable(json.dumps(config))}
    if optimizer is not None:
        objects.update(optimizer=optimizer, step=step, state=state)
    if log is not None:
        objects["log"] = log
    return tf.train.Checkpoint(**objects)


def read_config(path):
    """The config dict stored in the checkpoint at path (a prefix like .../ckpt-100),
    checked before anything is built from it: its keys, types and ranges
    (check_config), and the shape of every weight in the file (check_shapes). Raises
    CheckpointError naming the first problem."""
    try:
        reader = tf.train.load_checkpoint(path)
        raw = reader.get_tensor(CONFIG_KEY)
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a readable checkpoint of this project ({str(e).splitlines()[0]})"
        ) from None
    where = f"checkpoint {path}"
    try:
        config = json.loads(raw)
    # a string that is no JSON (or no UTF-8), a number in its place, or JSON nested
    # deeper than Python's recursion limit
    except (ValueError, TypeError, RecursionError) as e:
        reason = str(e).splitlines()[0][:100] if str(e) else type(e).__name__
        raise CheckpointError(f"{where} holds no readable config ({reason})") from None
    check_config(config, where)
    check_shapes(reader, config, where)
    return config


# ---------------------------------------------------------------------------
# What a config may hold: checked before a model is built from it


def _alphabet(chars):
    """Whether chars can be an alphabet: the talk's 98 symbols first, no character
    twice, and none of the lone surrogates that stand for bytes that are not UTF-8."""
    return (
        chars.startswith(txtutils.ALPHABET)
        and len(set(chars)) == len(chars)
        and not any(0xD800 <= ord(c) <= 0xDFFF for c in chars)
    )


def _fingerprint(v):
    def files(k):
        entries = v.get(k)
        return type(entries) is list and all(
            type(e) is list
            and len(e) == 3
            and type(e[0]) is str
            and type(e[1]) is int
            and type(e[2]) is str
            for e in entries
        )

    return type(v) is dict and files("train") and files("valid")


MAX_ALPHASIZE = 0x110000  # one symbol per Unicode code point at most
# key: (test, what the value must be). The settings' come from settings.py's table, the
# same ranges as their flags; the rest is what the run read from its text. Keys not
# listed are left alone (a later version may add some).
CONFIG_RULES = {
    "alphasize": (
        lambda v: type(v) is int and txtutils.ALPHASIZE <= v <= MAX_ALPHASIZE,
        f"a whole number from {txtutils.ALPHASIZE} to {MAX_ALPHASIZE}",
    ),
    "alphabet": (
        lambda v: type(v) is str and _alphabet(v),
        "the 98 symbols of the talk's alphabet and other characters, each once",
    ),
    "parent": (lambda v: v is None or type(v) is str, "a checkpoint's path, or null"),
    "data_fingerprint": (_fingerprint, "the files read, as [path, bytes, sha256] lists"),
} | {s.name: (s.accepts, s.must_be()) for s in settings.SAVED}
REQUIRED = ("alphasize", "cell_size", "layers", "dropout")  # what a model is built from


def check_config(config, where):
    """Raise CheckpointError unless config is a JSON object holding the keys a model is
    built from, every key of CONFIG_RULES it holds within its rule. where: what holds
    it, for the message ("checkpoint checkpoints/RUN/ckpt-100")."""
    if type(config) is not dict:
        raise CheckpointError(f"{where}: its config is not a JSON object")
    missing = [key for key in REQUIRED if key not in config]
    if missing:
        raise CheckpointError(f"{where}: its config lacks {', '.join(missing)}")
    for key, (test, must_be) in CONFIG_RULES.items():
        if key in config and not test(config[key]):
            shown = json.dumps(config[key])
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise CheckpointError(f"{where}: {key} is {shown} in its config; it must be {must_be}")
    alphabet = config.get("alphabet", txtutils.ALPHABET)  # (checkpoints have always held it)
    if len(alphabet) != config["alphasize"]:
        raise CheckpointError(
            f"{where}: its alphabet has {len(alphabet)} symbols, and its alphasize is "
            f"{config['alphasize']}"
        )


def alphabet_of(config):
    """The Alphabet of a checked config."""
    return txtutils.Alphabet(config.get("alphabet", txtutils.ALPHABET))


def saved_variables(reader, where):
    """{name: checkpoint key} of the weights ("gru0/kernel") and the RNN state ("state")
    of a checkpoint. A variable reachable by several paths is stored once, under the
    first (in a training checkpoint, the optimizer's): the object graph says which."""
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    found = {}

    def walk(node_id, name, depth):
        node = graph.nodes[node_id]
        for attribute in node.attributes:
            if attribute.name == "VARIABLE_VALUE":
                found[name] = attribute.checkpoint_key
        for child in node.children if depth else ():
            walk(child.node_id, f"{name}/{child.local_name}".lstrip("/"), depth - 1)

    try:
        graph.ParseFromString(reader.get_tensor(OBJECT_GRAPH_KEY))
        for child in graph.nodes[0].children:
            if child.local_name == "weights":  # weights/LAYER/NAME
                walk(child.node_id, "", 2)
            elif child.local_name == "state":
                walk(child.node_id, "state", 0)
    except (tf.errors.OpError, ValueError, IndexError, DecodeError) as e:
        raise CheckpointError(
            f"{where}: its object graph is unreadable ({short_reason(e)})"
        ) from None
    return found


def check_shapes(reader, config, where):
    """Raise CheckpointError unless the checkpoint holds the weights config describes,
    each float32 of the shape config implies, and no GRU layer more; and the RNN state,
    if saved, is [BATCH, LAYERS*CELL]. Read from the file's index: nothing is built."""
    saved = saved_variables(reader, where)
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    layers = {name.split("/")[0] for name in saved if re.fullmatch(r"gru\d+/.*", name)}
    if len(layers) != config["layers"]:
        raise CheckpointError(
            f"{where} holds {len(layers)} GRU layers, and its config says {config['layers']}"
        )
    sizes = f"(alphasize {config['alphasize']}, cell_size {config['cell_size']})"
    for name, shape in weight_shapes(config):
        key = saved.get(name)
        if key not in shapes:
            raise CheckpointError(
                f"{where} lacks the weight {name} that its config {sizes} implies"
            )
        if shapes[key] != shape or dtypes[key] != tf.float32:
            raise CheckpointError(
                f"{where}: weight {name} is {dtypes[key].name} {shapes[key]} in the file, "
                f"and its config {sizes} implies float32 {shape}"
            )
    state = shapes.get(saved.get("state"))
    if state is not None and "batch_size" in config:
        shape = [config["batch_size"], config["layers"] * config["cell_size"]]
        if state != shape:
            raise CheckpointError(
                f"{where}: its RNN state is {state} in the file, and its config implies "
                f"{shape} (batch_size, layers x cell_size)"
            )


def restore(checkpoint, prefix):
    """checkpoint.restore(prefix) with every object of the checkpoint and of the file
    matched (what a resume needs: weights, Adam's state, step, RNN state), or
    CheckpointError: a file of another model, optimizer or batch size."""
    try:
        status = checkpoint.restore(prefix)
        status.assert_consumed()
    # shapes that differ: ValueError when restored; objects missing on either side:
    # AssertionError from assert_consumed
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        raise CheckpointError(
            f"checkpoint {prefix} does not hold what this run's model and optimizer "
            f"need ({short_reason(e).rstrip('.')}): resume it with the version that wrote it, "
            "or start a new run"
        ) from None
    return status


def short_reason(error):
    """The gist of a TensorFlow or OS error, without TensorFlow's function-node noise:
    '{{function_node ...}} /path/...; File too large [Op:SaveV2]' -> 'File too large'
    (and the op's name, if it follows)."""
    text = re.sub(r"\{\{.*?\}\}|\[Op:\w+\]( name: \S*)?", "", str(error)).strip()
    lines = text.splitlines() or [type(error).__name__]
    return lines[0].split("; ")[-1].strip()[:200]


def verify(path):
    """Read every tensor of a checkpoint, so that a truncated or scribbled file shows
    now (TensorFlow checks each tensor's CRC32C) and not halfway through a restore."""
    try:
        reader = tf.train.load_checkpoint(path)
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
        json.loads(reader.get_tensor(CONFIG_KEY))
    # what TensorFlow's reader raises on a damaged file varies with the damage; a config
    # that is no string (TypeError) or nested too deep (RecursionError, a RuntimeError)
    except (tf.errors.OpError, ValueError, KeyError, IndexError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} is damaged ({short_reason(e)})") from None


def load_parent_weights(model, prefix, parent_config):
    """Fine-tuning: give model the weights of the checkpoint at prefix, whose alphabet
    the model's begins with. Every weight of the parent is kept as it is; the input
    kernel's rows and the logits layer's columns of the symbols the parent lacks keep
    the values a new model starts from. Shapes are read_config's (checked)."""
    reader = tf.train.load_checkpoint(prefix)
    keys = saved_variables(reader, f"checkpoint {prefix}")
    known = parent_config["alphasize"]
    for layer, weights in model.named_weights().items():
        for name, variable in weights.items():
            value = reader.get_tensor(keys[f"{layer}/{name}"])
            if value.shape != tuple(variable.shape):  # gru0/kernel, softmax/kernel and bias
                grown = variable.numpy()
                if layer == "softmax":
                    grown[..., :known] = value  # [CELL, ALPHASIZE], [ALPHASIZE]
                else:
                    grown[:known] = value  # [ALPHASIZE, 3*CELL]
                value = grown
            variable.assign(value)
