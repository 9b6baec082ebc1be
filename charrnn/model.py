"""The model: stacked GRU cells unrolled over a sequence, one logits layer shared by
every time step. The state goes in and comes out explicitly, so the caller carries
it from batch to batch (training) or from character to character (generation).

    x [BATCH, SEQLEN] -> one-hot -> (dropout -> GRU) x LAYERS -> dropout
      (the first dropout drops whole characters, at its own rate)
      -> all time steps "in the same bag" [BATCH*SEQLEN, CELL] -> Dense -> logits

The weights live in Keras GRU layers, and the same math runs two ways over them:
training on a GPU runs the Keras layers themselves, which TensorFlow runs with cuDNN;
everything else - training on a CPU, and inference (validation, scoring, generation)
on every device - runs fused_gru.py, the same equations ~1.3x faster on a CPU. So
the code that generates text on a GPU is the code the CPU tests run.

Also here: the loss and accuracy.
"""

import math
import os

import keras
import tensorflow as tf

from charrnn import hardware, settings
from charrnn.fused_gru import (
    first_layer_products,
    gru_scan_compiled,
    gru_stack,
    gru_stack_inference,
    matmul,
)


def training_dtype(mixed_precision):
    """The type of training's matmuls: float32; with mixed_precision True, this
    machine's 16-bit type; or the type named (tests try "float16" on a CPU)."""
    if mixed_precision is True:
        return hardware.mixed_precision_dtype()
    return tf.as_dtype(mixed_precision) if mixed_precision else tf.float32


# ---------------------------------------------------------------------------
# The model


def gru_layer(cell_size, dtype=None):
    """A GRU that TensorFlow runs with the cuDNN kernel on a GPU. Every argument
    below is one of cuDNN's conditions (tests/model_test.py pins them): change one and
    the GPU silently falls back to a loop many times slower."""
    return keras.layers.GRU(
        cell_size,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        reset_after=True,  # r applied after the recurrent matmul, as cuDNN computes it
        recurrent_dropout=0.0,
        unroll=False,
        use_cudnn="auto",
        return_sequences=True,
        return_state=True,
        dtype=dtype,
    )


