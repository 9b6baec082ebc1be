"""The fused GRU: the model's stacked GRU layers computed from the weights of Keras'
GRU layers, ~1.3x faster than those layers on a CPU. Training runs it on a CPU (on a
GPU, Keras' layers: cuDNN); inference - validation, scoring, generation - runs it on
every device, generation inside an XLA-compiled loop, which cuDNN's GRU cannot join.

Keras' GRU equations with reset_after=True (cuDNN's), for one time step of one layer
with input x and state s:

    z = sigmoid(x Wz + bz + s Uz + cz)        update gate
    r = sigmoid(x Wr + br + s Ur + cr)        reset gate
    h = tanh(x Wh + bh + r * (s Uh + ch))     candidate
    s' = z * s + (1 - z) * h                  the new state, and the layer's output

with W = kernel [IN, 3*CELL], U = recurrent_kernel [CELL, 3*CELL], the gates in the
order z, r, h, and bias [2, 3*CELL] = (b, c). Below, xw is a time step's input
product x W + b [BATCH, 3*CELL] and rec its recurrent product s U [BATCH, 3*CELL].

Why it is faster than Keras' layers on a CPU:
- the first layer's input is one-hot, and a one-hot vector times a matrix is a row of
  it: its input products are a lookup (first_layer_products);
- each time step's gates are one XLA-compiled function (gru_gates) between oneDNN
  matmuls;
- in training, the layers run as a wavefront (gru_stack): layer i at step t while
  layer i-1 is at step t+1, so two chains of small matmuls keep two cores busy;
- a hand-written backward pass computes each weight gradient once per sequence, as
  one big matmul, rather than once per time step.

tests/fused_gru_test.py checks that this and Keras' layers give the same logits, states and
gradients, dropout included, and the same weights after steps of the real training
step, in float32, bfloat16 and float16.
"""

import tensorflow as tf


def matmul(a, b, **kwargs):
    """a x b in b's type (float32, or 16 bits under mixed precision), result in float32."""
    return tf.cast(tf.matmul(tf.cast(a, b.dtype), b, **kwargs), tf.float32)


# ---------------------------------------------------------------------------
# One time step


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


def gru_step(xw, s, U, c):
    """One time step of a GRU layer, no dropout: the new state [BATCH, CELL]."""
    return gru_gates(xw, matmul(s, U), s, c)[0]


# ---------------------------------------------------------------------------
# The first layer's input products


@tf.custom_gradient
def lookup(table, codes):
    """table[codes]: the product of one-hot vectors and table, as a lookup. Its
    gradient is the one-hot product's, dense, but summed row by row rather than
    multiplied: a one-hot matmul costs ROWS x the sum (5,000 symbols: 40x slower),
    and a lookup's own gradient is a list of BATCH*SEQLEN rows, which Adam would
    then update one by one, slower still."""

    def grad(d):  # d: [..., WIDTH]
        rows = tf.reshape(d, [-1, tf.shape(d)[-1]])  # [N, WIDTH]
        return tf.math.unsorted_segment_sum(rows, tf.reshape(codes, [-1]), tf.shape(table)[0]), None

    return tf.gather(table, codes), grad


def first_layer_products(codes, W, b, keep=None, rate=0.0):
    """x W + b for x the one-hot vectors of codes [SEQLEN, BATCH], as a lookup:
    [SEQLEN, BATCH, 3*CELL]. keep: the dropout multipliers of the characters
    [SEQLEN, BATCH, 1] (0, or 1/(1-rate) for a kept one), or None."""
    if keep is None:
        return lookup(tf.convert_to_tensor(W), codes) + b  # the rows of W, then b
    # a dropped character is a one-hot vector of zeros, whose product is the bias
    # alone (an extra row, ALPHASIZE); the kept ones are scaled up
    table = tf.concat([W / (1 - rate) + b, b[None]], 0)  # [ALPHASIZE+1, 3*CELL]
    return lookup(table, tf.where(keep[..., 0] > 0, codes, W.shape[0]))


# ---------------------------------------------------------------------------
# Inference: the stack over a sequence of any length, no gradient


def gru_stack_inference(xw0, states, weights, scan=None):
    """The whole GRU stack over a sequence, a layer at a time, no dropout: validation,
    scoring and generation, whose one-character step is a sequence of length 1.

    xw0: [SEQLEN, BATCH, 3*CELL], the first layer's input products (plus b); states:
    LAYERS x [BATCH, CELL]; weights: LAYERS x (W, b, U, c), float32, W and b unused
    for the first layer. Returns the top layer's outputs [SEQLEN, BATCH, CELL] and
    the last states.

    A layer runs once the one below has finished, so its input products are one
    matmul over the whole sequence (there is no gradient to keep a wavefront for).
    scan: how a layer runs its time steps, gru_scan (None) or gru_scan_compiled."""
    scan = scan or gru_scan
    seqlen = xw0.shape[0] or tf.shape(xw0)[0]  # static when traced for one character
    batch = tf.shape(xw0)[1]
    h, last = None, []  # h: the outputs of the layer below
    for (W, b, U, c), s in zip(weights, states, strict=True):
        if h is None:
            xw = xw0
        else:
            flat = tf.reshape(h, [-1, U.shape[0]])  # [SEQLEN*BATCH, CELL]
            xw = tf.reshape(matmul(flat, W) + b, [seqlen, batch, -1])  # [SEQLEN, BATCH, 3*CELL]
        # read once, not at every time step of the loop
        h, s = scan(xw, s, tf.convert_to_tensor(U), c)  # [SEQLEN, BATCH, CELL]
        last.append(s)
    return h, last


