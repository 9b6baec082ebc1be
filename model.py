"""The model: stacked GRU cells unrolled over a sequence, one softmax layer shared by
every time step. The state goes in and comes out explicitly, so the caller carries
it from batch to batch (training) or from character to character (generation).

    x [BATCH, SEQLEN] -> one-hot -> (dropout -> GRU) x LAYERS -> dropout
      -> all time steps "in the same bag" [BATCH*SEQLEN, CELL] -> Dense -> logits

The weights live in Keras GRU layers, and the same math runs two ways over them:
- on a GPU, through the Keras layers themselves, which TensorFlow runs with cuDNN;
- elsewhere, through the fused GRU below, ~1.3x faster on a CPU: the first layer's
  one-hot product is a lookup (a one-hot vector times a matrix is a row of it);
  each time step's gates are one XLA-compiled function between oneDNN matmuls;
  the layers run as a wavefront (gru_stack) so two chains of small matmuls keep
  two cores busy; and a hand-written backward pass computes each weight gradient
  once per sequence, as one big matmul.
model_test.py checks that both ways give the same logits, states and gradients.
"""

import keras
import numpy as np
import tensorflow as tf


def gru_layer(cell_size, dtype=None):
    """A GRU that TensorFlow runs with the cuDNN kernel on a GPU. Every argument
    below is one of cuDNN's conditions (model_test.py pins them): change one and
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


def on_gpu():
    return bool(tf.config.list_physical_devices("GPU"))


def mixed_precision_dtype():
    """The 16-bit type this machine computes fastest with: bfloat16 on CPUs and on
    GPUs from Ampere (compute capability 8.0) on, float16 on older GPUs."""
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability and capability < (8, 0):
            return tf.float16
    return tf.bfloat16


# ---------------------------------------------------------------------------
# The fused GRU. Keras' GRU equations with reset_after=True (cuDNN's):
#   z = sigmoid(x Wz + bz + s Uz + cz)        update gate
#   r = sigmoid(x Wr + br + s Ur + cr)        reset gate
#   h = tanh(x Wh + bh + r * (s Uh + ch))     candidate
#   s' = z * s + (1 - z) * h
# with W = kernel [IN, 3*CELL], U = recurrent_kernel [CELL, 3*CELL], the gates in the
# order z, r, h, and bias [2, 3*CELL] = (b, c).


def _matmul(a, b, **kwargs):
    """a x b in b's type (float32, or 16 bits under mixed precision), result in float32."""
    return tf.cast(tf.matmul(tf.cast(a, b.dtype), b, **kwargs), tf.float32)


@tf.function(jit_compile=True, autograph=False)
def gru_gates(xw, rec, s, c, b=None, keep=None):
    """One time step's gates, given its products. xw: [BATCH, 3*CELL], the input
    product (plus b, or b given here); rec: [BATCH, 3*CELL], the recurrent product
    s U; c: [3*CELL]; keep: the dropout multipliers [BATCH, CELL] of this output.
    Returns the new state [BATCH, CELL], the output (the state after dropout) and the
    values the backward pass needs. (XLA fuses these small element-wise ops into one
    call; the matmuls stay outside, where oneDNN runs them faster than XLA, in
    bfloat16 too.)"""
    n = rec.shape[-1] // 3  # CELL (known where the state's shape may not be)
    rec = rec + c
    xw = xw if b is None else xw + b
    zr = tf.sigmoid(xw[:, : 2 * n] + rec[:, : 2 * n])
    z, r = zr[:, :n], zr[:, n:]
    rh = rec[:, 2 * n :]
    h = tf.tanh(xw[:, 2 * n :] + r * rh)
    new = h + z * (s - h)
    return new, new if keep is None else new * keep, (z, r, rh, h)


def gru_step(xw, s, U, c):
    """One time step of a GRU layer, no dropout: the new state [BATCH, CELL]."""
    return gru_gates(xw, _matmul(s, U), s, c)[0]


