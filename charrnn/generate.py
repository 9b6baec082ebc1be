"""Generation: text from a model, for any number of independent streams at once.
The whole loop (the model's step, sampling, feeding back) runs inside one compiled
graph, GENERATE_PER_CALL characters per call, so Python is off the per-character path.
"""

import os

import numpy as np
import tensorflow as tf

import txtutils
from charrnn import memory
from charrnn.model import nats_and_hits

TOPN = 2  # rnn_play.py's default per 98 symbols: the original's 2 for a trained model of
# the talk's alphabet, likely yet varied; default_topn keeps that share of a bigger one
GENERATE_PER_CALL = 256  # characters per compiled call of generation: ~30 ms for one
# stream, still smooth
# characters per compiled call when scoring (at most): long enough that a call's
# overhead is nothing, short enough for a progress line to move (16384 measured slower)
SCORE_PER_CALL = 4096
SCORE_PIECE = 1 << 20  # bytes of the scored file read at a time
SCORE_LOGITS = 64 << 20  # bytes of logits per scoring call at most: one text, one process,
# so a big alphabet may take that much (98 symbols: SCORE_PER_CALL; 5,000: 3,355; 300,000: 55)
# A temperature is taken as at least this: logits / T stays finite in float32 (a model's
# logits are far below 1e8), so a tinier one samples the likeliest, as T -> 0 should,
# where a float32 0 gave +-inf logits, and the sampler the lowest code.
MIN_TEMPERATURE = 1e-30


def score_per_call(alphasize, rows=1):
    """Characters per compiled call that scores a text, or feeds a prime to rows
    streams at once: SCORE_PER_CALL, fewer where the logits would pass SCORE_LOGITS."""
    return memory.chars_per_call(SCORE_LOGITS, rows, alphasize, most=SCORE_PER_CALL)


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


def generation_loop(model):
    """The generation loop of model, XLA-compiled: loop(logits, state, seed, n, topn,
    temperature) samples n characters per stream from logits [STREAMS, ALPHASIZE],
    feeding each back, and returns their codes [n, STREAMS], the last logits and the
    state. topn as in sample_logits; temperature: float32 []. Generator and the
    exported SavedModel (rnn_export.py) both run this one graph, so that the same
    prime, seed and settings give the same text through either."""

    def loop(logits, state, seed, n, topn, temperature):
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

    return tf.function(loop, jit_compile=True, autograph=False)


