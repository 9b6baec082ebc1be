"""Self-describing checkpoints: where they live, how to find them, what they hold.

    checkpoints/<run>/ckpt-<step>.index, .data-*   TensorFlow checkpoint (no pickle)
    checkpoints/<run>/checkpoint                    which of them is newest

A checkpoint holds the model's weights, and for resuming the optimizer, the step
and the RNN state of every batch row - plus `config`, a JSON string with the
hyperparameters and the alphabet, so rnn_play.py needs no flags repeated.

A checkpoint is input like any other: before a model is built from one, its config
is checked (keys, types, ranges), every weight's shape in the file is checked
against the config, and the memory the model needs against what this machine has.
"""

import fcntl
import glob
import json
import math
import os
import re
import shutil

import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import trackable_object_graph_pb2

import txtutils
from model import build_model

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


def _whole(v):
    return type(v) is int  # JSON's true and 1.0 are not whole numbers of layers


def _number(v):
    return _whole(v) or (type(v) is float and math.isfinite(v))


def _file_globs(v):
    return type(v) is list and all(type(g) is str for g in v)


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
            and _whole(e[1])
            and type(e[2]) is str
            for e in entries
        )

    return type(v) is dict and files("train") and files("valid")


MAX_ALPHASIZE = 0x110000  # one symbol per Unicode code point at most
_POSITIVE = (lambda v: _whole(v) and v >= 1, "a whole number above 0")
_FRACTION = (lambda v: _number(v) and 0 <= v < 1, "a number from 0 up to (not including) 1")
# key: (test, what the value must be). The same ranges as rnn_train.py's flags; keys
# not listed are left alone (a later version may add some).
CONFIG_RULES = {
    "alphasize": (
        lambda v: _whole(v) and txtutils.ALPHASIZE <= v <= MAX_ALPHASIZE,
        f"a whole number from {txtutils.ALPHASIZE} to {MAX_ALPHASIZE}",
    ),
    "alphabet": (
        lambda v: type(v) is str and _alphabet(v),
        "the 98 symbols of the talk's alphabet and other characters, each once",
    ),
    "min_char_count": _POSITIVE,
    "parent": (lambda v: v is None or type(v) is str, "a checkpoint's path, or null"),
    "data_fingerprint": (_fingerprint, "the files read, as [path, bytes, sha256] lists"),
    "cell_size": _POSITIVE,
    "layers": _POSITIVE,
    "seqlen": _POSITIVE,
    "batch_size": _POSITIVE,
    "dropout": _FRACTION,
    "dropout_from": _FRACTION,
    "min_lr": _FRACTION,
    "learning_rate": (lambda v: _number(v) and v > 0, "a number above 0"),
    "clip_norm": (lambda v: _number(v) and v >= 0, "a number, 0 or more"),
    "warmup": (lambda v: _whole(v) and v >= 0, "a whole number, 0 or more"),
    "schedule": (lambda v: v in ("constant", "cosine"), '"constant" or "cosine"'),
    "epochs": _POSITIVE,
    "max_steps": (lambda v: v is None or _POSITIVE[0](v), "a whole number above 0, or null"),
    "seed": (lambda v: _whole(v) and 0 <= v < 2**32, "a whole number from 0 to 2**32-1"),
    "mixed_precision": (
        lambda v: type(v) is bool or v in ("auto", "float16", "bfloat16", "float32"),
        'true, false or "auto"',
    ),
    "deterministic": (lambda v: type(v) is bool, "true or false"),
    "data": (lambda v: _file_globs(v) and len(v) > 0, "a list of file names or globs"),
    "validation": (
        lambda v: v is None or _file_globs(v),
        "a list of file names or globs, or null",
    ),
    "log_every": _POSITIVE,
    "eval_every": _POSITIVE,
    "sample_every": _POSITIVE,
    "save_every": _POSITIVE,
    "keep": _POSITIVE,
}
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


def weight_shapes(config):
    """(name, shape) of every weight the model of config has, in checkpoint terms
    ("gru0/kernel", [ALPHASIZE, 3*CELL]): a generator, so a config of 100,000 layers
    costs nothing until its layers are compared."""
    a, c = config["alphasize"], config["cell_size"]
    for i in range(config["layers"]):
        yield f"gru{i}/kernel", [a if i == 0 else c, 3 * c]  # z, r and h side by side
        yield f"gru{i}/recurrent_kernel", [c, 3 * c]
        yield f"gru{i}/bias", [2, 3 * c]  # input and recurrent biases (reset_after)
    yield "softmax/kernel", [c, a]
    yield "softmax/bias", [a]


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


# ---------------------------------------------------------------------------
# Memory: refuse what this machine cannot hold before allocating any of it

FLOAT = 4  # bytes: weights, states and activations are float32
# Keras' objects of one GRU layer, besides its weights: 130-180 KB measured (TF 2.21,
# build_model with 100 and 400 layers of 1 unit), which is what 100,000 layers run out of
LAYER_BYTES = 128 * 1024