def gru_scan(xw, s0, U, c):
    """One GRU layer over xw [SEQLEN, BATCH, 3*CELL], no dropout: its states
    [SEQLEN, BATCH, CELL] and the last. A sequence known to be one step long (the
    generation loop's) skips tf.scan's loop."""
    if xw.shape[0] == 1:
        s = gru_step(xw[0], s0, U, c)  # [BATCH, CELL]
        return s[None], s
    states = tf.scan(lambda s, xw_t: gru_step(xw_t, s, U, c), xw, initializer=s0)
    return states, states[-1]


# A layer's time steps as one XLA-compiled loop, its input products and the logits left
# to oneDNN outside it: for one long row (scoring) faster than all of it compiled, as
# XLA's matmuls are slower than oneDNN's ([3355 x 512] x [512 x 5000]: 153 ms against
# 92), and than none of it, as TensorFlow's own loop pays for each of its time steps.
# (Many rows - validation - are faster with none: XLA's recurrent matmul is slower too.)
gru_scan_compiled = tf.function(gru_scan, jit_compile=True, autograph=False)


# ---------------------------------------------------------------------------
# Training: the stack over SEQLEN time steps, with dropout and the backward pass


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

    # tf.custom_gradient takes tensors, not lists: the states, weights and masks come flat
    @tf.custom_gradient
    def run(xw0, *args):
        states0 = args[:layers]
        ws = [args[layers + 4 * i : layers + 4 * i + 4] for i in range(layers)]
        keeps = iter(args[5 * layers :])
        keeps = [tf.unstack(next(keeps)) if k is not None else [None] * seqlen for k in keep]
        inputs = tf.unstack(xw0)  # layer 0: input products; above: outputs
        saved, last = [], []
        for i in range(layers):
            inputs, s, kept = _layer_forward(inputs, states0[i], ws[i], keeps[i], first=i == 0)
            saved.append(kept)
            last.append(s)

        def grad(d_top, *d_last):
            d_outs, d_weights, d_states0 = tf.unstack(d_top), [], [None] * layers
            for i in reversed(range(layers)):
                d_outs, d_layer, d_states0[i] = _layer_backward(
                    d_last[i], d_outs, ws[i], keeps[i], saved[i], first=i == 0
                )
                d_weights = d_layer + d_weights
            d_xw0 = tf.reshape(d_outs, xw0.shape)  # the first layer's: on its input products
            return [d_xw0, *d_states0, *d_weights, *[None] * len(flat_keep)]

        return (tf.stack(inputs), *last), grad

    top, *last = run(xw0, *states, *flat_weights, *flat_keep)
    return top, last


def _layer_forward(inputs, s, weights, keeps, first):
    """gru_stack's forward pass through one layer. inputs: SEQLEN x [BATCH, IN], the
    outputs of the layer below (the first layer: its input products [BATCH, 3*CELL]);
    s: the initial state [BATCH, CELL]; keeps: SEQLEN x the dropout multipliers of the
    outputs, or None. Returns the outputs SEQLEN x [BATCH, CELL], the last state and
    what the backward pass needs: (inputs, the state before each step, the gates)."""
    W, b, U, c = weights
    seen, outputs, gates = [], [], []
    for x_t, keep_t in zip(inputs, keeps, strict=True):
        xw = x_t if first else matmul(x_t, W)  # [BATCH, 3*CELL]
        seen.append(s)
        s, out, g = gru_gates(xw, matmul(s, U), s, c, None if first else b, keep_t)
        outputs.append(out)
        gates.append(g)
    return outputs, s, (inputs, seen, gates)


def _layer_backward(ds, d_outs, weights, keeps, saved, first):
    """gru_stack's backward pass through one layer, from the loss gradients on its last
    state (ds [BATCH, CELL]) and on its outputs (d_outs: SEQLEN x [BATCH, CELL]).
    Returns the gradients on its inputs (SEQLEN x [BATCH, IN]; the first layer: on its
    input products, [SEQLEN*BATCH, 3*CELL]), on its weights [W, b, U, c] (the first
    layer's W and b: None) and on its initial state."""
    W, _, U, _ = weights
    inputs, seen, gates = saved
    ds_rec = tf.zeros_like(ds)  # the gradient on s through the next step's s U
    d_xw, d_rec, d_inputs = [], [], []
    for t in reversed(range(len(seen))):
        dxw, drec, ds = gru_gates_grad(ds, ds_rec, d_outs[t], keeps[t], seen[t], *gates[t])
        ds_rec = matmul(drec, U, transpose_b=True)
        if not first:
            d_inputs.append(matmul(dxw, W, transpose_b=True))
        d_xw.append(dxw)
        d_rec.append(drec)
    d_xw = tf.concat(d_xw[::-1], 0)  # [SEQLEN*BATCH, 3*CELL]
    d_rec = tf.concat(d_rec[::-1], 0)  # [SEQLEN*BATCH, 3*CELL]
    dU = _weight_grad(tf.concat(seen, 0), d_rec, U.dtype)
    if first:
        return d_xw, [None, None, dU, _column_sums(d_rec)], ds + ds_rec
    dW = _weight_grad(tf.concat(inputs, 0), d_xw, W.dtype)
    d_layer = [dW, _column_sums(d_xw), dU, _column_sums(d_rec)]
    return d_inputs[::-1], d_layer, ds + ds_rec


def _weight_grad(inputs, d_products, dtype):
    """inputs^T d_products: [IN, N] x [N, 3*CELL], the gradient of a weight matrix of
    type dtype from every row (time step and batch row) at once."""
    return tf.cast(matmul(inputs, tf.cast(d_products, dtype), transpose_a=True), dtype)


def _column_sums(x):
    """x summed over its rows, as a matmul: ~10x faster than reduce_sum here."""
    return tf.matmul(tf.ones([1, tf.shape(x)[0]]), x)[0]
