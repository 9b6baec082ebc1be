"""The model: cuDNN-eligible settings, state passing, checkpoints that restore exactly,
inference through the fused cell on every device, mixed precision (float16's loss
scaling included). (fused_gru_test.py: the fused GRU against Keras' layers;
generate_test.py: sampling and generation; gpu_check_test.py: the GPU check.)"""

import importlib
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from charrnn import ckpt, hardware, runs, training
from charrnn.distribute import Distribution
from charrnn.generate import Generator
from charrnn.hardware import has_bfloat16
from charrnn.model import build_model, loss_and_accuracy, mean_loss_and_accuracy

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


@pytest.mark.parametrize("alphasize", [98, 5000])
def test_the_loss_its_gradient_and_the_accuracy_are_tensorflows(alphasize):
    """loss_and_accuracy's one XLA pass and its own gradient against TensorFlow's
    softmax cross-entropy, its gradient and argmax, for the talk's alphabet and a big
    one (the pass matters there); logits of either sign, one row far from the rest."""
    rng = np.random.default_rng(3)
    logits = tf.constant(rng.normal(0, 4, size=[3, 7, alphasize]), tf.float32)
    logits = tf.tensor_scatter_nd_add(logits, [[0, 0, 5]], [80.0])  # a sure character
    y = tf.constant(rng.integers(0, alphasize, size=[3, 7]), tf.int32)
    y = tf.tensor_scatter_nd_update(y, [[1, 2]], [int(tf.argmax(logits[1, 2]))])  # a hit
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        loss, accuracy = loss_and_accuracy(logits, y)
        expected = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        )
    hits = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), y)
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-6)
    assert float(accuracy) == pytest.approx(float(tf.reduce_mean(tf.cast(hits, tf.float32))))
    assert float(accuracy) > 0
    np.testing.assert_allclose(
        tape.gradient(loss, logits), tape.gradient(expected, logits), rtol=1e-5, atol=1e-9
    )


def test_mean_loss_and_accuracy_weighs_pieces_by_their_characters(model):
    """Pieces with the state carried score what the whole text scores in one call,
    each counting for its characters (the last is shorter)."""
    x = random_codes([2, 50], seed=1)
    y = np.roll(x, -1, axis=1)
    pieces = [(x[:, i : i + 20], y[:, i : i + 20]) for i in range(0, 50, 20)]  # 20, 20, 10
    loss, accuracy = loss_and_accuracy(model.infer(x, model.zero_state(2))[0], y)
    carried = mean_loss_and_accuracy(model, pieces)
    np.testing.assert_allclose(carried[:2], [float(loss), float(accuracy)], atol=1e-5)
    assert carried[2] == 100
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


@pytest.mark.parametrize("char_dropout, dropout", [(0.0, 0.0), (0.5, 0.0), (0.0, 0.5)])
def test_char_dropout_drops_the_characters_read_and_dropout_the_rest(char_dropout, dropout):
    """--char-dropout alone decides whether characters are dropped, --dropout the
    values between layers and before the logits: with both 0, training computes what
    inference does; with either, it does not."""
    keras.utils.set_random_seed(1)
    config = dict(CONFIG, dropout=dropout, char_dropout=char_dropout)
    model = build_model(config)
    x = random_codes([8, 40])
    state = model.zero_state(8)
    seed = tf.constant([0, 7])
    keep = model._keep_masks(tf.shape(x), True, seed)
    assert (keep[0] is None) == (char_dropout == 0)
    assert all((k is None) == (dropout == 0) for k in keep[1:])
    if char_dropout:  # whole characters: [SEQLEN, BATCH, 1], about that share zeroed
        assert keep[0].shape == (40, 8, 1)
        assert 0.35 < float(tf.reduce_mean(tf.cast(keep[0] == 0, tf.float32))) < 0.65
    a, _ = model(x, state, training=False)
    b, _ = model(x, state, training=True, dropout_seed=seed)
    if char_dropout or dropout:
        assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3
    else:
        np.testing.assert_allclose(a, b, atol=1e-5)


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
    model3, config = runs.load_model(path)
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


