"""The model: cuDNN-eligible settings, state passing, checkpoints that restore exactly,
mixed precision. (fused_gru_test.py: the fused GRU against Keras' layers;
generate_test.py: sampling and generation.)"""

import importlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import ckpt
from model import build_model, loss_and_accuracy, mean_loss_and_accuracy

# the module, not the function of the same name that its package exports
keras_rnn = importlib.import_module("keras.src.backend.tensorflow.rnn")

CONFIG = {"alphasize": 98, "cell_size": 16, "layers": 3, "dropout": 0.2}


@pytest.fixture
def model():
    keras.utils.set_random_seed(1)
    return build_model(CONFIG)


def random_codes(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 98, size=shape).astype(np.int32)


def test_gru_settings_keep_the_cudnn_kernel(model):
    """TensorFlow runs a Keras GRU with cuDNN on a GPU only with these settings; any
    other silently falls back to a slow loop."""
    assert len(model.grus) == 3
    for gru in model.grus:
        cfg = gru.get_config()
        assert cfg["activation"] == "tanh"
        assert cfg["recurrent_activation"] == "sigmoid"
        assert cfg["use_bias"] is True
        assert cfg["reset_after"] is True
        assert cfg["recurrent_dropout"] == 0
        assert cfg["unroll"] is False
        assert gru.use_cudnn in ("auto", True)
        assert cfg["return_sequences"] and cfg["return_state"]
        # and Keras' own test of the same (private, so it may move in a later Keras)
        assert keras_rnn._do_gru_arguments_support_cudnn(
            gru.cell.activation,
            gru.cell.recurrent_activation,
            gru.unroll,
            gru.cell.use_bias,
            gru.cell.reset_after,
        )


def test_one_logits_layer_is_shared_by_every_time_step(model):
    softmax = model.named_weights()["softmax"]  # its name in checkpoints
    assert {k: tuple(v.shape) for k, v in softmax.items()} == {"kernel": (16, 98), "bias": (98,)}
    logits, _ = model.infer(random_codes([2, 5]), model.zero_state(2))
    assert logits.shape == (2, 5, 98)


def test_sixty_characters_at_once_equal_two_runs_of_thirty(model):
    x = random_codes([4, 60])
    state0 = tf.random.normal([4, model.state_size], seed=3) * 0.5
    logits, state = model.infer(x, state0)
    logits1, state1 = model.infer(x[:, :30], state0)
    logits2, state2 = model.infer(x[:, 30:], state1)
    np.testing.assert_allclose(np.concatenate([logits1, logits2], axis=1), logits, atol=1e-5)
    np.testing.assert_allclose(state2, state, atol=1e-5)


def test_the_state_carries_information(model):
    """A different input state changes the output: the state really is used."""
    x = random_codes([1, 10])
    a, _ = model.infer(x, model.zero_state(1))
    b, _ = model.infer(x, tf.ones([1, model.state_size]))
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3


def test_mean_loss_and_accuracy_weighs_pieces_by_their_characters(model):
    """Pieces with the state carried score what the whole text scores in one call;
    from zero states, each piece counts for its characters."""
    x = random_codes([2, 50], seed=1)
    y = np.roll(x, -1, axis=1)
    pieces = [(x[:, i : i + 20], y[:, i : i + 20]) for i in range(0, 50, 20)]  # 20, 20, 10
    loss, accuracy = loss_and_accuracy(model.infer(x, model.zero_state(2))[0], y)
    carried = mean_loss_and_accuracy(model, pieces, carry_state=True)
    np.testing.assert_allclose(carried[:2], [float(loss), float(accuracy)], atol=1e-5)
    assert carried[2] == 100
    one_by_one = [loss_and_accuracy(model.infer(a, model.zero_state(2))[0], b) for a, b in pieces]
    weights = [40, 40, 20]
    expected = np.average(np.array(one_by_one, np.float64), axis=0, weights=weights)
    np.testing.assert_allclose(mean_loss_and_accuracy(model, pieces)[:2], expected, atol=1e-6)
    with pytest.raises(ValueError):
        mean_loss_and_accuracy(model, [])


def test_dropout_only_in_training(model):
    x = random_codes([2, 10])
    state = model.zero_state(2)
    a, _ = model(x, state, training=False)
    b, _ = model(x, state, training=False)
    c, _ = model(x, state, training=True, dropout_seed=tf.constant([0, 7]))
    np.testing.assert_array_equal(a, b)
    assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-4