def parameters(config):
    """The number of weights of the model of config."""
    return sum(math.prod(shape) for _, shape in weight_shapes(config))


def memory_needed(config, rows, length, training=False):
    """Bytes the model of config needs at least, to run rows sequences of length
    characters at once (a batch of BATCH x SEQLEN; STREAMS x 1 for generation, or its
    prime's length) - a floor, as TensorFlow needs more besides (its own workspace,
    copies), so that what is refused beyond it could not have run here:

    - the weights, float32, and each layer's Keras objects (LAYER_BYTES);
    - in training, also the gradients and Adam's two moments (3 more copies of the
      weights), and what the backward pass keeps of every character: 6 x CELL per
      layer (the state before the step, 4 gate values, the output) and the logits
      and their gradient;
    - in inference, one layer at a time: its input products (3 x CELL), outputs
      (CELL) and the outputs of the layer below (CELL), and the logits; plus the
      states in and out, LAYERS x CELL a row each.

    config needs alphasize, cell_size and layers (check_config's types): Python's
    integers, so 10**6 units or 10**5 layers give a number of bytes, not an overflow."""
    a, c, layers = config["alphasize"], config["cell_size"], config["layers"]
    copies = 4 if training else 1
    kept = 6 * c * layers if training else 5 * c  # per character
    per_character = kept + (2 * a if training else a)
    states = 2 * rows * layers * c
    activations = FLOAT * (rows * length * per_character + states)
    return FLOAT * copies * parameters(config) + LAYER_BYTES * layers + activations


def available_memory():
    """Bytes this process can still allocate: the kernel's MemAvailable (or MemTotal,
    from a kernel older than 3.14), less if a cgroup (a container) limits it more; None
    where /proc/meminfo is not there (not Linux), and no check is made."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        field = fields.get("MemAvailable") or fields["MemTotal"]
        available = int(field.split()[0]) * 1024  # given in kB
    except (OSError, KeyError, ValueError, IndexError):
        return None
    limits = [  # cgroup v2, then v1: the limit and what is used of it
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ]
    for limit_file, usage_file in limits:
        try:
            with open(limit_file) as f, open(usage_file) as g:
                limit, used = f.read().strip(), int(g.read())
            if limit.isdigit():  # "max" (v2): no limit
                available = min(available, max(int(limit) - used, 0))
        except (OSError, ValueError):
            continue
    return available


def size(n):
    """Bytes for people: '350 kB', '512 MB', '3.2 GB', '194 GB'."""
    if n < 10**6:
        return f"{n / 10**3:,.0f} kB"
    if n < 10**9:
        return f"{n / 10**6:,.0f} MB"
    return f"{n / 10**9:,.1f} GB" if n < 10**11 else f"{n / 10**9:,.0f} GB"


def check_memory(needed, what, fix):
    """Raise CheckpointError if needed bytes exceed what this machine has available,
    in one line: '{what} needs at least N GB of memory, and this machine has M GB
    available: {fix}'. Where the memory available is unknown, check nothing."""
    available = available_memory()
    if available is not None and needed > available:
        raise CheckpointError(
            f"{what} needs at least {size(needed)} of memory, and this machine has "
            f"{size(available)} available: {fix}"
        )


def check_training(config, validation=None):
    """For rnn_train.py, on the config of every run (new or resumed) before anything
    is built: its settings within check_config's rules, and the memory training needs
    on this machine - a step of BATCH x SEQLEN, or a validation call of validation =
    (rows, characters) if that needs more. Raises CheckpointError."""
    check_config(config, "the run's settings")
    rows, length = config["batch_size"], config["seqlen"]
    needed = memory_needed(config, rows, length, training=True)
    if validation:
        needed = max(needed, memory_needed(config, *validation))
    shape = f"{config['layers']} x {config['cell_size']} GRU"
    check_memory(
        needed,
        f"training a {shape} on batches of {rows} x {length}",
        "choose a smaller --cell-size, --layers or --batch-size",
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
    # what TensorFlow's reader raises on a damaged file varies with the damage; a config
    # that is no string (TypeError) or nested too deep (RecursionError, a RuntimeError)
    except (tf.errors.OpError, ValueError, KeyError, IndexError, RuntimeError, TypeError) as e:
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


def load_model(path):
    """The model stored at checkpoint path, rebuilt from its own config: (model, config).
    The config and the shapes of the weights are checked (read_config), and the memory
    the model needs, before anything is built."""
    config = read_config(path)
    shape = f"{config['layers']} x {config['cell_size']} GRU"
    check_memory(
        memory_needed(config, rows=1, length=1),
        f"the model of {path} ({shape}, {parameters(config):,} weights)",
        "load it on a machine with more memory",
    )
    model = build_model(config)
    status = checkpoint_object(model, config).restore(path).expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError:
        raise CheckpointError(f"{path} does not hold the weights its config describes") from None
    return model, config