def twins(config, mixed_precision=False, seed=1):
    """The same weights in a model that computes through the fused path and in one that
    computes through Keras' GRU layers (what training runs on a GPU)."""
    keras.utils.set_random_seed(seed)
    fused = build_model(config, fused=True, mixed_precision=mixed_precision)
    layers = build_model(config, fused=False, mixed_precision=mixed_precision)
    for a, b in zip(fused.weights, layers.weights, strict=True):
        b.assign(a)
    return fused, layers


def forward_and_gradients(model, x, state, training):
    """Logits, new state and every weight's gradient, through the path the model was
    built for: Keras' layers for fused=False, even in inference (which the model
    itself runs fused on every device)."""
    call = model if model.fused else model.keras_call
    with tf.GradientTape() as tape:
        logits, new_state = call(x, state, training=training, dropout_seed=tf.constant([3, 4]))
        # the new state in the loss too: its gradient must flow back through time
        loss = loss_and_accuracy(logits, np.roll(x, -1, axis=1))[0] + 0.01 * tf.reduce_sum(
            new_state
        )
    grads = tape.gradient(loss, model.trainable_variables)
    return logits, new_state, [tf.convert_to_tensor(g).numpy() for g in grads]


# Unit roundoff: the largest relative error of rounding a number to the type.
ROUNDOFF = {"float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_stays_close_to_float32(dtype):
    """16-bit matmuls, float32 everything else, against float32: logits, states and
    every gradient within what rounding to 16 bits allows, on both paths.

    A matmul whose operands are rounded to 16 bits is off by at most ~2u of the sum of
    the absolute products (u: the unit roundoff), and its 16-bit result by u more;
    a layer's errors pass through the gates (slopes at most 1) to the next time step
    and layer, so the logits are off by a few u of their size. Measured over 30
    initialisations, the largest errors, in u: logits 2.1 x max|logits| on the fused
    path, 3.6 on Keras' layers (whose gates compute in 16 bits on a CPU too); states
    (|s| < 1) 0.2 and 0.6; a weight's gradient 2.4 and 4.8 x its largest entry. The
    bounds are twice those: a CPU with other kernels rounds otherwise. (The previous
    bound, 0.02 on logits of at most 0.08 here, was 60u for bfloat16.)"""
    u = ROUNDOFF[dtype]
    fused32, _ = twins(CONFIG)
    fused16, layers16 = twins(CONFIG, mixed_precision=dtype)
    assert fused16.train_dtype == layers16.train_dtype == tf.as_dtype(dtype)
    x = random_codes([4, 12])
    state = fused32.zero_state(4)
    want = forward_and_gradients(fused32, x, state, True)
    scale = np.abs(want[0]).max()
    # bounds in u: (logits, states, gradients)
    for model, bounds in ((fused16, (4, 0.5, 5)), (layers16, (8, 1.5, 10))):
        logits, new_state, grads = forward_and_gradients(model, x, state, True)
        assert logits.dtype == np.float32
        np.testing.assert_allclose(logits, want[0], rtol=0, atol=bounds[0] * u * scale)
        np.testing.assert_allclose(new_state, want[1], rtol=0, atol=bounds[1] * u)
        for got, exact, v in zip(grads, want[2], model.trainable_variables, strict=True):
            atol = bounds[2] * u * np.abs(exact).max()
            np.testing.assert_allclose(got, exact, rtol=0, atol=atol, err_msg=v.path)
        assert np.abs(logits - np.asarray(want[0])).max() > 0  # really 16 bits


def test_inference_runs_the_fused_cell_whatever_the_device(monkeypatch):
    """A model built as on a GPU (fused=False: training through Keras' layers, which a
    GPU runs with cuDNN, which XLA cannot compile) infers and generates through the
    fused cell, the one these tests run on the CPU: the same figures as the fused
    model's, and its Keras layers are never called. (Scoring, whose loop is compiled
    too, as on a GPU: gpu_check_test.py.)"""
    fused, layers = twins(CONFIG)

    def refuse(*args, **kwargs):
        raise AssertionError("a Keras GRU layer was called in inference")

    for gru in layers.grus:
        monkeypatch.setattr(gru, "call", refuse)
    x = random_codes([3, 20])
    state = tf.random.normal([3, fused.state_size], seed=2) * 0.5
    for a, b in zip(fused.infer(x, state), layers.infer(x, state), strict=True):
        np.testing.assert_array_equal(a, b)
    samples = []
    for model in (fused, layers):
        generator = Generator(model, topn=3)  # its loop is XLA-compiled, as scoring's is
        generator.start(x[:, :5], seed=7)
        samples.append(generator.next(40))
    np.testing.assert_array_equal(samples[0], samples[1])


def test_a_benchmark_names_the_cpu_by_its_bfloat16_too(monkeypatch):
    """Two CPUs that a virtual machine calls "AMD EPYC" alike, a Zen 3 (AVX2) and a Zen
    5 (AVX512-BF16), train at ~2x apart: the name a benchmark prints tells them apart,
    and says where --mixed-precision is on by default."""
    names = {}
    xeon = "Intel(R) Xeon(R) Platinum 8480+"
    for kind, name, flags in [
        ("zen3", "AMD EPYC", "fpu sse2 avx fma avx2"),
        ("zen5", "AMD EPYC", "fpu sse2 avx fma avx2 avx512f avx512_bf16"),
        ("sapphire rapids", xeon, "fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile"),
        ("old", "AMD EPYC", "fpu sse2"),
    ]:
        info = f"processor\t: 0\nmodel name\t: {name}\nflags\t\t: {flags}\n"
        monkeypatch.setattr(hardware, "cpu_info", lambda info=info: info)
        monkeypatch.setattr(hardware, "on_gpu", lambda: False)
        names[kind] = (hardware.cpu_name(), has_bfloat16())
    assert names == {
        "zen3": ("AMD EPYC (AVX2, no bfloat16)", False),
        "zen5": ("AMD EPYC (AVX512-BF16)", True),
        "sapphire rapids": (f"{xeon} (AMX)", True),
        "old": ("AMD EPYC", False),
    }


FP32_COMPUTE = "TF_FP16_RNN_USE_FP32_COMPUTE"


def test_on_a_gpu_mixed_precision_is_float16_and_off_by_default(monkeypatch):
    """As on a GPU: training defaults to float32; --mixed-precision gives float16
    through Keras' layers (bfloat16 in cuDNN's GRU is unverified), asking cuDNN for
    float32 arithmetic, with the logits layer in float32."""
    monkeypatch.setattr(hardware, "on_gpu", lambda: True)
    monkeypatch.setenv(FP32_COMPUTE, "")  # restored after the test, whatever it was
    monkeypatch.delenv(FP32_COMPUTE)
    assert not has_bfloat16()
    config = dict(CONFIG, deterministic=False, mixed_precision="auto", seed=0)
    config = dict(config, learning_rate=0.01, output_bias="zeros", weight_decay=0.0)
    model, _ = training.make_model(config, Distribution(), symbol_counts=None)
    assert model.train_dtype == tf.float32 and not model.fused
    assert FP32_COMPUTE not in os.environ
    model = build_model(CONFIG, mixed_precision=True)
    assert model.train_dtype == tf.float16 and not model.fused
    assert {gru.dtype_policy.name for gru in model.grus} == {"mixed_float16"}
    assert model.logits_layer.dtype_policy.name == "float32"
    assert os.environ[FP32_COMPUTE] == "1"


def test_float16_skips_the_steps_whose_gradients_overflow(monkeypatch):
    """float16 through Keras' layers, as a GPU trains with --mixed-precision: with a loss
    scale so large that the gradients overflow float16, the step is skipped (weights
    unchanged, not NaN) and the scale halved, until they fit and training goes on. (A
    fixed scale wrote NaN into every weight at the first overflow.)"""
    monkeypatch.setattr(training, "LOSS_SCALE", 2.0**40)
    _, model = twins(CONFIG, mixed_precision="float16")
    optimizer = keras.optimizers.Adam(0.01)
    optimizer.build(model.trainable_variables)
    config = {"seed": 0, "clip_norm": 1.0, "batch_size": 4, "zero_state_every": 0}
    train_step = training.make_train_step(model, optimizer, config)
    x = random_codes([4, 12])
    y, state = np.roll(x, -1, axis=1), model.zero_state(4)
    start = [v.numpy() for v in model.trainable_variables]
    first_loss, _, _ = train_step(x, y, state, tf.constant(0, tf.int64), True)
    assert np.isfinite(float(first_loss))
    for before, v in zip(start, model.trainable_variables, strict=True):
        np.testing.assert_array_equal(v.numpy(), before, err_msg=v.path)
    steps = 40
    for step in range(1, steps):
        loss, _, state = train_step(x, y, state, tf.constant(step, tf.int64), True)
    applied = int(optimizer.iterations.numpy())
    assert 0 < applied < steps - 10  # more than 10 steps skipped, then training
    assert all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)
    assert float(loss) < float(first_loss) - 0.3  # it learns the batch
    pairs = zip(start, model.trainable_variables, strict=True)
    assert min(np.abs(v.numpy() - before).max() for before, v in pairs) > 0  # every one trained