class Generator:
    """Text from a model, for any number of independent streams at once:

        gen = Generator(model, topn=2)
        gen.start(prime, seed=0)      # prime: int [STREAMS, LENGTH], fed first
        gen.next(64)                  # int [STREAMS, 64]: the next 64 characters
        gen.next(64)                  # and the 64 after those

    The same prime and seed give the same text, however it is cut into next() calls
    of the same size. A prime too long to hold (a file: rnn_play.py --prime-file) is
    fed in pieces: start(first_piece, seed), then feed(piece) for each of the rest;
    however it is cut, it runs through the model in the same calls."""

    def __init__(self, model, topn=0, temperature=1.0):
        self.model = model
        # a tensor when it cuts (see sample_logits), so that the compiled loop is
        # generation_loop's whatever the value
        self.topn = tf.constant(topn, tf.int32) if 0 < topn < model.alphasize else 0
        self.temperature = tf.constant(temperature, tf.float32)
        self._loop = generation_loop(model)

    def start(self, prime, seed):
        prime = np.asarray(prime, dtype=np.int32)  # [STREAMS, LENGTH]
        self._state = self.model.zero_state(len(prime))
        self.seed = tf.constant([seed % 2**63, 0], tf.int64)
        self.calls = 0
        self._held = prime[:, :0]  # fed, not yet run: less than a call's worth
        self.feed(prime)

    def feed(self, prime):
        """Feed more prime, int [STREAMS, LENGTH], after what was fed. It runs through
        the model score_per_call characters per compiled call, so that the logits stay
        small however long it is, and a prime of any length compiles two shapes at
        most: the calls' and the last, shorter one, run when the text is asked for."""
        prime = np.asarray(prime)  # (a broadcast view stays one: a call's codes at a time)
        per_call = score_per_call(self.model.alphasize, len(prime))
        start = 0
        if self._held.shape[1]:  # complete the call begun before
            start = per_call - self._held.shape[1]
            part = prime[:, :start].astype(np.int32)
            self._held = np.concatenate([self._held, part], axis=1)
            if self._held.shape[1] < per_call:
                return
            self._run_prime(self._held)
        whole = start + (prime.shape[1] - start) // per_call * per_call
        for i in range(start, whole, per_call):
            self._run_prime(prime[:, i : i + per_call].astype(np.int32))
        self._held = prime[:, whole:].astype(np.int32)

    def _run_prime(self, codes):
        logits, self._state = self.model.infer(codes, self._state)
        self.logits = logits[:, -1]  # [STREAMS, ALPHASIZE]

    @property
    def state(self):
        """The state [STREAMS, LAYERS*CELL] after everything fed and generated."""
        if self._held.shape[1]:
            self._run_prime(self._held)
            self._held = self._held[:, :0]
        return self._state

    @state.setter
    def state(self, state):
        """Go on from this state (what was fed and not yet run is dropped)."""
        self._state, self._held = state, self._held[:, :0]

    def next(self, n):
        seed = tf.random.experimental.stateless_fold_in(self.seed, self.calls)
        self.calls += 1
        state = self.state  # (the prime's last call runs first: it sets the logits)
        codes, self.logits, self._state = self._loop(
            self.logits, state, seed, n, self.topn, self.temperature
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

    The text runs through the model `per_call` characters per call, a layer at a time
    (each layer's input products one matmul over the call's characters, only the
    recurrent ones a time step at a time, in an XLA-compiled loop: model.scoring_call):
    faster than the generation loop, which must run the whole stack for each character
    it samples (make bench shows both)."""

    def __init__(self, model, per_call=None):
        self.model = model
        self.per_call = per_call or score_per_call(model.alphasize)
        # compiled in parts (model.scoring_call), not whole: faster for one long row
        self._run = tf.function(self._call_graph, autograph=False)
        self.start()

    def start(self):
        self.state = self.model.zero_state(1)  # [1, LAYERS*CELL]
        self.pending = np.zeros(0, np.int32)  # fed, not yet predicted from; [0] is an input
        self.loss, self.hits, self.characters = 0.0, 0, 0

    def feed(self, codes):
        """Score every whole call's worth that codes complete; keep the rest for later."""
        self.pending = np.concatenate([self.pending, np.asarray(codes, np.int32)])
        done, n = 0, self.per_call
        while len(self.pending) - done > n:  # n + 1 codes: n predictions
            self._score(self.pending[done : done + n + 1], n)
            done += n
        self.pending = self.pending[done:]

    def finish(self):
        """Score what is left (one call, padded to a whole call: one compiled shape for
        every call) and return (mean nats per character, accuracy, characters)."""
        n = len(self.pending) - 1
        if n > 0:
            padded = np.zeros(self.per_call + 1, np.int32)
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

    def _call_graph(self, x, y, state, n):
        """x, y: int [PER_CALL], y the characters that follow x, the first n of them real.
        Returns the summed loss and hits of those n, and the state after all PER_CALL."""
        logits, state = self.model.scoring_call(x[None], state)  # [1, PER_CALL, ALPHASIZE]
        real = tf.range(tf.shape(x)[0]) < n  # [PER_CALL]
        nats, hits = nats_and_hits(logits[0], y, real)  # [PER_CALL] each
        return tf.reduce_sum(nats), tf.reduce_sum(hits), state


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
            # a call's worth at a time, so that the progress line moves every call
            for i in range(0, len(codes), scorer.per_call):
                scorer.feed(codes[i : i + scorer.per_call])
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
