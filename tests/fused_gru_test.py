"""The fused CPU GRU (fused_gru.py) against Keras' GRU layers, which a GPU runs with
cuDNN: one forward and backward pass, and training steps as rnn_train.py runs them."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_test import CONFIG, ROUNDOFF, forward_and_gradients, random_codes, twins

import txtutils
from charrnn import fused_gru, training


@pytest.mark.parametrize("training, char_dropout", [(False, None), (True, None), (True, 0.0)])
def test_fused_gru_computes_what_the_keras_layers_compute(training, char_dropout):
    """The CPU implementation (hand-written backward pass included) against Keras' own
    GRU, which is what a GPU runs through cuDNN: same logits, states and gradients,
    with the same dropout masks (the characters dropped at --dropout's rate, or not)."""
    # None: a config from before --char-dropout, whose characters drop at --dropout
    fused, layers = twins(
        CONFIG if char_dropout is None else dict(CONFIG, char_dropout=char_dropout)
    )
    x = random_codes([4, 12])
    state = tf.random.normal([4, fused.state_size], seed=5) * 0.5
    a = forward_and_gradients(fused, x, state, training)
    b = forward_and_gradients(layers, x, state, training)
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)
    np.testing.assert_allclose(a[1], b[1], atol=1e-5)
    for ga, gb, v in zip(a[2], b[2], fused.trainable_variables, strict=True):
        assert np.abs(gb).max() > 0, v.path  # every weight gets a gradient
        np.testing.assert_allclose(ga, gb, atol=1e-6, err_msg=v.path)


def test_the_first_layers_gradient_is_the_one_hot_products():
    """lookup's gradient, summed row by row, against the one-hot matmul it stands
    for: codes repeated, codes never seen (rows of zeros), a table of 5,000 rows."""
    rng = np.random.default_rng(0)
    table = tf.constant(rng.normal(size=[5000, 6]), tf.float32)
    codes = tf.constant([[3, 3, 4999], [0, 3, 17]], tf.int32)  # [SEQLEN, BATCH]
    d = tf.constant(rng.normal(size=[2, 3, 6]), tf.float32)  # the gradient on the products
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(table)
        looked_up = fused_gru.lookup(table, codes)
        multiplied = tf.one_hot(codes, 5000) @ table
    np.testing.assert_array_equal(looked_up, multiplied)
    grad = tape.gradient(looked_up, table, output_gradients=d)
    np.testing.assert_allclose(
        grad, tape.gradient(multiplied, table, output_gradients=d), rtol=1e-6, atol=1e-7
    )
    assert np.count_nonzero(np.abs(grad.numpy()).sum(axis=1)) == 4  # rows 0, 3, 17, 4999


# Keras' layers against the fused path after STEPS training steps from the same weights:
# |w_keras - w_fused| over |w_fused - w_start|, all the weights as one vector. Adam's
# first step is the learning rate times the sign of each gradient, whatever its size,
# so an entry whose gradient is within rounding of 0 (the gradients differ by up to ~5u
# of their largest entry in 16 bits: model_test) may step either way; later steps
# average. So the drift depends on the initialisation: over 8 of them, after 10 steps,
# 5u-10u in float32 (the same products summed in another order) and 1.7u-13u in
# bfloat16 and float16. The bounds are 100u and 32u: a float32 bound still 1,000 times
# below what 16 bits give, a 16-bit one (0.125 in bfloat16) far below what a wrong
# equation gives (a swapped gate or a lost bias: ~1, the size of the change itself).
STEPS = 10
DRIFT_BOUND = {"float32": 100, "float16": 32, "bfloat16": 32}  # in u


def train(model, steps, codes):
    """steps of training.make_train_step (dropout and clipping on, as in training):
    the weights as one vector, before and after, and the losses."""
    optimizer = keras.optimizers.Adam(0.01)
    optimizer.build(model.trainable_variables)
    config = {"seed": 0, "clip_norm": 1.0, "batch_size": 4, "zero_state_every": 0}
    train_step = training.make_train_step(model, optimizer, config)
    state, losses = model.zero_state(4), []
    batches = txtutils.minibatch_sequencer(codes, 4, 12, epochs=steps)
    start = np.concatenate([v.numpy().ravel() for v in model.trainable_variables])
    for step, (x, y, _) in zip(range(steps), batches, strict=False):
        loss, _, state = train_step(x, y, state, tf.constant(step, tf.int64), True)
        losses.append(float(loss))
    end = np.concatenate([v.numpy().ravel() for v in model.trainable_variables])
    return start, end, np.array(losses)


def counting(call, calls):
    """call, noting each call in the list calls."""

    def counted(*args, **kwargs):
        calls.append(1)
        return call(*args, **kwargs)

    return counted


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_training_steps_through_keras_layers_match_the_fused_path(dtype, monkeypatch):
    """The Keras path as a GPU trains with it - inside the compiled training step,
    several steps, float16 with its loss scaling - against the fused path from the
    same weights: the same weights after STEPS steps, within what rounding allows."""
    u = ROUNDOFF[dtype]
    fused, layers = twins(CONFIG, mixed_precision=False if dtype == "float32" else dtype)
    assert fused.train_dtype == layers.train_dtype == tf.as_dtype(dtype)
    calls = []
    for gru in layers.grus:
        monkeypatch.setattr(gru, "call", counting(gru.call, calls))
    codes = txtutils.DEFAULT.encode(
        "ROMEO: the moon sees juliet.\nJULIET: the sun calls the nurse.\n" * 30
    )
    start, w_fused, fused_losses = train(fused, STEPS, codes)
    _, w_keras, keras_losses = train(layers, STEPS, codes)
    assert calls  # the step was traced through Keras' layers
    drift = np.linalg.norm(w_keras - w_fused) / np.linalg.norm(w_fused - start)
    assert drift <= DRIFT_BOUND[dtype] * u, f"{drift / u:.1f}u"
    # the losses (~4 nats), measured within 2u of each other: bounds 4u, float32 100u
    np.testing.assert_allclose(
        keras_losses, fused_losses, rtol=(100 if dtype == "float32" else 4) * u
    )
    assert keras_losses[-1] < keras_losses[0]