@pytest.mark.parametrize("step, fresh", [(0, [0, 3]), (1, [2]), (2, [1])])
def test_rows_of_a_batch_start_from_a_zero_state_in_turn(model, step, fresh):
    """--zero-state-every 3: at step s, the rows r with (r + s) % 3 == 0 start from a
    zero state, the others from the state they were given."""
    optimizer = keras.optimizers.Adam(0.0)  # the weights stay: one model for every step
    optimizer.build(model.trainable_variables)
    config = {"seed": 0, "clip_norm": 1.0, "batch_size": 4, "zero_state_every": 3}
    train_step = training.make_train_step(model, optimizer, config)
    x = random_codes([4, 12])
    state = tf.random.normal([4, model.state_size], seed=2)
    _, _, new_state = train_step(
        x, np.roll(x, -1, axis=1), state, tf.constant(step, tf.int64), False
    )
    zeroed = state.numpy()
    zeroed[fresh] = 0
    np.testing.assert_allclose(new_state, model(x, zeroed)[1], atol=1e-6)
    kept = [r for r in range(4) if r not in fresh]  # and those rows differ from a fresh start
    differ = np.abs(new_state.numpy()[kept] - model(x, zeroed * 0)[1].numpy()[kept])
    assert (differ.max(axis=1) > 1e-4).all()