@tf.function(jit_compile=True, autograph=False)
def gru_gates_grad(ds, ds_rec, d_out, keep, s, z, r, rh, h):
    """Backward through gru_gates: from the loss gradients on the new state (ds + ds_rec,
    from the next time step) and on the output (d_out, from the layer above), to
    those on xw and on the recurrent product (both [BATCH, 3*CELL]), and the part of
    the gradient on s that does not go through the recurrent product."""
    ds = ds + ds_rec + (d_out if keep is None else d_out * keep)
    da_h = ds * (1 - z) * (1 - h * h)  # s' = h + z (s - h), h = tanh(a_h)
    da_z = ds * (s - h) * z * (1 - z)  # z = sigmoid(a_z)
    da_r = da_h * rh * r * (1 - r)  # a_h = xh + r rh, r = sigmoid(a_r)
    d_xw = tf.concat([da_z, da_r, da_h], axis=1)
    d_rec = tf.concat([da_z, da_r, da_h * r], axis=1)
    return d_xw, d_rec, ds * z


def gru_stack(xw0, states, weights, keep):
    """Training: the whole GRU stack over SEQLEN time steps (known when traced).

    xw0: [SEQLEN, BATCH, 3*CELL], the first layer's input products (plus b);
    states: LAYERS x [BATCH, CELL]; weights: LAYERS x (W, b, U, c), W and b unused
    for the first layer (16-bit W and U under mixed precision); keep: LAYERS x
    [SEQLEN, BATCH, CELL], the dropout multipliers of each layer's output, or None.
    Returns the top layer's outputs [SEQLEN, BATCH, CELL] and the last states.

    Each layer's input products are computed a time step at a time, so that layer i
    can run step t while layer i-1 runs step t+1 (and the other way in the backward
    pass): two chains of small matmuls keep two cores busier than one chain. The
    weight gradients wait for the end of the sequence: one big matmul each."""
    layers, seqlen = len(weights), xw0.shape[0]
    keep = keep or [None] * layers
    flat_weights = [w for layer in weights for w in layer]
    flat_keep = [k for k in keep if k is not None]

    @tf.custom_gradient
    def run(xw0, *args):
        states0 = args[:layers]
        ws = [args[layers + 4 * i : layers + 4 * i + 4] for i in range(layers)]
        keeps = iter(args[5 * layers :])
        keeps = [tf.unstack(next(keeps)) if k is not None else [None] * seqlen for k in keep]
        inputs = tf.unstack(xw0)  # layer 0: input products; above: outputs
        saved, last = [], []
        for i, (W, b, U, c) in enumerate(ws):
            s, seen, outputs, gates = states0[i], [], [], []
            for t in range(seqlen):
                xw = inputs[t] if i == 0 else _matmul(inputs[t], W)  # [BATCH, 3*CELL]
                seen.append(s)
                s, out, g = gru_gates(xw, _matmul(s, U), s, c, None if i == 0 else b, keeps[i][t])
                outputs.append(out)
                gates.append(g)
            saved.append((inputs, seen, gates))
            inputs = outputs
            last.append(s)

        def grad(d_top, *d_last):
            d_outs, d_args, d_states0 = tf.unstack(d_top), [], [None] * layers
            for i in reversed(range(layers)):
                W, _, U, _ = ws[i]
                layer_inputs, seen, gates = saved[i]
                ds, ds_rec = d_last[i], tf.zeros_like(d_last[i])  # [BATCH, CELL]
                d_xw, d_rec, d_inputs = [], [], []
                for t in reversed(range(seqlen)):
                    dxw, drec, ds = gru_gates_grad(
                        ds, ds_rec, d_outs[t], keeps[i][t], seen[t], *gates[t]
                    )
                    ds_rec = _matmul(drec, U, transpose_b=True)
                    if i > 0:
                        d_inputs.append(_matmul(dxw, W, transpose_b=True))
                    d_xw.append(dxw)
                    d_rec.append(drec)
                d_xw, d_rec = (
                    tf.concat(d_xw[::-1], 0),
                    tf.concat(d_rec[::-1], 0),
                )  # [SEQLEN*BATCH, 3*CELL]
                dU = _weight_grad(tf.concat(seen, 0), d_rec, U.dtype)
                if i > 0:
                    dW = _weight_grad(tf.concat(layer_inputs, 0), d_xw, W.dtype)
                    d_layer = [dW, _column_sums(d_xw), dU, _column_sums(d_rec)]
                    d_outs = d_inputs[::-1]
                else:
                    d_layer = [None, None, dU, _column_sums(d_rec)]
                    d_xw0 = tf.reshape(d_xw, xw0.shape)
                d_args = d_layer + d_args
                d_states0[i] = ds + ds_rec
            return [d_xw0, *d_states0, *d_args, *[None] * len(flat_keep)]

        return (tf.stack(inputs), *last), grad

    top, *last = run(xw0, *states, *flat_weights, *flat_keep)
    return top, last