class CharRNN(keras.Model):
    def __init__(
        self,
        alphasize,
        cell_size,
        layers,
        dropout,
        char_dropout,
        fused=None,
        mixed_precision=False,
    ):
        super().__init__()
        self.alphasize = alphasize
        self.cell_size = cell_size
        self.layers_count = layers
        self.dropout_rate = dropout
        self.char_dropout_rate = char_dropout
        # Training: fused on a CPU, Keras' layers (cuDNN) on a GPU; tests choose.
        # Inference is fused whatever this says (see call).
        self.fused = not hardware.on_gpu() if fused is None else fused
        # Mixed precision: matmuls in 16 bits in training; weights, gates, logits and
        # loss stay float32; inference is float32. The fused path casts the matrices
        # itself; Keras' layers take the mixed policy, under which cuDNN's GRU gets
        # float16 inputs, weights and states (off a GPU, where only tests run them,
        # they compute their gates in 16 bits too).
        self.train_dtype = training_dtype(mixed_precision)
        keras_dtype = None
        if self.train_dtype != tf.float32 and not self.fused:
            keras_dtype = f"mixed_{self.train_dtype.name}"
        if self.train_dtype == tf.float16 and not self.fused:
            # TensorFlow's cuDNN RNN kernel computes in float16 when its data are
            # float16 - gates included - unless this is set (cuda_dnn.cc,
            # GetRnnComputeType): then cuDNN computes in float32 from float16 data.
            # Read once, at the first cuDNN RNN call: before any, here.
            os.environ.setdefault("TF_FP16_RNN_USE_FP32_COMPUTE", "1")
        # Layers are attributes, not a Python list: tf.train.Checkpoint does not
        # save layers kept in a list of a keras.Model subclass.
        for i in range(layers):
            setattr(self, f"gru{i}", gru_layer(cell_size, keras_dtype))
        self.logits_layer = keras.layers.Dense(alphasize)  # logits; the loss applies softmax

    @property
    def grus(self):
        return [getattr(self, f"gru{i}") for i in range(self.layers_count)]

    def named_weights(self):
        """{layer: {weight name: variable}}: what a checkpoint saves. Keras 3 layers
        do not expose a GRU's weights to tf.train.Checkpoint (it saved only the
        Dense layer), so checkpoints name every variable themselves."""
        named = {f"gru{i}": gru.cell for i, gru in enumerate(self.grus)}
        # "softmax": the logits layer's name in checkpoints, kept so that the
        # checkpoints written before its attribute was renamed still load
        named["softmax"] = self.logits_layer
        return {layer: {w.name: w for w in obj.weights} for layer, obj in named.items()}

    @property
    def state_size(self):
        return self.layers_count * self.cell_size

    def zero_state(self, batch_size):
        return tf.zeros([batch_size, self.state_size])  # [BATCH, LAYERS*CELL]

    def build(self, *args):
        for i, gru in enumerate(self.grus):
            gru.build((None, None, self.alphasize if i == 0 else self.cell_size))
        self.logits_layer.build((None, self.cell_size))
        self.built = True

    def call(self, x, state, training=False, dropout_seed=None, replica_rows=None):
        """x: int [BATCH, SEQLEN]; state: [BATCH, LAYERS*CELL].
        Returns logits [BATCH, SEQLEN, ALPHASIZE] and the new state [BATCH, LAYERS*CELL].

        In training, dropout_seed (int [2], e.g. [seed, step]) draws the dropout masks
        statelessly (None: no dropout): a step's masks depend on nothing else, so a
        resumed run draws exactly the masks the uninterrupted run would have.
        replica_rows = [first, total]: x holds rows first.. of a batch of total rows (one
        replica's share under tf.distribute), whose masks are those rows of the whole
        batch's masks, so that a distributed step drops what one process would. Both
        ways of computing draw the same masks, in time-major order [SEQLEN, BATCH, ...]."""
        # Inference runs the fused equations on every device: generation runs the model
        # inside an XLA-compiled loop, and Keras' cuDNN GRU cannot be compiled by XLA.
        keras_layers = bool(training) and not self.fused
        return self._forward(x, state, training, dropout_seed, replica_rows, keras_layers)

    def keras_call(self, x, state, training=False, dropout_seed=None, replica_rows=None):
        """call() through Keras' GRU layers whatever the device and the mode: what
        training runs on a GPU, for the tests and tools/gpu_check.py to compare with the
        fused path."""
        return self._forward(x, state, training, dropout_seed, replica_rows, keras_layers=True)

    def _forward(self, x, state, training, dropout_seed, replica_rows, keras_layers, scan=None):
        keep = self._keep_masks(tf.shape(x), training, dropout_seed, replica_rows)
        states_in = tf.split(state, self.layers_count, axis=1)  # LAYERS x [BATCH, CELL]
        if keras_layers:
            logits, states_out = self._keras(x, states_in, keep, training)
        else:
            logits, states_out = self._fused(x, states_in, keep, training, scan)
        return logits, tf.concat(states_out, axis=1)  # [BATCH, LAYERS*CELL]

    def _keep_masks(self, shape, training, seed, replica_rows=None):
        """Dropout as multipliers: 0 for a dropped value, 1/(1-rate) for a kept one; one
        per layer input (the first drops whole characters: one value of a one-hot
        vector) and one on the output. None where not dropping."""
        rates = [self.char_dropout_rate] + [self.dropout_rate] * self.layers_count
        if not training or seed is None:
            return [None] * len(rates)
        seqlen, batch = shape[1], shape[0]
        first, total = (
            (replica_rows[0], replica_rows[1]) if replica_rows is not None else (0, batch)
        )
        masks = []
        for i, rate in enumerate(rates):
            if rate == 0:
                masks.append(None)
                continue
            width = 1 if i == 0 else self.cell_size
            s = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), i)
            u = tf.random.stateless_uniform([seqlen, total, width], s)  # [SEQLEN, TOTAL, WIDTH]
            u = (
                u[:, first : first + batch] if replica_rows is not None else u
            )  # [SEQLEN, BATCH, WIDTH]
            masks.append(tf.cast(u >= rate, tf.float32) / (1 - rate))
        return masks

    def scoring_call(self, x, state):
        """call() without dropout for one long stream of text (generate.Scorer): each
        layer's time steps one XLA-compiled loop, the matmuls over the whole sequence
        outside it (fused_gru.gru_scan_compiled). Not for a caller compiled whole."""
        return self._forward(x, state, False, None, None, False, gru_scan_compiled)

    def _fused(self, x, states_in, keep, training, scan=None):
        """The fused GRU (fused_gru.py) over these weights: gru_stack in training, for
        its backward pass; otherwise gru_stack_inference, for sequences of any length."""
        seqlen, batch = tf.shape(x)[1], tf.shape(x)[0]
        dtype = self.train_dtype if training else tf.float32
        codes = transpose_codes(x)  # [SEQLEN, BATCH]
        cell0 = self.grus[0].cell
        xw0 = first_layer_products(
            codes, cell0.kernel, cell0.bias[0], keep[0], self.char_dropout_rate
        )
        weights = [  # LAYERS x (W, b, U, c), the matrices in 16 bits under mixed precision
            (
                tf.cast(g.cell.kernel, dtype),
                g.cell.bias[0],
                tf.cast(g.cell.recurrent_kernel, dtype),
                g.cell.bias[1],
            )
            for g in self.grus
        ]
        if training:
            h, states_out = gru_stack(xw0, states_in, weights, keep[1:])  # [SEQLEN, BATCH, CELL]
        else:  # no dropout
            h, states_out = gru_stack_inference(
                xw0, states_in, weights, scan
            )  # [SEQLEN, BATCH, CELL]
        # batch-major before the logits, not after: CELL values a character, not ALPHASIZE
        h = tf.transpose(h, [1, 0, 2])  # [BATCH, SEQLEN, CELL]
        # One logits layer for every time step: put them all in the same bag.
        flat = tf.reshape(h, [-1, self.cell_size])  # [BATCH*SEQLEN, CELL]
        logits = matmul(flat, tf.cast(self.logits_layer.kernel, dtype)) + self.logits_layer.bias
        return tf.reshape(logits, [batch, seqlen, self.alphasize]), states_out

    def _keras(self, x, states_in, keep, training):
        """Keras' GRU layers (cuDNN on a GPU), batch-major as they want it."""

        def batch_major(mask):  # [BATCH, SEQLEN, WIDTH]
            return tf.transpose(mask, [1, 0, 2])

        h = tf.one_hot(x, self.alphasize)  # [BATCH, SEQLEN, ALPHASIZE]
        states_out = []
        for i, (gru, s) in enumerate(zip(self.grus, states_in, strict=True)):
            if keep[i] is not None:
                h = h * tf.cast(batch_major(keep[i]), h.dtype)
            h, s = gru(h, initial_state=s, training=training)  # [BATCH, SEQLEN, CELL]
            states_out.append(tf.cast(s, tf.float32))
        h = tf.cast(h, tf.float32)
        if keep[-1] is not None:
            h = h * batch_major(keep[-1])
        batch, seqlen = tf.shape(x)[0], tf.shape(x)[1]
        flat = tf.reshape(h, [-1, self.cell_size])  # [BATCH*SEQLEN, CELL]
        logits = tf.cast(self.logits_layer(flat), tf.float32)  # [BATCH*SEQLEN, ALPHASIZE]
        return tf.reshape(logits, [batch, seqlen, self.alphasize]), states_out

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None, None], tf.float32),
        ],
        autograph=False,
    )
    def infer(self, x, state):
        """Compiled inference (no dropout): validation, scoring and generation's prime.
        x: int [BATCH, SEQLEN]; state: [BATCH, LAYERS*CELL]. Returns logits
        [BATCH, SEQLEN, ALPHASIZE] and the new state. (Not keras.Model.predict, whose
        signature and batching are other.)"""
        return self(x, state, training=False)

    def step(self, code, state):
        """One character per stream, for generation: inference over a sequence of
        length 1 (which the fused GRU runs without a loop). code: int [STREAMS];
        state: [STREAMS, LAYERS*CELL]. Returns logits [STREAMS, ALPHASIZE], new state."""
        logits, state = self(code[:, None], state)  # [STREAMS, 1, ALPHASIZE]
        return logits[:, 0], state


