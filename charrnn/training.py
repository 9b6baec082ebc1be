"""What training does besides the loop: read the text, make the model and its
optimizer, the learning rate of each step, the compiled training step, validation
and the samples. rnn_train.py's loop calls these in turn.
"""

import json
import math

import keras
import numpy as np
import tensorflow as tf

import txtutils
from charrnn import ckpt, cli, corpus, hardware, memory, settings, textcache
from charrnn.cli import UsageError
from charrnn.distribute import Distribution
from charrnn.model import build_model, loss_and_accuracy, mean_loss_and_accuracy

# float16 only (--mixed-precision on a GPU): the loss scale to start from; Keras'
# LossScaleOptimizer halves it at each overflow (skipping that step), doubles it
# after 2,000 steps without one. A fixed choice, no flag; not in checkpoints: a
# resumed run starts here again.
LOSS_SCALE = 2.0**15
SAMPLE_LENGTH = 600  # characters in each sample
SAMPLE_TOPN = 10  # per 98 symbols (generate.default_topn): an early model needs a wide cut
# A validation runs all its rows (txtutils.VALID_MAX_ROWS) at once, VALID_PER_CALL
# characters of each per compiled call, the state carried along the rows: the same
# figures as whole rows at once, in a fraction of the memory (256 x 1,024 took ~2 GB)...
VALID_PER_CALL = 128
VALID_LOGITS = 64 << 20  # ...fewer for an alphabet whose logits would pass 64 MB (a
# 5,000-symbol alphabet: 26 characters a call)


# ---------------------------------------------------------------------------
# Set-up: the text, the model


def read_text(config, run, dist, cache_dir, cache_limit=None, progress=None):
    """The run's text (corpus.Corpus): its alphabet a resumed run's own, a new run's
    grown from the talk's (or from the parent's when fine-tuning) by the characters of
    its training text; its validation rows the chief's only (validation involves no
    other worker). The codes are read from cache_dir, which keeps cache_limit bytes of
    them (corpus.read_corpus). A
    resumed run must find the text it was trained on (UsageError)."""
    if run.resume_from:
        start, min_count = ckpt.alphabet_of(run.saved_config), None
    else:
        start = ckpt.alphabet_of(run.parent_config) if run.parent else txtutils.DEFAULT
        min_count = config["min_char_count"]
        corpus.check_named(config["data"], config["validation"])
    try:
        text = corpus.read_corpus(
            config["data"],
            config["validation"],
            start,
            min_count,
            cache_dir,
            progress,
            with_validation_rows=dist.chief,
            cache_limit=cache_limit,
        )
    except textcache.CacheError as e:
        raise UsageError(str(e)) from None
    # the saved fingerprint names every file: checked, then let go (a text of 100,000
    # files: ~30 MB of Python objects held for the run)
    saved_fingerprint = run.saved_config.pop("data_fingerprint", None) if run.resume_from else None
    changed = saved_fingerprint and corpus.changes(saved_fingerprint, text.fingerprint)
    if changed:
        raise UsageError(
            f"the text of run {run.name} has changed ({changed}): resume it on the text "
            f"it was trained on, or train on this text in a new run with --init-from {run.name}"
        )
    return text


def text_facts(text, total_steps):
    """What every worker of a run must read alike (Distribution.check_same): the
    text's files by content (not by path: each worker has its own copy), the
    alphabet, and the lengths of the text and of the run."""
    contents = {k: [[size, sha] for _, size, sha in files] for k, files in text.fingerprint.items()}
    return {
        "files": json.dumps(contents, sort_keys=True),
        "alphabet": text.alphabet.chars,
        "lengths": f"{len(text.train)} {len(text.valid)} {total_steps}",
    }


def run_length(config, text):
    """(batches per epoch, the run's steps): --epochs of the text, or --max-steps if
    fewer; CorpusError if the text does not fill one batch."""
    batches = txtutils.batches_per_epoch(len(text.train), config["batch_size"], config["seqlen"])
    total_steps = config["epochs"] * batches
    if config["max_steps"]:
        total_steps = min(total_steps, config["max_steps"])
    return batches, total_steps