def _weight_grad(inputs, d_products, dtype):
    """inputs^T d_products: [IN, N] x [N, 3*CELL], the gradient of a weight matrix of
    type dtype from every row (time step and batch row) at once."""
    return tf.cast(_matmul(inputs, tf.cast(d_products, dtype), transpose_a=True), dtype)


def _column_sums(x):
    """x summed over its rows, as a matmul: ~10x faster than reduce_sum here."""
    return tf.matmul(tf.ones([1, tf.shape(x)[0]]), x)[0]


@tf.custom_gradient
def lookup(table, codes):
    """table[codes]: the product of one-hot vectors and table, as a lookup. Its
    gradient is the one-hot product's, one dense matmul; a lookup's own is a list of
    BATCH*SEQLEN rows, which Adam would then update one by one, much slower."""

    def grad(d):  # d: [..., WIDTH]
        onehot = tf.one_hot(tf.reshape(codes, [-1]), tf.shape(table)[0])  # [N, ROWS]
        return tf.matmul(onehot, tf.reshape(d, [-1, tf.shape(d)[-1]]), transpose_a=True), None

    return tf.gather(table, codes), grad


def gru_scan(xw, s0, U, c):
    """Inference: one GRU layer over xw [SEQLEN, BATCH, 3*CELL] of any length, in a loop."""
    states = tf.scan(lambda s, xw_t: gru_step(xw_t, s, U, c), xw, initializer=s0)
    return states, states[-1]


# ---------------------------------------------------------------------------