def transpose_codes(codes):
    """int32 [A, B] -> [B, A], transposed as floats (exact below 2**24, and code points
    end at 0x10FFFF): TensorFlow's oneDNN build logs an error on stderr for every
    integer transpose."""
    return tf.cast(tf.transpose(tf.cast(codes, tf.float32)), tf.int32)


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


def build_model(config, fused=None, mixed_precision=False):
    """The model a checkpoint's config describes, with its weights created. fused:
    whether training runs the fused path (None: on a CPU); mixed_precision: False,
    True (this machine's 16-bit type) or a type's name (see training_dtype)."""
    model = CharRNN(
        config["alphasize"],
        config["cell_size"],
        config["layers"],
        config["dropout"],
        settings.saved_value(config, "char_dropout"),  # older configs: at --dropout
        fused=fused,
        mixed_precision=mixed_precision,
    )
    model(tf.zeros([1, 1], tf.int32), model.zero_state(1))
    return model


# ---------------------------------------------------------------------------
# Loss and accuracy, and weights worth keeping


class Diverged(Exception):
    """The loss or the weights stopped being finite numbers."""


def check_finite(model, step, x, y):
    """Raise Diverged unless the model's weights are finite and give a finite loss on
    x, y [BATCH, SEQLEN] from a zero state (weights of 1e38 are finite, yet useless to
    save). step: the step that made them, for the message."""
    if not all(tf.reduce_all(tf.math.is_finite(v)) for v in model.trainable_variables):
        raise Diverged(f"the weights became infinite or NaN by step {step}")
    logits, _ = model.infer(x, model.zero_state(len(x)))
    loss = float(loss_and_accuracy(logits, y)[0])
    if not math.isfinite(loss):
        raise Diverged(f"the weights of step {step} give a loss of {loss}")