def make_model(config, dist, symbol_counts):
    """The model and its optimizer, with their variables made (on every replica); the
    logits' bias as --output-bias says, from how often each symbol occurs in the
    training text (symbol_counts: [ALPHASIZE])."""
    if config["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    mixed_precision = config["mixed_precision"]
    if mixed_precision == "auto":
        mixed_precision = hardware.has_bfloat16()
    elif mixed_precision and not hardware.has_bfloat16() and not hardware.on_gpu():
        cli.warn(
            "warning: this CPU has no bfloat16 instructions (AVX512-BF16 or AMX): "
            "--mixed-precision will train slower than without"
        )
    keras.utils.set_random_seed(config["seed"])
    with dist.scope():
        model = build_model(config, mixed_precision=mixed_precision)
        if config["output_bias"] == "frequencies":
            model.logits_layer.bias.assign(log_frequencies(symbol_counts))
        optimizer = keras.optimizers.Adam(  # (clipping: in the step)
            0.0,  # each step's is set before it (learning_rate_at)
            weight_decay=config["weight_decay"] or None,
        )
        optimizer.exclude_from_weight_decay(var_names=["bias"])  # the logits' frequencies stay
        optimizer.build(model.trainable_variables)  # Keras restores its slots only once built
    return model, optimizer


def log_frequencies(counts):
    """The log of each symbol's share of a text (each count one more, Laplace's rule: a
    symbol the text lacks is rare, not impossible): the logits of the text's symbol
    frequencies, [ALPHASIZE]."""
    counts = np.asarray(counts, np.float64) + 1
    return np.log(counts / counts.sum()).astype(np.float32)


# ---------------------------------------------------------------------------
# The training step


def learning_rate_at(step, progress, config, run_steps=None):
    """The learning rate of a step: a linear warm-up over the first config["warmup"]
    steps or the first warmup_share of the run, whichever ends sooner, then constant
    or a cosine from the peak down to min_lr x the peak at progress 1 (the fraction
    of the run done: of its steps, or of its time limit). The peak: config's, or for
    "auto" settings.auto_learning_rate's for a run of run_steps steps."""
    peak, warmup = config["learning_rate"], config["warmup"]
    if peak == "auto":
        peak = settings.auto_learning_rate(run_steps)
    warm = max((step + 1) / warmup, progress / config["warmup_share"]) if step < warmup else 1
    if warm < 1:
        return peak * warm
    if config["schedule"] == "constant":
        return peak
    low = peak * config["min_lr"]
    return low + (peak - low) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_train_step(model, optimizer, config, dist=None):
    """The compiled training step: (x, y, state, step, dropout) -> (loss, accuracy, new
    state); dropout, a Python bool, turns dropout on or off (one trace each).

    Under a tf.distribute strategy, x, y and state are per-replica values (each
    replica its own rows of the batch, see Distribution.split) and so is the new
    state; loss and accuracy are averaged over all of them. The step computes what
    one process would: the same dropout masks, the gradients of the whole batch's
    mean loss (summed over replicas), clipped to the global norm after summing.

    float16 (--mixed-precision on a GPU) scales the loss dynamically (LOSS_SCALE):
    a step whose gradients overflow is skipped, its weights left as they were."""
    dist = dist or Distribution()
    seed, clip_norm, zero_every = config["seed"], config["clip_norm"], config["zero_state_every"]
    scaler = None
    if model.train_dtype == tf.float16:  # float16's range: small gradients would round to 0
        with dist.scope():
            scaler = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=LOSS_SCALE)
            scaler.build(model.trainable_variables)  # its own two variables; Adam's are made

    def replica_step(x, y, state, step, dropout):
        # x, y: [BATCH/REPLICAS, SEQLEN]; state: [BATCH/REPLICAS, LAYERS*CELL]
        # The dropout masks depend on (seed, step) alone: a resumed run draws the same ones.
        dropout_seed = tf.stack([tf.constant(seed, tf.int64), step]) if dropout else None
        replica_rows = dist.rows_of_this_replica(config["batch_size"])
        if zero_every:  # rows (of the whole batch) r with (r + step) % N == 0 start afresh
            first = 0 if replica_rows is None else tf.cast(replica_rows[0], tf.int64)
            rows = first + tf.range(tf.shape(x, out_type=tf.int64)[0])  # [BATCH/REPLICAS]
            fresh = (rows + step) % zero_every == 0
            state = tf.where(fresh[:, None], tf.zeros_like(state), state)
        with tf.GradientTape() as tape:
            logits, new_state = model(
                x, state, training=True, dropout_seed=dropout_seed, replica_rows=replica_rows
            )
            loss, accuracy = loss_and_accuracy(logits, y)
            share = loss / dist.replicas  # of the whole batch's mean loss
            share = share if scaler is None else scaler.scale_loss(share)
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(share, model.trainable_variables)]
        if scaler is None:
            grads = dist.clip(grads, clip_norm)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss, accuracy, new_state
        # Clipped unscaled (an overflow stays inf or NaN through clipping), then scaled
        # back for the scaler, which skips the step if any is not finite, else unscales
        # and applies them: exactly, the scale being a power of 2.
        scale = scaler.dynamic_scale
        grads = [g * scale for g in dist.clip([g / scale for g in grads], clip_norm)]
        scaler.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss, accuracy, new_state

    return dist.compile(replica_step)


# ---------------------------------------------------------------------------
# Validation and samples


def valid_per_call(alphasize):
    """Characters of each validation row per compiled call (see VALID_PER_CALL)."""
    return memory.chars_per_call(
        VALID_LOGITS, txtutils.VALID_MAX_ROWS, alphasize, most=VALID_PER_CALL
    )


def validate(model, text, log, step):
    """Loss and accuracy on the validation rows, each from a zero state, no dropout,
    on the console and in the log; returns the loss."""
    x, y = text.valid_x, text.valid_y  # [ROWS, VALID_SEQLEN], ROWS <= VALID_MAX_ROWS
    n = valid_per_call(model.alphasize)
    pieces = ((x[:, j : j + n], y[:, j : j + n]) for j in range(0, x.shape[1], n))
    loss, accuracy, _ = mean_loss_and_accuracy(model, pieces)
    print(f"validation: loss {loss:.3f}  acc {accuracy:.3f}", flush=True)
    log.scalar("validation", "loss", loss, step, log.LOSS)
    log.scalar("validation", "accuracy", accuracy, step, log.ACCURACY)
    return float(loss)


def sample(sampler, alphabet, log, step, seed):
    """A sample of the model's text, after a line feed, on the console and in the log."""
    sampler.start([alphabet.encode("\n")], seed=seed + step)
    text = alphabet.decode(sampler.next(SAMPLE_LENGTH)[0])
    print(f"---- sample at step {step} ----\n{text}\n----", flush=True)
    log.text("training", "sample", text, step)
