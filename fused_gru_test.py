"""The fused CPU GRU (fused_gru.py) against Keras' GRU layers, which a GPU runs with cuDNN."""

import numpy as np
import pytest
import tensorflow as tf

from model_test import CONFIG, forward_and_gradients, random_codes, twins


@pytest.mark.parametrize("training", [False, True])
def test_fused_gru_computes_what_the_keras_layers_compute(training):
    """The CPU implementation (hand-written backward pass included) against Keras' own
    GRU, which is what a GPU runs through cuDNN: same logits, states and gradients,
    with the same dropout masks."""
    fused, layers = twins(CONFIG)
    x = random_codes([4, 12])
    state = tf.random.normal([4, fused.state_size], seed=5) * 0.5
    a = forward_and_gradients(fused, x, state, training)
    b = forward_and_gradients(layers, x, state, training)
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)
    np.testing.assert_allclose(a[1], b[1], atol=1e-5)
    for ga, gb, v in zip(a[2], b[2], fused.trainable_variables, strict=True):
        assert np.abs(gb).max() > 0, v.path  # every weight gets a gradient
        np.testing.assert_allclose(ga, gb, atol=1e-6, err_msg=v.path)