def loss_and_accuracy(logits, y):
    """Mean softmax cross-entropy (nats per character) and accuracy of logits
    [..., ALPHASIZE] against the characters y [...] that follow: training's and
    validation's figures, with a gradient."""
    n = tf.cast(tf.size(y), tf.float32)
    flat = tf.reshape(logits, [-1, tf.shape(logits)[-1]])  # [N, ALPHASIZE]
    nats, hits = _cross_entropy(flat, tf.reshape(y, [-1]))  # [N] each
    return tf.reduce_sum(nats) / n, tf.cast(tf.reduce_sum(hits), tf.float32) / n


def nats_and_hits(logits, y, real):
    """The cross-entropy (nats) and hit (1 or 0) of each character, 0 where real is
    False (padding): logits [..., ALPHASIZE], y and real [...]. The same definition as
    loss_and_accuracy's, for scoring (rnn_play.py --score, the export), no gradient."""
    shape = tf.shape(y)
    flat = tf.reshape(logits, [-1, tf.shape(logits)[-1]])  # [N, ALPHASIZE]
    nats, hits, _ = _cross_entropy_forward(flat, tf.reshape(y, [-1]))  # [N] each
    nats, hits = tf.reshape(nats, shape), tf.reshape(hits, shape)
    return tf.where(real, nats, 0.0), tf.where(real, hits, 0)


@tf.custom_gradient
def _cross_entropy(logits, y):
    """(cross-entropy, hit) of each character, of logits [N, ALPHASIZE] and labels
    [N], with logits read as few times as XLA can: with thousands of symbols the
    logits are the biggest tensor of a step (5,000 symbols: 120 MB), and TensorFlow's
    own op with the argmax beside it read them ~3x as often (measured 145 ms against
    47 ms for [6000, 5000]). Its gradient, softmax minus one-hot, is computed in one
    pass when asked for."""
    nats, hits, lse = _cross_entropy_forward(logits, y)

    def grad(d_nats, d_hits):
        return _cross_entropy_backward(logits, y, lse, d_nats), None

    return (nats, hits), grad


@tf.function(jit_compile=True, autograph=False)
def _cross_entropy_forward(logits, y):
    top = tf.reduce_max(logits, axis=-1)  # [N]
    lse = top + tf.math.log(tf.reduce_sum(tf.exp(logits - top[:, None]), axis=-1))  # [N]
    picked = tf.gather(logits, y, batch_dims=1)  # [N]: the logit of the right character
    # a hit: the right character's logit is the highest (an exact tie counts as one)
    hits = tf.cast(picked >= top, tf.int32)
    return lse - picked, hits, lse


@tf.function(jit_compile=True, autograph=False)
def _cross_entropy_backward(logits, y, lse, d_nats):
    softmax = tf.exp(logits - lse[:, None])  # [N, ALPHASIZE]
    return (softmax - tf.one_hot(y, tf.shape(logits)[-1])) * d_nats[:, None]


def mean_loss_and_accuracy(model, pieces):
    """(mean nats per character, mean accuracy, characters) of the model over pieces,
    an iterable of (x, y) int32 arrays [ROWS, LENGTH], y the characters that follow x:
    the same rows cut along their length, so that the first piece starts from a zero
    state and each next one from the state the one before ended in. Means are weighted
    by the characters of each piece, so that a shorter last piece counts for what it holds."""
    total_loss = total_hits = 0.0
    characters, state = 0, None
    for x, y in pieces:
        if state is None:
            state = model.zero_state(len(x))  # [ROWS, LAYERS*CELL]
        logits, state = model.infer(x, state)  # [ROWS, LENGTH, ALPHASIZE]
        loss, accuracy = loss_and_accuracy(logits, y)
        total_loss += float(loss) * x.size
        total_hits += float(accuracy) * x.size
        characters += x.size
    if characters == 0:
        raise ValueError("mean_loss_and_accuracy: no characters to score")
    return total_loss / characters, total_hits / characters, characters