def test_output_bias_frequencies_starts_from_the_texts_symbol_frequencies():
    """--output-bias frequencies: a new model's softmax, before any step, gives each
    symbol its share of the training text (each count one more); zeros: a uniform guess."""
    counts = np.zeros(98, np.int64)
    counts[[1, 40, 97]] = [5, 300, 94]  # a tab, "G", a line feed
    config = dict(CONFIG, deterministic=False, mixed_precision=False, seed=0, learning_rate=0.01)
    config["weight_decay"] = 0.0
    for bias, expected in (("frequencies", (counts + 1) / (counts + 1).sum()), ("zeros", 1 / 98)):
        model, _ = training.make_model(dict(config, output_bias=bias), Distribution(), counts)
        probs = tf.nn.softmax(model.logits_layer.bias).numpy()
        np.testing.assert_allclose(probs, np.broadcast_to(expected, [98]), rtol=1e-5)


def test_weight_decay_shrinks_the_weight_matrices_and_not_the_biases():
    """--weight-decay W: a training step moves each weight matrix as a step without it
    does, and shrinks it by W x the learning rate besides (AdamW's decoupled decay);
    the biases (the logits' are the text's frequencies) move exactly as without."""
    config = dict(CONFIG, deterministic=False, mixed_precision=False, seed=0)
    config.update(learning_rate=0.1, output_bias="zeros", clip_norm=1.0)
    config.update(batch_size=4, zero_state_every=0)
    x = random_codes([4, 12])
    after = {}
    for decay in (0.0, 0.5):
        model, optimizer = training.make_model(
            dict(config, weight_decay=decay), Distribution(), symbol_counts=None
        )
        optimizer.learning_rate.assign(0.1)  # as rnn_train.py sets it before each step
        before = [v.numpy() for v in model.trainable_variables]
        train_step = training.make_train_step(model, optimizer, config)
        train_step(x, np.roll(x, -1, axis=1), model.zero_state(4), tf.constant(0, tf.int64), False)
        after[decay] = [v.numpy() for v in model.trainable_variables]
    is_matrix = [not v.path.endswith("bias") for v in model.trainable_variables]
    assert sum(is_matrix) == 7 and len(before) == 11  # 3 x (kernel, recurrent, bias) + dense
    for start, decayed, plain, matrix in zip(
        before, after[0.5], after[0.0], is_matrix, strict=True
    ):
        np.testing.assert_allclose(decayed, plain - (0.1 * 0.5 * start if matrix else 0), atol=1e-6)
        assert (np.abs(decayed - plain).max() > 1e-3) == matrix
