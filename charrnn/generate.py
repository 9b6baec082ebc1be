"""Generation: text from a model, for any number of independent streams at once.
The whole loop (the model's step, sampling, feeding back) runs inside one compiled
graph, a chunk of characters per call, so Python is off the per-character path.
"""

import os

import numpy as np
import tensorflow as tf

import txtutils

TOPN = 2  # rnn_play.py's default per 98 symbols: the original's 2 for a trained model of
# the talk's alphabet, likely yet varied; default_topn keeps that share of a bigger one
CHUNK = 256  # characters per compiled call of generation: ~30 ms for one stream, still smooth
# characters per compiled call when scoring: long enough that a call's overhead is
# nothing, short enough for a progress line to move (16384 measured slower)
SCORE_CHUNK = 4096
SCORE_PIECE = 1 << 20  # bytes of the scored file read at a time
SCORE_LOGITS = 1 << 24  # floats of logits per scoring call at most (64 MB): a big alphabet
# scores fewer characters per call (98 symbols: SCORE_CHUNK; 5,000: 3,355; 300,000: 55)
# A temperature is taken as at least this: logits / T stays finite in float32 (a model's
# logits are far below 1e8), so a tinier one samples the likeliest, as T -> 0 should,
# where a float32 0 gave +-inf logits, and the sampler the lowest code.
MIN_TEMPERATURE = 1e-30


