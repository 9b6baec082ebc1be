"""A model as a TensorFlow SavedModel that generates and scores text with the
alphabet inside, and as LiteRT models of one step (rnn_export.py writes them; the
folder's layout is in its docstring). generate runs generate.py's compiled loop, so
the same prime, seed and settings give rnn_play.py's text; no op needs a GPU.
"""

import json
import math
import os
import shutil

import tensorflow as tf

import txtutils
from charrnn import memory
from charrnn.generate import GENERATE_PER_CALL, SCORE_PER_CALL, generation_loop
from charrnn.generate import SCORE_LOGITS as PLAY_LOGITS  # rnn_play.py's, for a prime
from charrnn.model import nats_and_hits, transpose_codes
from charrnn.tf_quiet import quiet_stderr

# What the graph's UTF-8 decoder reads an invalid sequence as, before it becomes that
# many unknown characters (code 0), one per byte: a lone surrogate, which no valid
# UTF-8 encodes (nor is in an alphabet), so that it is never a U+FFFD of the text.
NOT_UTF8 = 0xD800
INT64_MAX = 2**63 - 1
# The logits of one call of score at most, in bytes: those of rnn_play.py's call for the
# talk's 98 symbols (1.6 MB). rnn_play.py --score lets a call's logits grow to 64 MB for
# its one text; a server runs the calls of many requests side by side.
SCORE_LOGITS = SCORE_PER_CALL * txtutils.ALPHASIZE * memory.FLOAT
# The graph's loops run one iteration at a time. TensorFlow overlaps up to 10 by
# default, and two of score's then run its XLA-compiled loss at once: XLA on the CPU
# (TensorFlow 2.21) can crash the process (SIGSEGV) when one compiled function first
# runs in two threads at once. Each call of score and of sample needs the state the
# call before it left, and primes of several lengths are short: the overlap saved little.
ONE_AT_A_TIME = 1


# rnn_export.py's OUT_DIR, and tools/bench_export.py's: never written over


class ExportError(Exception):
    """An OUT_DIR that cannot be written; the message says what to do."""


def check_out_dir(out_dir, serving=False):
    """Refuse an OUT_DIR that holds anything, or is no folder: nothing is overwritten.
    serving: one that holds an export with its page may be served as it is."""
    if serving and os.path.isfile(os.path.join(out_dir, "web", "model.json")):
        return
    try:
        holds = os.path.isdir(out_dir) and os.listdir(out_dir)
    except OSError as e:
        raise ExportError(f"cannot read {out_dir}: {e.strerror}; name a new folder") from None
    if holds:
        raise ExportError(f"{out_dir} exists and is not empty: name a new folder")
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise ExportError(f"{out_dir} exists and is not a folder: name a new folder")


def score_cells_per_call(alphasize):
    """Characters (rows x columns) that score runs through the model per call: for the
    98 symbols SCORE_PER_CALL (longer calls measured slower), proportionally fewer for a
    longer alphabet (150 symbols: 2,676; thousands of CJK characters: 100-200)."""
    return memory.chars_per_call(SCORE_LOGITS, 1, alphasize, most=SCORE_PER_CALL)


class Step(tf.Module):
    """The model's weights and its step: what the LiteRT models hold. batch: the rows
    of a call, None for any number (the web page's LiteRT.js refuses a dynamic batch
    dimension, and runs a step with a fixed batch of 1)."""

    def __init__(self, model, batch=None):
        super().__init__()
        # Saved: the model's tf.Variables, not its Keras objects (held in a closure,
        # which a tf.Module does not track): TF 2.21's LiteRT converter does not
        # freeze Keras variables, and its step then reads uninitialised weights.
        self.weights = [w.value for w in model.weights]
        self._model = lambda: model
        state = tf.TensorSpec([batch, model.state_size], tf.float32, name="state")
        self.step = tf.function(
            self._step,
            input_signature=[tf.TensorSpec([batch], tf.int32, name="codes"), state],
            autograph=False,
        )

    @property
    def model(self):
        return self._model()

    def _step(self, codes, state):
        logits, state = self.model.step(codes, state)  # [B, ALPHASIZE], [B, STATE]
        return {"logits": logits, "state": state}


