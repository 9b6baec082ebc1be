"""Memory: refuse what this machine cannot hold before allocating any of it.

A floor of what a model needs (weights, optimizer, activations), against what the
kernel says is available (and a container's limit): a training run, a model loaded
to play, and --streams each checked before anything is built.
"""

import math

from charrnn import cli
from charrnn.model import weight_shapes


class OutOfMemory(Exception):
    """What was asked for needs more memory than this machine has; the message says
    how much, and what to ask for instead."""


FLOAT = 4  # bytes: weights, states and activations are float32
# Keras' objects of one GRU layer, besides its weights: 130-180 KB measured (TF 2.21,
# build_model with 100 and 400 layers of 1 unit), which is what 100,000 layers run out of
LAYER_BYTES = 128 * 1024


def parameters(config):
    """The number of weights of the model of config."""
    return sum(math.prod(shape) for _, shape in weight_shapes(config))


def needed(config, rows, length, training=False):
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

    config needs alphasize, cell_size and layers (ckpt.check_config's types): Python's
    integers, so 10**6 units or 10**5 layers give a number of bytes, not an overflow."""
    a, c, layers = config["alphasize"], config["cell_size"], config["layers"]
    copies = 4 if training else 1
    kept = 6 * c * layers if training else 5 * c  # per character
    per_character = kept + (2 * a if training else a)
    states = 2 * rows * layers * c
    activations = FLOAT * (rows * length * per_character + states)
    return FLOAT * copies * parameters(config) + LAYER_BYTES * layers + activations


def chars_per_call(budget, rows, alphasize, most):
    """Characters per compiled call that keep the call's logits [ROWS, CHARS, ALPHASIZE]
    (float32) within budget bytes: most, fewer for a big alphabet, never fewer than 1.
    The logits are what grows with the alphabet; each caller says why its budget."""
    return max(1, min(most, budget // (FLOAT * rows * alphasize)))


def available():
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


def check(bytes_needed, what, fix):
    """Raise OutOfMemory if bytes_needed exceed what this machine has available,
    in one line: '{what} needs at least N GB of memory, and this machine has M GB
    available: {fix}'. Where the memory available is unknown, check nothing."""
    have = available()
    if have is not None and bytes_needed > have:
        raise OutOfMemory(
            f"{what} needs at least {cli.size(bytes_needed)} of memory, and this machine has "
            f"{cli.size(have)} available: {fix}"
        )


def check_training(config, validation=None):
    """For rnn_train.py, on the config of every run (new or resumed) before anything
    is built: the memory training needs on this machine - a step of BATCH x SEQLEN,
    or a validation call of validation = (rows, characters) if that needs more.
    Raises OutOfMemory."""
    rows, length = config["batch_size"], config["seqlen"]
    most = needed(config, rows, length, training=True)
    if validation:
        most = max(most, needed(config, *validation))
    shape = f"{config['layers']} x {config['cell_size']} GRU"
    check(
        most,
        f"training a {shape} on batches of {rows} x {length}",
        "choose a smaller --cell-size, --layers or --batch-size",
    )