def score_chunk(alphasize, rows=1):
    """Characters per compiled call that scores a text, or feeds a prime to rows
    streams at once: SCORE_CHUNK, fewer for an alphabet whose logits [ROWS, CHUNK,
    ALPHASIZE] would pass SCORE_LOGITS floats."""
    return max(1, min(SCORE_CHUNK, SCORE_LOGITS // (alphasize * rows)))


def default_topn(alphasize, per_98=TOPN):
    """A top-n cut for an alphabet: per_98 for the talk's 98 symbols, the same share of
    a bigger alphabet (TOPN: 2 for 98 symbols, 3 for Russian's 169, 98 for 4,785).
    A count fixed whatever the alphabet keeps what English needs and starves a big one:
    in a Chinese text, spaces, line feeds and punctuation each outnumber any one of
    thousands of ideographs, so the 2 or 10 likeliest characters of an early model are
    those alone, and its samples nothing else."""
    return max(per_98, round(per_98 * alphasize / 98))


def sample_logits(logits, seed, topn, temperature):
    """Draw one symbol per row of logits [STREAMS, ALPHASIZE]: divide by the
    temperature, keep the topn likeliest (0 = all), renormalise, draw. [STREAMS]
    topn: a Python int, or an int32 tensor [] that is a cut (0 < topn < ALPHASIZE,
    checked by the caller: a graph that takes topn as an input must choose its
    branch before it knows the value)."""
    logits = logits / tf.maximum(temperature, MIN_TEMPERATURE)
    if tf.is_tensor(topn) or 0 < topn < logits.shape[-1]:
        top, index = tf.math.top_k(logits, topn)  # [STREAMS, TOPN]
        pick = tf.random.stateless_categorical(top, 1, seed, dtype=tf.int32)[:, 0]
        return tf.gather(index, pick, batch_dims=1)
    return tf.random.stateless_categorical(logits, 1, seed, dtype=tf.int32)[:, 0]


def chunk_function(model):
    """The generation loop of model, XLA-compiled: chunk(logits, state, seed, n, topn,
    temperature) samples n characters per stream from logits [STREAMS, ALPHASIZE],
    feeding each back, and returns their codes [n, STREAMS], the last logits and the
    state. topn as in sample_logits; temperature: float32 []. Generator and the
    exported SavedModel (rnn_export.py) both run this one graph, so that the same
    prime, seed and settings give the same text through either."""

    def chunk(logits, state, seed, n, topn, temperature):
        def body(i, logits, state, out):
            code = sample_logits(
                logits, tf.random.experimental.stateless_fold_in(seed, i), topn, temperature
            )  # [STREAMS]
            logits, state = model.step(code, state)
            return i + 1, logits, state, out.write(i, code)

        out = tf.TensorArray(tf.int32, size=n)
        _, logits, state, out = tf.while_loop(
            lambda i, *_: i < n, body, (tf.constant(0), logits, state, out)
        )
        return out.stack(), logits, state  # [n, STREAMS]

    return tf.function(chunk, jit_compile=True, autograph=False)


class Generator:
    """Text from a model, for any number of independent streams at once:

        gen = Generator(model, topn=2)
        gen.start(prime, seed=0)      # prime: int [STREAMS, LENGTH], fed first
        gen.next(64)                  # int [STREAMS, 64]: the next 64 characters
        gen.next(64)                  # and the 64 after those

    The same prime and seed give the same text, however it is cut into next() calls
    of the same size. A prime too long to hold (a file: rnn_play.py --prime-file) is
    fed in pieces: start(first_piece, seed), then feed(piece) for each of the rest."""

    def __init__(self, model, topn=0, temperature=1.0):
        self.model = model
        # a tensor when it cuts (see sample_logits), so that the compiled loop is
        # chunk_function's whatever the value
        self.topn = tf.constant(topn, tf.int32) if 0 < topn < model.alphasize else 0
        self.temperature = tf.constant(temperature, tf.float32)
        self._chunk = chunk_function(model)

    def start(self, prime, seed):
        prime = np.asarray(prime, dtype=np.int32)  # [STREAMS, LENGTH]
        self.state = self.model.zero_state(len(prime))
        self.seed = tf.constant([seed % 2**63, 0], tf.int64)
        self.calls = 0
        self.feed(prime)

    def feed(self, prime):
        """Feed more prime, int [STREAMS, LENGTH], after what was fed: score_chunk
        characters per compiled call, so that its logits stay small however long it is
        (a prime that fits one call, as a typed one does, is fed in one)."""
        prime = np.asarray(prime, dtype=np.int32)
        step = score_chunk(self.model.alphasize, len(prime))
        for i in range(0, prime.shape[1], step):
            logits, self.state = self.model.infer(prime[:, i : i + step], self.state)
            self.logits = logits[:, -1]  # [STREAMS, ALPHASIZE]

    def next(self, n):
        seed = tf.random.experimental.stateless_fold_in(self.seed, self.calls)
        self.calls += 1
        codes, self.logits, self.state = self._chunk(
            self.logits, self.state, seed, n, self.topn, self.temperature
        )
        return codes.numpy().T  # [STREAMS, n]


class Scorer:
    """The loss and accuracy of a model on one text, fed as a stream of codes in pieces
    of any length: one state carried from the first character to the last, each
    character predicted from all those before it (the first is only fed).

        scorer = Scorer(model)
        scorer.start()
        scorer.feed(codes)            # int [N], as many times as there are pieces
        scorer.finish()               # (nats per character, accuracy, characters)

    The text runs through the model `chunk` characters per call, a layer at a time
    (each layer's input products one matmul over the chunk, only the recurrent ones a
    time step at a time, in an XLA-compiled loop: model.scoring_call): faster than the
    generation loop, which must run the whole stack for each character it samples
    (make bench shows both)."""

    def __init__(self, model, chunk=None):
        self.model, self.chunk = model, chunk or score_chunk(model.alphasize)
        # compiled in parts (model.scoring_call), not whole: faster for one long row
        self._run = tf.function(self._chunk_graph, autograph=False)
        self.start()

    def start(self):
        self.state = self.model.zero_state(1)  # [1, LAYERS*CELL]
        self.pending = np.zeros(0, np.int32)  # fed, not yet predicted from; [0] is an input
        self.loss, self.hits, self.characters = 0.0, 0, 0

    def feed(self, codes):
        """Score every whole chunk that codes complete; keep the rest for later."""
        self.pending = np.concatenate([self.pending, np.asarray(codes, np.int32)])
        done = 0
        while len(self.pending) - done > self.chunk:  # chunk + 1 codes: chunk predictions
            self._score(self.pending[done : done + self.chunk + 1], self.chunk)
            done += self.chunk
        self.pending = self.pending[done:]

    def finish(self):
        """Score what is left (one call, padded to a whole chunk: one compiled shape for
        every call) and return (mean nats per character, accuracy, characters)."""
        n = len(self.pending) - 1
        if n > 0:
            padded = np.zeros(self.chunk + 1, np.int32)
            padded[: n + 1] = self.pending
            self._score(padded, n)  # the state is left past the text's end: start() again
            self.pending = self.pending[-1:]
        if self.characters == 0:
            raise ValueError("Scorer.finish: no character to score (fewer than 2 fed)")
        return self.loss / self.characters, self.hits / self.characters, self.characters

    def _score(self, codes, n):
        # n as a tensor: a Python number would trace (and compile) the graph again for each
        loss, hits, self.state = self._run(codes[:-1], codes[1:], self.state, tf.constant(n))
        self.loss += float(loss)  # summed in float64: millions of characters lose nothing
        self.hits += int(hits)
        self.characters += n

    def _chunk_graph(self, x, y, state, n):
        """x, y: int [CHUNK], y the characters that follow x, the first n of them real.
        Returns the summed loss and hits of those n, and the state after all CHUNK."""
        logits, state = self.model.scoring_call(x[None], state)  # [1, CHUNK, ALPHASIZE]
        logits = logits[0]  # [CHUNK, ALPHASIZE]
        real = tf.range(tf.shape(x)[0]) < n  # [CHUNK]
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        hits = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), y)
        loss = tf.reduce_sum(tf.where(real, losses, 0.0))
        return loss, tf.reduce_sum(tf.cast(real & hits, tf.int32)), state