class CharRNN(keras.Model):
    def __init__(self, alphasize, cell_size, layers, dropout, fused=None, mixed_precision=False):
        super().__init__()
        self.alphasize = alphasize
        self.cell_size = cell_size
        self.layers_count = layers
        self.dropout_rate = dropout
        # Fused on a CPU, Keras' layers (cuDNN) on a GPU; tests choose.
        self.fused = not on_gpu() if fused is None else fused
        # Mixed precision: matmuls in 16 bits in training; weights, gates, softmax and
        # loss stay float32. The fused path infers in float32; on a GPU, Keras' layers
        # take the mixed policy for both.
        self.train_dtype = mixed_precision_dtype() if mixed_precision else tf.float32
        keras_dtype = None
        if mixed_precision and not self.fused:
            keras_dtype = f"mixed_{self.train_dtype.name}"
        # Layers are attributes, not a Python list: tf.train.Checkpoint does not
        # save layers kept in a list of a keras.Model subclass.
        for i in range(layers):
            setattr(self, f"gru{i}", gru_layer(cell_size, keras_dtype))
        self.softmax = keras.layers.Dense(alphasize)

    @property
    def grus(self):
        return [getattr(self, f"gru{i}") for i in range(self.layers_count)]

    def named_weights(self):
        """{layer: {weight name: variable}}: what a checkpoint saves. Keras 3 layers
        do not expose a GRU's weights to tf.train.Checkpoint (it saved only the
        Dense layer), so checkpoints name every variable themselves."""
        named = {f"gru{i}": gru.cell for i, gru in enumerate(self.grus)}
        named["softmax"] = self.softmax
        return {layer: {w.name: w for w in obj.weights} for layer, obj in named.items()}

    @property
    def state_size(self):
        return self.layers_count * self.cell_size

    def zero_state(self, batch_size):
        return tf.zeros([batch_size, self.state_size])  # [BATCH, LAYERS*CELL]

    def build(self, *args):
        for i, gru in enumerate(self.grus):
            gru.build((None, None, self.alphasize if i == 0 else self.cell_size))
        self.softmax.build((None, self.cell_size))
        self.built = True

    def call(self, x, state, training=False, dropout_seed=None, rows=None):
        """x: int [BATCH, SEQLEN]; state: [BATCH, LAYERS*CELL].
        Returns logits [BATCH, SEQLEN, ALPHASIZE] and the new state [BATCH, LAYERS*CELL].

        In training, dropout_seed (int [2], e.g. [seed, step]) draws the dropout masks
        (None: no dropout). rows = [first, total]: x holds rows first.. of a batch of
        total rows (one replica's share under tf.distribute), and draws those rows of
        the whole batch's masks, so that a distributed step drops what one process would.
        statelessly: a step's masks depend on nothing else, so a resumed run draws
        exactly the masks the uninterrupted run would have. Both ways of computing
        draw the same masks, in time-major order [SEQLEN, BATCH, ...]."""
        keep = self._keep_masks(tf.shape(x), training, dropout_seed, rows)
        states_in = tf.split(state, self.layers_count, axis=1)  # LAYERS x [BATCH, CELL]
        compute = self._fused if self.fused else self._keras
        logits, states_out = compute(x, states_in, keep, training)
        return logits, tf.concat(states_out, axis=1)

    def _keep_masks(self, shape, training, seed, rows=None):
        """Dropout as multipliers: 0 for a dropped value, 1/(1-rate) for a kept one; one
        per layer input (the first drops whole characters: one value of a one-hot
        vector) and one on the output. None when not dropping."""
        if not training or self.dropout_rate == 0 or seed is None:
            return [None] * (self.layers_count + 1)
        seqlen, batch = shape[1], shape[0]
        first, total = (rows[0], rows[1]) if rows is not None else (0, batch)
        masks = []
        for i in range(self.layers_count + 1):
            width = 1 if i == 0 else self.cell_size
            s = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), i)
            u = tf.random.stateless_uniform([seqlen, total, width], s)  # [SEQLEN, TOTAL, WIDTH]
            u = u[:, first : first + batch] if rows is not None else u  # [SEQLEN, BATCH, WIDTH]
            masks.append(tf.cast(u >= self.dropout_rate, tf.float32) / (1 - self.dropout_rate))
        return masks

    def _fused(self, x, states_in, keep, training):
        seqlen, batch = tf.shape(x)[1], tf.shape(x)[0]
        dtype = self.train_dtype if training else tf.float32
        W0, bias0 = self.grus[0].cell.kernel, self.grus[0].cell.bias
        # transposed as floats (exact for codes below 2**24): TensorFlow's oneDNN build
        # logs an error on stderr for every integer transpose
        codes = tf.cast(tf.transpose(tf.cast(x, tf.float32)), tf.int32)  # [SEQLEN, BATCH]
        table = W0 + bias0[0]  # [ALPHASIZE, 3*CELL]
        if keep[0] is not None:
            # a dropped character is a one-hot vector of zeros, whose product is the
            # bias alone (row ALPHASIZE); the kept ones are scaled up
            table = tf.concat([W0 / (1 - self.dropout_rate) + bias0[0], bias0[0][None]], 0)
            codes = tf.where(keep[0][..., 0] > 0, codes, self.alphasize)
        xw = lookup(table, codes)  # [SEQLEN, BATCH, 3*CELL]

        if training:
            weights = [
                (
                    tf.cast(g.cell.kernel, dtype),
                    g.cell.bias[0],
                    tf.cast(g.cell.recurrent_kernel, dtype),
                    g.cell.bias[1],
                )
                for g in self.grus
            ]
            h, states_out = gru_stack(xw, states_in, weights, keep[1:])  # [SEQLEN, BATCH, CELL]
        else:
            states_out = []
            for i, (gru, s) in enumerate(zip(self.grus, states_in, strict=True)):
                W, U, bias = gru.cell.kernel, gru.cell.recurrent_kernel, gru.cell.bias
                if i > 0:
                    flat = tf.reshape(h, [-1, self.cell_size])  # [SEQLEN*BATCH, CELL]
                    xw = tf.reshape(tf.matmul(flat, W) + bias[0], [seqlen, batch, -1])
                h, s = gru_scan(xw, s, tf.convert_to_tensor(U), bias[1])  # [SEQLEN, BATCH, CELL]
                states_out.append(s)
        # One softmax layer for every time step: put them all in the same bag.
        flat = tf.reshape(h, [-1, self.cell_size])  # [SEQLEN*BATCH, CELL]
        logits = _matmul(flat, tf.cast(self.softmax.kernel, dtype)) + self.softmax.bias
        logits = tf.reshape(logits, [seqlen, batch, self.alphasize])  # [SEQLEN, BATCH, ALPHASIZE]
        return tf.transpose(logits, [1, 0, 2]), states_out  # [BATCH, SEQLEN, ALPHASIZE]

    def _keras(self, x, states_in, keep, training):
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
        logits = tf.cast(self.softmax(flat), tf.float32)  # [BATCH*SEQLEN, ALPHASIZE]
        return tf.reshape(logits, [batch, seqlen, self.alphasize]), states_out

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None, None], tf.float32),
        ],
        autograph=False,
    )
    def predict(self, x, state):
        """Compiled inference (no dropout): validation, scoring and generation."""
        return self(x, state, training=False)

    def step(self, code, state):
        """One character per stream, for generation. code: int [STREAMS];
        state: [STREAMS, LAYERS*CELL]. Returns logits [STREAMS, ALPHASIZE], new state."""
        if not self.fused:
            logits, state = self(code[:, None], state)
            return logits[:, 0], state
        h, states_out = None, []
        for i, (gru, s) in enumerate(
            zip(self.grus, tf.split(state, self.layers_count, 1), strict=True)
        ):
            W, U, bias = gru.cell.kernel, gru.cell.recurrent_kernel, gru.cell.bias
            xw = tf.gather(W, code) if i == 0 else _matmul(h, tf.convert_to_tensor(W))
            h = gru_step(xw + bias[0], s, tf.convert_to_tensor(U), bias[1])  # [STREAMS, CELL]
            states_out.append(h)
        return self.softmax(h), tf.concat(states_out, axis=1)


