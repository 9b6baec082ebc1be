"""Generation (generate.py): the compiled loop against a plain one, independent
seeded streams, and the statistics of sampling, on TensorFlow's sampler and inside the
XLA-compiled loop that users run."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_test import CONFIG, random_codes

import txtutils
from charrnn.generate import Generator, sample_logits
from charrnn.model import build_model


@pytest.fixture
def model():
    keras.utils.set_random_seed(1)
    return build_model(CONFIG)


def test_generator_feeds_back_what_it_samples(model):
    """topn=1 (always the likeliest) must give exactly the characters of a plain loop
    that feeds the model its own argmax, stream by stream."""
    prime = random_codes([3, 7])
    generator = Generator(model, topn=1)
    generator.start(prime, seed=0)
    got = np.concatenate([generator.next(8), generator.next(8)], axis=1)  # [3, 16]
    logits, state = model.infer(prime, model.zero_state(3))
    want = []
    for _ in range(16):
        code = np.argmax(logits[:, -1], axis=-1).astype(np.int32)  # [3]
        want.append(code)
        logits, state = model.infer(code[:, None], state)
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


# ---------------------------------------------------------------------------
# Sampling as users get it: inside Generator's XLA-compiled loop


class FixedLogits:
    """A stand-in for a model whose every step gives the same logits [ALPHASIZE],
    whatever it is fed: the compiled loop then draws from one known distribution at
    every step of every stream."""

    def __init__(self, logits):
        self.logits = tf.constant(logits, tf.float32)[None]  # [1, ALPHASIZE]
        self.alphasize = self.logits.shape[-1]

    def zero_state(self, rows):
        return tf.zeros([rows, 1])

    def infer(self, x, state):  # [ROWS, LENGTH] -> [ROWS, LENGTH, ALPHASIZE]
        return tf.tile(self.logits[None], [tf.shape(x)[0], tf.shape(x)[1], 1]), state

    def step(self, code, state):  # [ROWS] -> [ROWS, ALPHASIZE]
        return tf.tile(self.logits, [tf.shape(code)[0], 1]), state


def test_the_compiled_loop_draws_from_the_top_n_at_the_temperature():
    """Generator (rnn_play.py's and the export's loop) with fixed logits: 100 streams x
    40 steps per setting. Top-n never draws outside the n likeliest, and the draws follow
    softmax(logits / T) renormalised over them (over all symbols for top-n 0)."""
    # spread so that several symbols draw 5% or more even among all at T = 1.5
    logits = (np.random.default_rng(13).normal(size=txtutils.ALPHASIZE) * 3).astype(np.float32)
    model = FixedLogits(logits)
    for seed, (topn, temperature) in enumerate([(3, 1.0), (5, 0.5), (4, 2.0), (0, 1.5)]):
        generator = Generator(model, topn=topn, temperature=temperature)
        generator.start(np.zeros([100, 1], np.int32), seed=seed)
        got = generator.next(40).ravel()  # [4000]
        kept = np.argsort(logits)[-topn:] if topn else np.arange(len(logits))
        assert set(got.tolist()) <= set(kept.tolist()), (topn, temperature)
        p = np.zeros(len(logits))
        z = logits[kept].astype(np.float64) / temperature
        p[kept] = np.exp(z - z.max())
        assert_follows(got, p / p.sum())