def test_dropout_masks_depend_on_the_seed_alone(model):
    """Stateless dropout: the same (seed, step) draws the same masks, whatever ran
    before, which is what makes a resumed run exact."""
    x = random_codes([2, 10])
    state = model.zero_state(2)
    a, _ = model(x, state, training=True, dropout_seed=tf.constant([0, 7]))
    model(x, state, training=True, dropout_seed=tf.constant([0, 8]))
    b, _ = model(x, state, training=True, dropout_seed=tf.constant([0, 7]))
    c, _ = model(x, state, training=True, dropout_seed=tf.constant([0, 8]))
    np.testing.assert_array_equal(a, b)
    assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-4


def train_a_few_steps(model, optimizer, steps=3):
    x = random_codes([4, 8])
    state = model.zero_state(4)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            logits, state = model(x, state, training=True, dropout_seed=tf.constant([0, 1]))
            loss, _ = loss_and_accuracy(logits, np.roll(x, -1, axis=1))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    return state


def test_checkpoint_restores_weights_optimizer_and_state_bit_for_bit(model, tmp_path):
    optimizer = keras.optimizers.Adam(0.01)
    optimizer.build(model.trainable_variables)
    state = tf.Variable(train_a_few_steps(model, optimizer))
    step = tf.Variable(3, dtype=tf.int64)
    path = ckpt.checkpoint_object(model, CONFIG, optimizer, step, state).save(str(tmp_path / "c"))

    keras.utils.set_random_seed(2)  # other initial weights: a restore that fails shows
    model2 = build_model(CONFIG)
    optimizer2 = keras.optimizers.Adam(0.01)
    optimizer2.build(model2.trainable_variables)
    state2 = tf.Variable(tf.zeros_like(state))
    step2 = tf.Variable(0, dtype=tf.int64)
    ckpt.checkpoint_object(model2, CONFIG, optimizer2, step2, state2).restore(
        path
    ).assert_consumed()
    for a, b in zip(model.weights, model2.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(optimizer.variables, optimizer2.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(state.numpy(), state2.numpy())
    assert int(step2.numpy()) == 3

    # The player rebuilds the model from the checkpoint alone.
    model3, config = ckpt.load_model(path)
    assert config == CONFIG
    x = random_codes([1, 20])
    np.testing.assert_array_equal(
        model.infer(x, model.zero_state(1))[0], model3.infer(x, model3.zero_state(1))[0]
    )


def test_checkpoints_name_every_trainable_variable(model):
    named = [v for layer in model.named_weights().values() for v in layer.values()]
    assert sorted(map(id, named)) == sorted(map(id, model.trainable_variables))


def test_every_gru_weight_is_in_the_checkpoint(model, tmp_path):
    path = ckpt.checkpoint_object(model, CONFIG).save(str(tmp_path / "c"))
    keys = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    for i in range(3):
        for name in ("kernel", "recurrent_kernel", "bias"):
            assert f"weights/gru{i}/{name}/.ATTRIBUTES/VARIABLE_VALUE" in keys


def twins(config, mixed_precision=False):
    """The same weights in the fused CPU implementation and in Keras' GRU layers."""
    keras.utils.set_random_seed(1)
    fused = build_model(config, fused=True, mixed_precision=mixed_precision)
    layers = build_model(config, fused=False, mixed_precision=mixed_precision)
    for a, b in zip(fused.weights, layers.weights, strict=True):
        b.assign(a)
    return fused, layers


def forward_and_gradients(model, x, state, training):
    with tf.GradientTape() as tape:
        logits, new_state = model(x, state, training=training, dropout_seed=tf.constant([3, 4]))
        # the new state in the loss too: its gradient must flow back through time
        loss = loss_and_accuracy(logits, np.roll(x, -1, axis=1))[0] + 0.01 * tf.reduce_sum(
            new_state
        )
    grads = tape.gradient(loss, model.trainable_variables)
    return logits, new_state, [tf.convert_to_tensor(g).numpy() for g in grads]


def test_mixed_precision_stays_close_to_float32():
    """bfloat16 matmuls, float32 everything else: logits within bfloat16's precision,
    and both implementations agree."""
    fused32, _ = twins(CONFIG)
    fused16, layers16 = twins(CONFIG, mixed_precision=True)
    assert fused16.train_dtype == tf.bfloat16
    x = random_codes([4, 12])
    state = fused32.zero_state(4)
    a = forward_and_gradients(fused32, x, state, True)
    b = forward_and_gradients(fused16, x, state, True)
    c = forward_and_gradients(layers16, x, state, True)
    assert a[0].dtype == b[0].dtype == np.float32
    np.testing.assert_allclose(b[0], a[0], atol=0.02)
    np.testing.assert_allclose(c[0], a[0], atol=0.02)
    assert np.abs(np.asarray(b[0]) - np.asarray(a[0])).max() > 0  # really 16 bits
    for ga, gb in zip(a[2], b[2], strict=True):
        np.testing.assert_allclose(gb, ga, atol=0.02 * np.abs(ga).max() + 1e-6)
