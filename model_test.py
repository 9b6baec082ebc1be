"""The model: cuDNN-eligible settings, state passing, checkpoints that restore exactly."""

import importlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import ckpt
import txtutils
from model import Generator, build_model, loss_and_accuracy, sample_logits

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


def test_one_softmax_layer_is_shared_by_every_time_step(model):
    softmax = model.named_weights()["softmax"]
    assert {k: tuple(v.shape) for k, v in softmax.items()} == {"kernel": (16, 98), "bias": (98,)}
    logits, _ = model.predict(random_codes([2, 5]), model.zero_state(2))
    assert logits.shape == (2, 5, 98)


def test_sixty_characters_at_once_equal_two_runs_of_thirty(model):
    x = random_codes([4, 60])
    state0 = tf.random.normal([4, model.state_size], seed=3) * 0.5
    logits, state = model.predict(x, state0)
    logits1, state1 = model.predict(x[:, :30], state0)
    logits2, state2 = model.predict(x[:, 30:], state1)
    np.testing.assert_allclose(np.concatenate([logits1, logits2], axis=1), logits, atol=1e-5)
    np.testing.assert_allclose(state2, state, atol=1e-5)


def test_the_state_carries_information(model):
    """A different input state changes the output: the state really is used."""
    x = random_codes([1, 10])
    a, _ = model.predict(x, model.zero_state(1))
    b, _ = model.predict(x, tf.ones([1, model.state_size]))
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3


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
        model.predict(x, model.zero_state(1))[0], model3.predict(x, model3.zero_state(1))[0]
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


def test_generator_feeds_back_what_it_samples(model):
    """topn=1 (always the likeliest) must give exactly the characters of a plain loop
    that feeds the model its own argmax, stream by stream."""
    prime = random_codes([3, 7])
    generator = Generator(model, topn=1)
    generator.start(prime, seed=0)
    got = np.concatenate([generator.next(8), generator.next(8)], axis=1)  # [3, 16]
    logits, state = model.predict(prime, model.zero_state(3))
    want = []
    for _ in range(16):
        code = np.argmax(logits[:, -1], axis=-1).astype(np.int32)  # [3]
        want.append(code)
        logits, state = model.predict(code[:, None], state)
    np.testing.assert_array_equal(got, np.stack(want, axis=1))


def test_generator_streams_are_independent_and_seeded(model):
    prime = np.zeros([2, 1], np.int32)
    generator = Generator(model, topn=0)
    generator.start(prime, seed=5)
    a = generator.next(50)
    generator.start(prime, seed=5)
    b = generator.next(50)
    generator.start(prime, seed=6)
    c = generator.next(50)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    assert (a[0] != a[1]).any()  # same prime, each stream draws its own text


# ---------------------------------------------------------------------------
# Sampling (inside the compiled generation loop)


def draws(logits, n, seed=0, topn=0, temperature=1.0):
    """n draws from one row of logits, made at once as n streams."""
    rows = tf.constant(np.tile(np.asarray(logits, np.float32), [n, 1]))  # [n, ALPHASIZE]
    return sample_logits(rows, tf.constant([seed, 0], tf.int64), topn, temperature).numpy()


def assert_follows(samples, probs):
    """The draws never hit a symbol of probability 0, and match probs: each symbol of
    probability 5% or more, and the rest pooled, is within 5 standard deviations of
    its expected frequency, and a chi-square over them is below the 0.1% critical value."""
    n = len(samples)
    counts = np.bincount(samples, minlength=len(probs))
    assert counts[probs == 0].sum() == 0
    big = probs >= 0.05
    expected = np.append(probs[big], probs[~big].sum())
    observed = np.append(counts[big], counts[~big].sum()) / n
    if expected[-1] == 0:
        expected, observed = expected[:-1], observed[:-1]
    assert (np.abs(observed - expected) <= 5 * np.sqrt(expected * (1 - expected) / n)).all()
    chi2 = n * ((observed - expected) ** 2 / expected).sum()
    dof = len(expected) - 1
    critical = dof * (1 - 2 / (9 * dof) + 3.09 * np.sqrt(2 / (9 * dof))) ** 3  # Wilson-Hilferty
    assert chi2 < critical, (chi2, critical)


def skewed_probs():
    """Half on 10, 30% on 20, 15% on 30, and 5% spread over the 95 others."""
    p = np.full(txtutils.ALPHASIZE, 0.05 / 95)
    p[[10, 20, 30]] = [0.5, 0.3, 0.15]
    return p


def test_topn_never_draws_outside_the_n_most_likely_and_draws_each_of_them():
    # a flat-ish ramp, shuffled: the top 5 are close, so all of them should come up
    logits = np.random.default_rng(3).permutation(np.linspace(0.0, 3.0, txtutils.ALPHASIZE))
    top5 = set(np.argsort(logits)[-5:].tolist())
    got = draws(logits, 2000, topn=5)
    assert set(got.tolist()) == top5


def test_topn_renormalises_over_the_kept_symbols():
    p = skewed_probs()
    kept = np.zeros_like(p)
    kept[[10, 20, 30]] = p[[10, 20, 30]] / p[[10, 20, 30]].sum()
    assert_follows(draws(np.log(p), 4000, seed=4, topn=3), kept)


def test_topn_1_is_argmax_whatever_the_temperature():
    logits = np.random.default_rng(5).normal(size=(50, txtutils.ALPHASIZE)) * 0.1
    for temperature in [0.1, 1.0, 10.0]:
        got = sample_logits(
            tf.constant(logits, tf.float32), tf.constant([5, 0], tf.int64), 1, temperature
        ).numpy()
        np.testing.assert_array_equal(got, np.argmax(logits, axis=-1))


def test_topn_of_the_whole_alphabet_or_more_is_no_truncation():
    logits = np.log(skewed_probs())
    for topn in [txtutils.ALPHASIZE, txtutils.ALPHASIZE + 10]:
        assert (draws(logits, 300, seed=6, topn=topn) == draws(logits, 300, seed=6)).all()


def test_a_very_low_temperature_almost_always_picks_the_argmax():
    logits = np.log(skewed_probs())  # argmax 10 at 50%, next 30%
    got = draws(logits, 1000, seed=7, temperature=0.01)
    assert np.mean(got == 10) >= 0.99
    assert np.mean(draws(logits, 1000, seed=7) == 10) < 0.6  # unlike T = 1


def test_draws_follow_the_softmax_of_the_logits_at_temperature_1():
    p = skewed_probs()
    assert_follows(draws(np.log(p) + 7.0, 4000, seed=8), p)  # softmax ignores a shift


def test_draws_follow_the_softmax_of_logits_over_temperature():
    p = skewed_probs()
    softened = p**0.5 / (p**0.5).sum()  # softmax(log(p) / 2)
    assert_follows(draws(np.log(p), 4000, seed=9, temperature=2.0), softened)


def test_the_same_seed_gives_the_same_draws():
    logits = np.zeros(txtutils.ALPHASIZE)  # uniform: two seeds cannot agree by chance
    assert (draws(logits, 100, seed=11) == draws(logits, 100, seed=11)).all()
    assert (draws(logits, 100, seed=11) != draws(logits, 100, seed=12)).any()