class Exported(Step):
    """What the SavedModel holds. Text crosses its border as UTF-8 strings and is
    encoded and decoded in the graph with the checkpoint's alphabet (any length, any
    code points): CRLF read as LF, characters not in it as code 0, and every byte that
    is not UTF-8 as one code 0, as rnn_play.py reads its prime and a scored file
    (surrogateescape, then Alphabet.encode). (Its lookup table is why the LiteRT models
    are made from Step: a table is no built-in op.)"""

    def __init__(self, model, alphabet):
        super().__init__(model)
        points = [ord(c) for c in alphabet]  # [ALPHASIZE]
        self.alphasize = len(points)
        self.code_points = tf.constant(points, tf.int32)  # code -> code point
        self.code_of = tf.lookup.StaticHashTable(  # code point -> code, 0 if absent
            tf.lookup.KeyValueTensorInitializer(
                self.code_points, tf.range(self.alphasize, dtype=tf.int32)
            ),
            default_value=0,
        )
        self.loop = generation_loop(model)  # rnn_play.py's
        self.score_cells = score_cells_per_call(self.alphasize)
        self.generate = tf.function(
            self._generate,
            input_signature=[
                tf.TensorSpec([None], tf.string, name="prime"),
                tf.TensorSpec([], tf.int32, name="length"),
                tf.TensorSpec([], tf.float32, name="temperature"),
                tf.TensorSpec([], tf.int32, name="top_n"),
                tf.TensorSpec([], tf.int64, name="seed"),
            ],
            autograph=False,
        )
        self.score = tf.function(
            self._score,
            input_signature=[tf.TensorSpec([None], tf.string, name="text")],
            autograph=False,
        )

    def signatures(self):
        return {"generate": self.generate, "score": self.score, "step": self.step}

    # -- text <-> codes

    def encode(self, text):
        """string [B] -> int32 ragged [B, (CHARACTERS)]. The decoder reads an invalid
        sequence (a byte that starts no character, a character cut short) as one
        NOT_UTF8 mark; Python's surrogateescape, which rnn_play.py reads with, gives
        a character per byte: so each mark becomes as many unknowns as its bytes."""
        text = tf.strings.regex_replace(text, "\r\n", "\n")
        points, starts = tf.strings.unicode_decode_with_offsets(
            text, "UTF-8", errors="replace", replacement_char=NOT_UTF8
        )  # ragged [B, (DECODED)]: code points, and the byte where each begins
        # The decoded characters of a row cover its bytes one after the other, so that
        # in the rows' bytes laid end to end each ends where the next begins (the last
        # of a row where the next row begins, or at the very end).
        size = tf.cast(tf.strings.length(text, unit="BYTE"), tf.int64)  # [B]
        before = tf.repeat(tf.cumsum(size, exclusive=True), points.row_lengths())
        begin = starts.flat_values + before  # [ALL DECODED]
        end = tf.concat([begin[1:], tf.reduce_sum(size)[None]], axis=0)
        bad = tf.equal(points.flat_values, NOT_UTF8)
        times = tf.where(bad, end - begin, 1)  # [ALL DECODED]: characters it stands for
        lengths = tf.reduce_sum(points.with_flat_values(times), axis=1)  # [B]
        codes = self.code_of.lookup(tf.repeat(points.flat_values, times))  # NOT_UTF8: 0
        return tf.RaggedTensor.from_row_lengths(codes, lengths)

    def decode(self, codes):
        """int32 [B, N] -> string [B]."""
        return tf.strings.unicode_encode(tf.gather(self.code_points, codes), "UTF-8")

    # -- the signatures

    def _generate(self, prime, length, temperature, top_n, seed):
        """length characters after each prime [B]. Row i is stream i of rnn_play.py
        --streams with the same seed: the state after its own prime (see feed_primes),
        then the random numbers of stream i, which depend on the seed and i alone. So
        one prime gives rnn_play.py's text, and so does the first row of any batch, but
        row i > 0 is not what its prime alone gives: the rows are independent streams,
        and the same prime in two rows gives two texts. No row depends on the others."""
        checks = [
            tf.debugging.assert_non_negative(length, message="length must be 0 or more"),
            tf.debugging.assert_non_negative(top_n, message="top_n must be 0 or more"),
            tf.debugging.Assert(
                tf.math.is_finite(temperature) & (temperature > 0),
                ["temperature must be a number above 0, got", temperature],
            ),
        ]
        with tf.control_dependencies(checks):
            # an empty prime is rnn_play.py's default one, a newline
            prime = tf.where(tf.strings.length(prime) > 0, prime, "\n")
        logits, state = self.feed_primes(self.encode(prime))  # [B, ALPHASIZE], [B, STATE]
        # Generator.start's seed: Python's seed % 2**63, in two's complement
        seed = tf.stack([tf.bitwise.bitwise_and(seed, INT64_MAX), tf.constant(0, tf.int64)])
        codes = self.sample(logits, state, seed, length, top_n, temperature)  # [B, LENGTH]
        return {"text": self.decode(codes)}

    def feed_primes(self, primes):
        """The logits after each prime's last character [B, ALPHASIZE] and the state
        [B, STATE]. Primes of one length go through the model together, as rnn_play.py
        feeds its streams' prime; primes of several lengths one at a time, each exactly
        as it would be alone (padding would change the state of the shorter ones)."""
        lengths = primes.row_lengths()  # [B]
        rows = tf.shape(lengths)[0]

        def together():
            return self.feed(primes.to_tensor())  # [B, LENGTH]

        def one_by_one():
            def body(i, logits, states):
                out, state = self.feed(primes[i][None])  # [1, LENGTH_i]
                return i + 1, logits.write(i, out[0]), states.write(i, state[0])

            arrays = [  # element shapes given: zero rows stack to [0, ...]
                tf.TensorArray(tf.float32, size=rows, element_shape=[n])
                for n in (self.alphasize, self.model.state_size)
            ]
            _, logits, states = tf.while_loop(
                lambda i, *_: i < rows,
                body,
                (tf.constant(0), *arrays),
                parallel_iterations=ONE_AT_A_TIME,
            )
            return logits.stack(), states.stack()

        same = tf.reduce_all(tf.equal(lengths, tf.reduce_max(lengths)))
        return tf.cond(same & (rows > 0), together, one_by_one)

    def feed(self, x):
        """The logits after the last column of x [R, LENGTH > 0] (a prime in each row)
        [R, ALPHASIZE] and the state [R, STATE], from a zero state: x fed as rnn_play.py
        feeds a prime (Generator.feed), score_per_call(ALPHASIZE, R) columns a call, so
        that a call's logits stay small however long the prime, and the state is the
        one rnn_play.py's calls give."""
        rows = tf.shape(x)[0]
        budget = PLAY_LOGITS // (memory.FLOAT * self.alphasize)  # as score_per_call
        width = tf.clip_by_value(budget // tf.maximum(rows, 1), 1, SCORE_PER_CALL)

        def body(start, logits, state):
            out, state = self.model.infer(x[:, start : start + width], state)
            return start + width, out[:, -1], state

        _, logits, state = tf.while_loop(
            lambda start, *_: start < tf.shape(x)[1],
            body,
            (tf.constant(0), tf.zeros([rows, self.alphasize]), self.model.zero_state(rows)),
            shape_invariants=(
                tf.TensorShape([]),
                tf.TensorShape([None, self.alphasize]),
                tf.TensorShape([None, self.model.state_size]),
            ),
            parallel_iterations=ONE_AT_A_TIME,
        )
        return logits, state

    def sample(self, logits, state, seed, length, top_n, temperature):
        """length characters per row [B, LENGTH], drawn as Generator.next(n) draws them
        with n = GENERATE_PER_CALL: whole calls, the seed of call c folded with c, then cut."""
        n = GENERATE_PER_CALL
        calls = (length + n - 1) // n
        cut = (top_n > 0) & (top_n < self.alphasize)  # sample_logits' test, in the graph

        def body(c, logits, state, out):
            s = tf.random.experimental.stateless_fold_in(seed, c)
            codes, logits, state = tf.cond(
                cut,
                lambda: self.loop(logits, state, s, n, top_n, temperature),
                lambda: self.loop(logits, state, s, n, 0, temperature),
            )  # [N, B]
            return c + 1, logits, state, out.write(c, codes)

        out = tf.TensorArray(tf.int32, size=calls, element_shape=[n, None])
        _, _, _, out = tf.while_loop(
            lambda c, *_: c < calls,
            body,
            (tf.constant(0), logits, state, out),
            parallel_iterations=ONE_AT_A_TIME,
        )
        rows = tf.shape(logits)[0]
        codes = tf.cond(calls > 0, out.concat, lambda: tf.zeros([0, rows], tf.int32))
        return transpose_codes(codes)[:, :length]  # [B, LENGTH]

    def _score(self, text):
        """Bits per character of each text, one state from its first character to its
        last, each character predicted from all those before it (the first only fed),
        as rnn_play.py --score; NaN for a text of fewer than 2 characters."""
        ragged = self.encode(text)  # [B, (CHARACTERS)]
        codes = ragged.to_tensor()  # [B, LONGEST], padded with 0
        rows = tf.shape(codes)[0]
        chars = tf.maximum(tf.cast(ragged.row_lengths(), tf.int32) - 1, 0)  # [B]
        x, y = codes[:, :-1], codes[:, 1:]  # [B, LONGEST-1]: y is the character after x
        width = tf.maximum(self.score_cells // tf.maximum(rows, 1), 1)  # columns per call

        def body(start, state, nats):
            logits, state = self.model.infer(x[:, start : start + width], state)
            labels = y[:, start : start + width]  # [B, WIDTH]
            real = start + tf.range(tf.shape(labels)[1]) < chars[:, None]
            losses, _ = nats_and_hits(logits, labels, real)  # [B, WIDTH]
            nats += tf.cast(tf.reduce_sum(losses, axis=1), tf.float64)
            return start + width, state, nats

        _, _, nats = tf.while_loop(
            lambda start, *_: start < tf.shape(x)[1],
            body,
            (tf.constant(0), self.model.zero_state(rows), tf.zeros([rows], tf.float64)),
            parallel_iterations=ONE_AT_A_TIME,
        )
        bits = nats / tf.cast(chars, tf.float64) / math.log(2)  # NaN where chars == 0
        return {"bits_per_char": tf.cast(bits, tf.float32), "chars": chars}


# ---------------------------------------------------------------------------
# Writing


def model_info(model, alphabet):
    """What a program that runs the step itself needs to know (model.json)."""
    return {
        "alphabet": alphabet,
        "alphasize": len(alphabet),
        "layers": model.layers_count,
        "cell_size": model.cell_size,
        "state_size": model.state_size,
    }


def export(model, alphabet, out_dir):
    """Write the SavedModel, the LiteRT models and model.json of model (a CharRNN)
    and alphabet (its i-th character: code i) into out_dir, a new folder."""
    module = Exported(model, alphabet)
    tf.saved_model.save(module, os.path.join(out_dir, "saved_model"), module.signatures())
    litert_steps(model, out_dir)
    info = model_info(model, alphabet)
    with open(os.path.join(out_dir, "model.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, ensure_ascii=False, indent=1)
        f.write("\n")


def litert_steps(model, out_dir, batch=None):
    """Write model's step as out_dir/step.tflite (float32) and step_int8.tflite (int8
    weights), for batch rows a call (None: any number)."""
    step, only_step = os.path.join(out_dir, ".step"), Step(model, batch)  # the converter's input
    tf.saved_model.save(only_step, step, {"step": only_step.step})
    for name, quantized in (("step.tflite", False), ("step_int8.tflite", True)):
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(litert_step(step, quantized))
    shutil.rmtree(step)


def litert_step(saved_model_dir, quantized):
    """The step signature of a SavedModel as a LiteRT flatbuffer: TensorFlow Lite's
    built-in ops only (a phone's runtime has no Select TF ops), float32, or with
    int8 weights (dynamic range: activations stay float32)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=["step"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantized:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    with quiet_stderr():  # the MLIR converter logs its passes straight to fd 2
        return converter.convert()