class ScoringStopped(KeyboardInterrupt):
    """Ctrl-C while scoring; the message says how far it got."""


def score(scorer, path, alphabet=txtutils.DEFAULT, piece_bytes=SCORE_PIECE, progress=None):
    """(nats per character, accuracy, characters, unknown share) of the scorer's model
    on a text file (rnn_play.py --score), one state carried from its first character
    to its last; the share is that of the file's characters not in the model's
    alphabet. Read a piece at a time. A regular file is read twice: first to count its
    characters (and refuse a binary file before any scoring), then to score them; a
    pipe (/dev/stdin, <(zcat f.gz)) can be read once only, so it is scored as it comes.
    progress: None, or made with the number of characters to score (None if unknown),
    shown the number done after each compiled call, and cleared at the end."""
    total = None
    if os.path.isfile(path):
        total = sum(len(codes) for codes in txtutils.read_pieces(path, piece_bytes, alphabet))
        if total < 2:
            raise txtutils.CorpusError(f"{path} has fewer than 2 characters: nothing to score")
    progress = progress and progress(total - 1 if total else None)
    scorer.start()
    read = unknown = 0
    try:
        for codes in txtutils.read_pieces(path, piece_bytes, alphabet):
            read += len(codes)
            unknown += int(np.count_nonzero(codes == txtutils.UNKNOWN))
            # a chunk at a time, so that the progress line moves every compiled call
            for i in range(0, len(codes), scorer.chunk):
                scorer.feed(codes[i : i + scorer.chunk])
                if progress:
                    progress.show(scorer.characters)
        if read < 2:
            raise txtutils.CorpusError(f"{path} has fewer than 2 characters: nothing to score")
        return (*scorer.finish(), unknown / read)
    except KeyboardInterrupt:
        of = f" of {total - 1:,}" if total else ""
        raise ScoringStopped(
            f"scoring of {path} stopped (Ctrl-C) after {scorer.characters:,}{of} "
            "characters; no figures"
        ) from None
    finally:
        if progress:
            progress.clear()
