"""An export's web page, OUT/web/: a static folder that generates text from the model in
the browser, with LiteRT.js on WebAssembly, and loads nothing from any other host.

    index.html, charrnn.js, style.css   the page (its sources: charrnn/web/)
    model.json                          the alphabet, the sizes, what the page says
    step.tflite, step_int8.tflite       the step for a batch of 1, float32 and int8 (int8
                                        only where it is at most half the size)
    litertjs/                           the runtime (charrnn/litertjs.py)

The steps are the export's LiteRT models with a fixed batch of 1, since LiteRT.js
refuses a dynamic batch dimension. Any static file server serves the folder as it is.
"""

import hashlib
import json
import os
import shutil

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from charrnn import litertjs, memory
from charrnn.export import litert_steps, model_info
from charrnn.generate import default_topn
from charrnn.tf_quiet import quiet_stderr

SOURCES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
PAGE = ("index.html", "charrnn.js", "style.css")
LENGTH = 1000  # the page's default length: rnn_play.py's
# The int8 model is offered where its file is at most this share of the float32 one's:
# a tiny model's flatbuffer is mostly its graph, which int8 weights do not shrink.
INT8_SHARE = 0.5
COST_CHARS = 1000  # characters of the model's own text that the int8 cost is measured on


def write(model, alphabet, about, web_dir, runtime):
    """Write the page of model (a CharRNN) and alphabet into web_dir, a new folder.
    about: what the page says of the model (webpage.about: "run", "checkpoint",
    "index_sha256", "step", "parameters");
    runtime: the LiteRT.js tarballs (litertjs.fetch)."""
    os.makedirs(web_dir)
    for name in PAGE:
        shutil.copyfile(os.path.join(SOURCES, name), os.path.join(web_dir, name))
    litertjs.unpack(runtime, web_dir)
    litert_steps(model, web_dir, batch=1)
    files = {"float32": "step.tflite", "int8": "step_int8.tflite"}
    models = {
        m: {"file": f, "bytes": os.path.getsize(os.path.join(web_dir, f))} for m, f in files.items()
    }
    if models["int8"]["bytes"] <= INT8_SHARE * models["float32"]["bytes"]:
        paths = [os.path.join(web_dir, f) for f in files.values()]
        models["int8"]["cost"] = int8_cost(*paths)
    else:
        os.remove(os.path.join(web_dir, models.pop("int8")["file"]))
    info = {
        **model_info(model, alphabet),
        **about,
        "defaults": {"length": LENGTH, "temperature": 1.0, "topn": default_topn(len(alphabet))},
        # what a visit downloads besides model.json: the page, the runtime and one model
        "page_bytes": sum(os.path.getsize(os.path.join(web_dir, name)) for name in PAGE),
        "runtime": {"name": "LiteRT.js", "version": litertjs.VERSION, "bytes": loaded(web_dir)},
        "models": models,
    }
    with open(os.path.join(web_dir, "model.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, ensure_ascii=False, indent=1)
        f.write("\n")


def loaded(web_dir):
    """Bytes of the runtime a page downloads (its relaxed-SIMD build; the compat one,
    for a browser without relaxed SIMD, is the same within 0.5%)."""
    return sum(os.path.getsize(os.path.join(web_dir, "litertjs", f)) for f in litertjs.LOADED)


def about(prefix, config):
    """What the page says of the checkpoint at prefix (checkpoints/RUN/ckpt-N, or
    checkpoints/RUN/best/ckpt-N): its run, checkpoint, step and number of weights, and
    the sha256 of its .index, which tells its weights from another's. No path: a
    published page shows nothing of the machine it was made on."""
    run_dir, checkpoint = os.path.split(os.path.abspath(prefix))
    run = os.path.basename(run_dir)
    if run == "best":  # runs.BEST_DIR
        run = os.path.basename(os.path.dirname(run_dir)) + ":best"
    step = checkpoint.removeprefix("ckpt-")
    with open(prefix + ".index", "rb") as f:  # it holds a checksum of every weight
        index = hashlib.sha256(f.read()).hexdigest()
    return {
        "run": run,
        "checkpoint": checkpoint,
        # which weights: a run deleted and trained again to the same step differs here
        "index_sha256": index,
        "step": int(step) if step.isdigit() else None,
        "parameters": memory.parameters(config),
    }


def int8_cost(float32_file, int8_file, chars=COST_CHARS, seed=0):
    """What the int8 weights cost: the loss (nats per character) of both models on
    chars characters that the float32 one writes (rnn_play.py's default top-n, a fixed
    seed), each character predicted from those before it, as --score counts."""
    with quiet_stderr():  # LiteRT's note, at the first step, that it made an XNNPACK delegate
        steps = [
            Interpreter(model_path=f).get_signature_runner("step")
            for f in (float32_file, int8_file)
        ]
        float32, int8 = losses(steps, chars, np.random.default_rng(seed))
    return {"chars": chars, "float32_nats": round(float32, 5), "int8_nats": round(int8, 5)}


def losses(steps, chars, rng):
    """The mean loss of each LiteRT step runner on chars characters drawn from the first."""
    size = steps[0].get_input_details()["state"]["shape"][1]
    states = [np.zeros([1, size], np.float32) for _ in steps]
    code, nats = 97, np.zeros(len(steps))  # the first character fed: a line feed
    for _ in range(chars):
        logits = []
        for i, step in enumerate(steps):
            out = step(codes=np.array([code], np.int32), state=states[i])
            logits.append(out["logits"][0].astype(np.float64))
            states[i] = out["state"]
        top = np.argsort(-logits[0])[: default_topn(len(logits[0]))]
        p = np.exp(logits[0][top] - logits[0][top].max())
        code = int(rng.choice(top, p=p / p.sum()))
        for i, x in enumerate(logits):
            nats[i] += np.log(np.exp(x - x.max()).sum()) + x.max() - x[code]
    return nats / chars
