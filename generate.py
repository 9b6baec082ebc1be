"""Generation: text from a model, for any number of independent streams at once.
The whole loop (the model's step, sampling, feeding back) runs inside one compiled
graph, a chunk of characters per call, so Python is off the per-character path.
"""

import numpy as np
import tensorflow as tf


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
        logits, self.state = self.model.infer(prime, self.model.zero_state(len(prime)))
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
