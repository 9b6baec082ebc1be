"""The model: stacked GRU cells unrolled over a sequence, one softmax layer shared by
every time step. The state goes in and comes out explicitly, so the caller carries
it from batch to batch (training) or from character to character (generation).

    x [BATCH, SEQLEN] -> one-hot -> (dropout -> GRU) x LAYERS -> dropout
      -> all time steps "in the same bag" [BATCH*SEQLEN, CELL] -> Dense -> logits
"""

import keras
import numpy as np
import tensorflow as tf

from txtutils import sample


def gru_layer(cell_size):
    """A GRU that TensorFlow runs with the cuDNN kernel on a GPU. Every argument
    below is one of cuDNN's conditions (model_test.py pins them): change one and
    the GPU silently falls back to a loop many times slower."""
    return keras.layers.GRU(
        cell_size,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        reset_after=True,      # r applied after the recurrent matmul, as cuDNN computes it
        recurrent_dropout=0.0,
        unroll=False,
        use_cudnn="auto",
        return_sequences=True,
        return_state=True,
    )


class CharRNN(keras.Model):
    def __init__(self, alphasize, cell_size, layers, dropout):
        super().__init__()
        self.alphasize = alphasize
        self.cell_size = cell_size
        self.layers_count = layers
        # Layers are attributes, not a Python list: tf.train.Checkpoint does not
        # save layers kept in a list of a keras.Model subclass.
        for i in range(layers):
            setattr(self, f"gru{i}", gru_layer(cell_size))
        self.dropout_rate = dropout
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
        return tf.zeros([batch_size, self.state_size])                # [BATCH, LAYERS*CELL]

    def call(self, x, state, training=False, dropout_seed=None):
        """x: int [BATCH, SEQLEN]; state: [BATCH, LAYERS*CELL].
        Returns logits [BATCH, SEQLEN, ALPHASIZE] and the new state [BATCH, LAYERS*CELL].

        In training, dropout_seed (int [2], e.g. [seed, step]) draws the dropout masks
        statelessly: a step's masks depend on nothing else, so a resumed run draws
        exactly the masks the uninterrupted run would have."""
        batch, seqlen = tf.shape(x)[0], tf.shape(x)[1]
        h = tf.one_hot(x, self.alphasize)                             # [BATCH, SEQLEN, ALPHASIZE]
        states_in = tf.split(state, self.layers_count, axis=1)        # LAYERS x [BATCH, CELL]
        states_out = []
        for i, (gru, s) in enumerate(zip(self.grus, states_in)):
            h = self._dropout(h, training, dropout_seed, i)
            h, s = gru(h, initial_state=s, training=training)          # [BATCH, SEQLEN, CELL]
            states_out.append(s)
        h = self._dropout(h, training, dropout_seed, self.layers_count)
        # One softmax layer for every time step: put them all in the same bag.
        flat = tf.reshape(h, [-1, self.cell_size])                    # [BATCH*SEQLEN, CELL]
        logits = self.softmax(flat)                                   # [BATCH*SEQLEN, ALPHASIZE]
        logits = tf.reshape(logits, [batch, seqlen, self.alphasize])  # [BATCH, SEQLEN, ALPHASIZE]
        return logits, tf.concat(states_out, axis=1)

    def _dropout(self, h, training, seed, salt):
        if not training or self.dropout_rate == 0:
            return h
        seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), salt)
        return tf.nn.experimental.stateless_dropout(h, self.dropout_rate, seed=seed)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32),
                                  tf.TensorSpec([None, None], tf.float32)])
    def predict(self, x, state):
        """Compiled inference (no dropout): validation, scoring and generation."""
        return self(x, state, training=False)


def build_model(config):
    """The model a checkpoint's config describes, with its weights created."""
    model = CharRNN(config["alphasize"], config["cell_size"], config["layers"], config["dropout"])
    model(tf.zeros([1, 1], tf.int32), model.zero_state(1))
    return model


def loss_and_accuracy(logits, y):
    """Mean softmax cross-entropy (nats per character) and accuracy of the argmax."""
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
    hits = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), y), tf.float32)
    return tf.reduce_mean(losses), tf.reduce_mean(hits)


def generate(model, prime, rng, topn=None, temperature=1.0):
    """Loop one cell: yield an endless stream of sampled symbol codes.

    The prime text (symbol codes, at least one) is fed first; then each sampled
    character and the state it produced are fed back for the next one."""
    x = np.asarray(prime, dtype=np.int32)[None, :]                    # [1, len(prime)]
    logits, state = model.predict(x, model.zero_state(1))
    while True:
        code = sample(logits[0, -1].numpy(), rng, topn, temperature)
        yield code
        logits, state = model.predict(np.array([[code]], np.int32), state)  # [1, 1, ALPHASIZE]