def build_model(config, fused=None, mixed_precision=False):
    """The model a checkpoint's config describes, with its weights created."""
    model = CharRNN(
        config["alphasize"],
        config["cell_size"],
        config["layers"],
        config["dropout"],
        fused=fused,
        mixed_precision=mixed_precision,
    )
    model(tf.zeros([1, 1], tf.int32), model.zero_state(1))
    return model


def loss_and_accuracy(logits, y):
    """Mean softmax cross-entropy (nats per character) and accuracy of the argmax."""
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
    hits = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), y), tf.float32)
    return tf.reduce_mean(losses), tf.reduce_mean(hits)


# ---------------------------------------------------------------------------
# Generation: the whole loop (cell, sampling, feeding back) runs inside one compiled
# graph, CHUNK characters per call, so Python is off the per-character path.


def sample_logits(logits, seed, topn, temperature):
    """Draw one symbol per row of logits [STREAMS, ALPHASIZE]: divide by the
    temperature, keep the topn likeliest (0 = all), renormalise, draw. [STREAMS]"""
    logits = logits / temperature
    if 0 < topn < logits.shape[-1]:
        top, index = tf.math.top_k(logits, topn)  # [STREAMS, TOPN]
        pick = tf.random.stateless_categorical(top, 1, seed, dtype=tf.int32)[:, 0]
        return tf.gather(index, pick, batch_dims=1)
    return tf.random.stateless_categorical(logits, 1, seed, dtype=tf.int32)[:, 0]


class Generator:
    """Text from a model, for any number of independent streams at once:

        gen = Generator(model, topn=2)
        gen.start(prime, seed=0)      # prime: int [STREAMS, LENGTH], fed first
        gen.next(64)                  # int [STREAMS, 64]: the next 64 characters
        gen.next(64)                  # and the 64 after those

    The same prime and seed give the same text, however it is cut into next() calls
    of the same size."""

    def __init__(self, model, topn=0, temperature=1.0):
        self.model, self.topn = model, topn
        self.temperature = tf.constant(temperature, tf.float32)
        self._chunk = tf.function(self._chunk_graph, jit_compile=True, autograph=False)

    def start(self, prime, seed):
        prime = np.asarray(prime, dtype=np.int32)  # [STREAMS, LENGTH]
        logits, self.state = self.model.predict(prime, self.model.zero_state(len(prime)))
        self.logits = logits[:, -1]  # [STREAMS, ALPHASIZE]
        self.seed = tf.constant([seed % 2**63, 0], tf.int64)
        self.calls = 0

    def next(self, n):
        seed = tf.random.experimental.stateless_fold_in(self.seed, self.calls)
        self.calls += 1
        codes, self.logits, self.state = self._chunk(self.logits, self.state, seed, n)
        return codes.numpy().T  # [STREAMS, n]

    def _chunk_graph(self, logits, state, seed, n):
        def body(i, logits, state, out):
            code = sample_logits(
                logits,
                tf.random.experimental.stateless_fold_in(seed, i),
                self.topn,
                self.temperature,
            )  # [STREAMS]
            logits, state = self.model.step(code, state)
            return i + 1, logits, state, out.write(i, code)

        out = tf.TensorArray(tf.int32, size=n)
        _, logits, state, out = tf.while_loop(
            lambda i, *_: i < n, body, (tf.constant(0), logits, state, out)
        )
        return out.stack(), logits, state  # [n, STREAMS]
