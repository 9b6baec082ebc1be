"""rnn_export.py: the tiny run exported through the real CLI, then loaded by a Python
process that holds no file of this repository (TensorFlow and LiteRT alone), which
checks what a user of the export would see: generate, score and step against
rnn_play.py (bytes that are not UTF-8 and a batch of primes included), LiteRT's step
against the SavedModel's, no Select TF op; a model of a longer, non-ASCII alphabet; the
web page's folder and its step for one row (the page itself in a browser: web_test.py);
the graph's UTF-8 decoding against rnn_play.py's, byte for byte; the characters per
score call against the alphabet's size; the graph's loops around XLA-compiled functions,
one iteration at a time; and bad input, refused in one line with nothing written."""

import concurrent.futures
import glob
import itertools
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from tensorflow.core.protobuf import saved_model_pb2

import rnn_export
import txtutils
from charrnn import ckpt, export, litertjs, runs, webpage
from charrnn.generate import (
    GENERATE_PER_CALL,
    SCORE_PER_CALL,
    Generator,
    Scorer,
    score_per_call,
)
from charrnn.model import build_model
from conftest import HERE, cache_env, run_clis

PRIME = "ROMEO:"
LENGTH = 300  # more than one of rnn_play.py's chunks (256), so the second one counts
# (seed, top_n, temperature): a cut to the likeliest, and the whole alphabet (the two
# branches of the sampling), neither at a default (rnn_play.py's: top-n 2, temperature
# 1); the first through rnn_play.py itself, the second through its Generator here (one
# program fewer to start)
SETTINGS = [(7, 3, 0.8), (3, 0, 1.3)]
# primes of different lengths in one call, the first twice, and their (seed, top_n,
# temperature); the first is also generated alone
BATCH = ["R", "JULIET: the moon", "NURSE: the sun sees", "R"]
BATCH_SETTINGS = (5, 2, 1.0)
# bytes that are not UTF-8, each one unknown character for rnn_play.py, which reads
# them with surrogateescape, however a decoder groups them: two bytes that start
# nothing, a 3-byte and a 4-byte character cut short, an encoded surrogate, a lone
# first byte before CRLF
BROKEN = [b"\xff\xfe", b"\xe2\x82", b"\xf0\x9f\x98", b"\xed\xa0\x80", b"\xe2\r\n"]
BROKEN_BYTES = 2 + 2 + 3 + 3 + 1
BROKEN_PRIME = b"RO\xff\xfeMEO\xe2\x82:\xf0\x9f\x98"
# 98 + a few Cyrillic letters and a character beyond the BMP (4 UTF-8 bytes)
CYRILLIC = "абвгдежз"
WIDE = "𝄞"

# generate's settings that it refuses, (length, top_n, temperature), and the regular
# expression of what it says of each: the setting, what it must be, the value it got
REFUSED = {
    "length -1": (-1, 2, 1.0, r"\[length must be 0 or more\.\s*\] .*\[-1\]"),
    "top_n -1": (10, -1, 1.0, r"\[top_n must be 0 or more\.\s*\] .*\[-1\]"),
    "temperature 0": (10, 2, 0.0, r"\[temperature must be a number above 0, got\] \[0\]"),
    "temperature -1": (10, 2, -1.0, r"\[temperature must be a number above 0, got\] \[-1\]"),
    "temperature nan": (10, 2, math.nan, r"\[temperature must be a number above 0, got\] \[nan\]"),
    "temperature inf": (10, 2, math.inf, r"\[temperature must be a number above 0, got\] \[inf\]"),
}

# Run by a separate Python process whose cwd and path hold no file of this repository:
# what a user of the export has. argv[1]: JSON of what to run; prints JSON results.
LOADER = r"""
import json, os, sys
import numpy as np
import tensorflow as tf
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

job = json.loads(sys.argv[1])


def utf8(texts):
    # JSON carries bytes that are not UTF-8 as lone surrogates (surrogateescape)
    return tf.constant([t.encode("utf-8", "surrogateescape") for t in texts], tf.string)


def generate(model, primes, length, top_n, temperature, seed):
    out = model.signatures["generate"](
        prime=utf8(primes),
        length=tf.constant(length, tf.int32),
        temperature=tf.constant(temperature, tf.float32),
        top_n=tf.constant(top_n, tf.int32),
        seed=tf.constant(seed, tf.int64),
    )["text"]
    return [t.decode("utf-8") for t in out.numpy()]


def refusal(model, call):
    # the lines of generate's error that say what is wrong with its settings, or None
    try:
        generate(model, *call)
    except tf.errors.InvalidArgumentError as e:
        return [line for line in e.message.splitlines() if "assertion failed" in line]
    return None


def score(model, texts):
    out = model.signatures["score"](text=utf8(texts))
    return out["bits_per_char"].numpy().tolist(), out["chars"].numpy().tolist()


def litert_ops(path):
    # the operator codes of the flatbuffer: a Select TF op is a custom op named Flex*
    with open(path, "rb") as f:
        model = schema.Model.GetRootAsModel(f.read(), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        custom = code.CustomCode()
        number = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        ops.append(custom.decode() if custom else names[number])
    return ops


def step_against_litert(model, path, codes):
    # the same codes into both, each its own state: logits compared at every step
    runner = Interpreter(model_path=path).get_signature_runner("step")
    size = model.signatures["step"].structured_input_signature[1]["state"].shape[1]
    state = lite_state = np.zeros([1, size], np.float32)
    worst, nats = 0.0, []
    for code, following in zip(codes, codes[1:] + [None]):
        x = np.array([code], np.int32)
        out = model.signatures["step"](codes=tf.constant(x), state=tf.constant(state))
        lite = runner(codes=x, state=lite_state)
        worst = max(worst, float(np.abs(out["logits"].numpy() - lite["logits"]).max()))
        state, lite_state = out["state"].numpy(), lite["state"]
        if following is not None:  # LiteRT's loss on the text
            logits = lite["logits"][0].astype(np.float64)
            top = logits.max()
            nats.append(np.log(np.exp(logits - top).sum()) + top - logits[following])
    return worst, float(np.mean(nats))


results = {}
for name, spec in job["exports"].items():
    model = tf.saved_model.load(spec["dir"] + "/saved_model")
    r = results[name] = {"signatures": sorted(model.signatures)}
    r["generated"] = {k: generate(model, *call) for k, call in spec["generate"].items()}
    r["refused"] = {k: refusal(model, call) for k, call in spec.get("refused", {}).items()}
    r["score"] = score(model, spec["score"])
    if "steps" in spec:
        r["litert"] = {
            f: step_against_litert(model, spec["dir"] + "/" + f, spec["steps"])
            for f in ("step.tflite", "step_int8.tflite")
        }
        r["ops"] = {f: litert_ops(spec["dir"] + "/" + f) for f in r["litert"]}
here = os.path.realpath(job["repository"])  # what this process must not have read
files = {name: getattr(m, "__file__", None) for name, m in sys.modules.items()}
mine = [n for n, f in files.items() if f and os.path.dirname(os.path.realpath(f)) == here]
results["repository_modules"] = mine + [p for p in sys.path if os.path.realpath(p) == here]
print(json.dumps(results))
"""


def codes_of(text, alphabet):
    """The codes of text in alphabet as rnn_play.py encodes its prime and a scored file:
    CRLF as LF, absent as 0, and bytes (text may be bytes) that are not UTF-8 read with
    surrogateescape, each one unknown character."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    return txtutils.Alphabet(alphabet).encode(text).astype(np.int32)


def as_json(raw):
    """Bytes as the loader reads them back from JSON: surrogateescape."""
    return raw.decode("utf-8", "surrogateescape")


def broken_text(text):
    """text's first 1,500 characters, BROKEN spliced in between."""
    cuts = [0, 100, 400, 700, 1000, 1300, 1500]
    parts = [text[a:b].encode("utf-8") for a, b in itertools.pairwise(cuts)]
    return b"".join(p + b for p, b in zip(parts, [*BROKEN, b""], strict=True))


def expected_bits(model, codes):
    """rnn_play.py --score's figure, bits per character, computed as it computes it."""
    scorer = Scorer(model)
    scorer.feed(codes)
    return scorer.finish()[0] / np.log(2)


def expected_text(model, alphabet, prime, length, seed, topn=0, temperature=1.0):
    """What rnn_play.py prints after the prime, generated as it generates it."""
    generator = Generator(model, topn=topn, temperature=temperature)
    generator.start([codes_of(prime, alphabet)], seed)
    return drawn(generator, alphabet, length)[0]


def expected_rows(model, alphabet, primes, length, seed, topn=0, temperature=1.0):
    """What generate promises for several primes in one call: row i, the state that its
    prime gives fed alone, then drawn as stream i of rnn_play.py --streams (Generator)."""
    generator = Generator(model, topn=topn, temperature=temperature)
    generator.start(np.zeros([len(primes), 1], np.int32), seed)  # the seed, as it sets it
    alone = [Generator(model) for _ in primes]
    for one, prime in zip(alone, primes, strict=True):
        one.start([codes_of(prime, alphabet)], seed)
    states = [one.state for one in alone]  # (the last call of each prime runs here)
    generator.logits = np.concatenate([one.logits for one in alone])  # [B, ALPHASIZE]
    generator.state = np.concatenate(states)  # [B, STATE]
    return drawn(generator, alphabet, length)


def drawn(generator, alphabet, length):
    """The next length characters of each stream, drawn in CHUNKs as rnn_play.py draws."""
    chunks = [generator.next(GENERATE_PER_CALL) for _ in range(-(-length // GENERATE_PER_CALL))]
    return ["".join(alphabet[c] for c in row[:length]) for row in np.concatenate(chunks, axis=1)]


def cyrillic_checkpoint(folder):
    """A checkpoint of an untrained model whose alphabet is the 98 symbols, Cyrillic
    letters and a character beyond the BMP, saved as rnn_train.py saves its config;
    the logits lean to the new symbols, so that its text is mostly made of them."""
    alphabet = txtutils.ALPHABET + CYRILLIC + WIDE
    config = {"alphasize": len(alphabet), "alphabet": alphabet, "cell_size": 16}
    config.update(layers=2, dropout=0.0)
    keras.utils.set_random_seed(3)
    model = build_model(config)
    bias = np.zeros(len(alphabet), np.float32)
    bias[txtutils.ALPHASIZE :] = 4.0
    model.logits_layer.bias.assign(bias)
    # as training saves (save_counter included): checkpoints/RUN/ckpt-1
    return ckpt.checkpoint_object(model, config).save(os.path.join(folder, "cyrillic", "ckpt"))


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """The tiny run exported by the CLI, rnn_play.py's text and score beside it, a
    Cyrillic model exported in this process, and what the loader saw of both."""
    root = tmp_path_factory.mktemp("export")
    checkpoints = str(tiny_run["checkpoints"])
    held_out = os.path.join(tiny_run["corpus"], "part2.txt")
    calls = [("rnn_export.py", "tiny", str(root / "tiny"), "--checkpoint-dir", checkpoints)]
    seed, topn, temperature = SETTINGS[0]
    flags = ["--seed", str(seed), "--topn", str(topn), "--temperature", str(temperature)]
    args = ["--prime", PRIME, "--length", str(LENGTH), *flags]
    calls.append(("rnn_play.py", "tiny", *args, "--checkpoint-dir", checkpoints))
    calls.append(("rnn_play.py", "tiny", "--score", held_out, "--checkpoint-dir", checkpoints))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        clis = pool.submit(run_clis, *calls)  # meanwhile, the Cyrillic model here
        prefix = cyrillic_checkpoint(str(root))
        assert rnn_export.main([prefix, str(root / "cyrillic-export")]) == 0
        exporting, *plays = clis.result()
    assert exporting.returncode == 0, exporting.stderr
    assert all(p.returncode == 0 for p in plays), [p.stderr for p in plays]
    model, config = runs.load_model(prefix)
    alphabet = config["alphabet"]

    tiny_model, tiny_config = runs.load_model(runs.find_checkpoint("tiny", checkpoints, print))
    tiny_alphabet = tiny_config["alphabet"]
    with open(held_out, encoding="utf-8") as f:
        text = f.read()
    cyrillic_text = "где\r\nбаба ж𝄞 " * 20 + "Qé"
    seed, topn, temperature = BATCH_SETTINGS
    tiny = {
        "dir": str(root / "tiny"),
        "generate": {
            **{
                f"prime {i}": [[PRIME], LENGTH, topn, temperature, seed]
                for i, (seed, topn, temperature) in enumerate(SETTINGS)
            },
            "batch": [BATCH, LENGTH, topn, temperature, seed],
            "first alone": [BATCH[:1], LENGTH, topn, temperature, seed],
            "broken": [[as_json(BROKEN_PRIME)], LENGTH, 0, 1.3, 3],  # SETTINGS[1]
            "nothing": [[PRIME], 0, 0, 1.0, 1],  # the least length and top_n there are
        },
        "refused": {
            name: [[PRIME], length, top_n, temperature, 1]
            for name, (length, top_n, temperature, _) in REFUSED.items()
        },
        "score": [text, "ab", "", as_json(broken_text(text))],
        "steps": codes_of(text[:300], tiny_alphabet).tolist(),
    }
    cyrillic = {
        "dir": str(root / "cyrillic-export"),
        "generate": {"prime": [["где ж"], 300, 0, 1.0, 11]},
        "score": [cyrillic_text],
    }
    job = {"repository": HERE, "exports": {"tiny": tiny, "cyrillic": cyrillic}}
    show = subprocess.Popen(  # meanwhile, as a user would look at the SavedModel
        [os.path.join(os.path.dirname(sys.executable), "saved_model_cli"), "show", "--all"]
        + ["--dir", str(root / "tiny" / "saved_model")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=cache_env(),
    )
    env = {k: v for k, v in cache_env().items() if k != "PYTHONPATH"}
    loaded = subprocess.run(
        [sys.executable, "-c", LOADER, json.dumps(job)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr
    return {
        "root": root,
        "plays": plays,
        "loaded": json.loads(loaded.stdout),
        "show": show.communicate(timeout=120)[0],
        "tiny": (tiny_model, tiny_alphabet),
        "text": text,
        "cyrillic": (model, alphabet, cyrillic_text),
    }


def test_the_export_holds_the_savedmodel_the_litert_models_and_the_alphabet(exported):
    tiny = exported["root"] / "tiny"
    assert sorted(os.listdir(tiny)) == [
        "model.json",
        "saved_model",
        "step.tflite",
        "step_int8.tflite",
        "web",
    ]
    with open(tiny / "model.json", encoding="utf-8") as f:
        info = json.load(f)
    assert info["alphabet"] == txtutils.ALPHABET
    assert (info["layers"], info["cell_size"], info["state_size"]) == (2, 32, 64)
    # int8 weights: about a quarter of the float32 bytes, and more than the rest
    assert os.path.getsize(tiny / "step_int8.tflite") < 0.6 * os.path.getsize(tiny / "step.tflite")
    assert exported["loaded"]["repository_modules"] == []


def test_the_web_folder_holds_the_page_its_runtime_and_the_step_for_one_row(exported):
    """OUT/web/ (its page in a browser: web_test.py): the page, the LiteRT.js files its
    import map and loader name, and the step with a fixed batch of 1 - LiteRT.js refuses
    a dynamic one - which computes what the export's step computes; model.json says what
    the page shows, the alphabet beyond the BMP included. The int8 model is offered
    where it is much smaller (the tiny run's 2 x 32), not where it is not (2 x 16)."""
    web = exported["root"] / "cyrillic-export" / "web"
    files = {os.path.relpath(os.path.join(d, f), web) for d, _, fs in os.walk(web) for f in fs}
    runtime = {f"litertjs/{f}" for p in litertjs.PACKAGES for f in p.files.values()}
    page = {"index.html", "charrnn.js", "style.css", "model.json"}
    assert files == page | runtime | {"step.tflite"}  # int8: not much smaller for 2 x 16
    html = (web / "index.html").read_text()
    for target in re.findall(r'"@litertjs/[\w-]+": "\./([^"]+)"', html):
        assert target in files
    model, alphabet, _ = exported["cyrillic"]
    info = json.loads((web / "model.json").read_text(encoding="utf-8"))
    assert info["alphabet"] == alphabet and WIDE in info["alphabet"]
    assert (info["run"], info["checkpoint"], info["step"]) == ("cyrillic", "ckpt-1", 1)
    assert info["parameters"] == sum(int(np.prod(w.shape)) for w in model.weights)
    assert info["defaults"] == {"length": 1000, "temperature": 1.0, "topn": 2}
    assert info["runtime"]["bytes"] == sum(
        os.path.getsize(web / "litertjs" / f) for f in litertjs.LOADED
    )
    assert list(info["models"]) == ["float32"]
    tiny = json.loads((exported["root"] / "tiny" / "web" / "model.json").read_text())
    cost = tiny["models"]["int8"]["cost"]  # the tiny run's: 2 x 32
    assert (
        tiny["models"]["int8"]["bytes"] <= webpage.INT8_SHARE * tiny["models"]["float32"]["bytes"]
    )
    assert cost["chars"] == 1000 and abs(cost["int8_nats"] - cost["float32_nats"]) < 0.05
    # each model's own loss (not one model's twice), below a uniform guess's
    assert cost["int8_nats"] != cost["float32_nats"]
    assert all(0 < cost[k] < math.log(tiny["alphasize"]) for k in ("int8_nats", "float32_nats"))
    codes = codes_of("где ж𝄞 Q", alphabet)
    fixed, dynamic = (steps_of(web / "step.tflite"), steps_of(web.parent / "step.tflite"))
    assert fixed["shapes"] == ([1], [1, model.state_size]) and dynamic["shapes"][0] == [-1]
    np.testing.assert_allclose(fixed["run"](codes), dynamic["run"](codes), atol=1e-6)


def steps_of(path):
    """The input shapes of a LiteRT step model, and a function that feeds it codes one at a
    time from a zero state and returns the logits of each [CODES, ALPHASIZE]."""
    runner = Interpreter(model_path=str(path)).get_signature_runner("step")
    inputs = runner.get_input_details()
    shapes = tuple(inputs[k]["shape_signature"].tolist() for k in ("codes", "state"))

    def run(codes):
        state = np.zeros([1, shapes[1][1]], np.float32)
        out = []
        for code in codes:
            result = runner(codes=np.array([code], np.int32), state=state)
            out.append(result["logits"][0])
            state = result["state"]
        return np.array(out)

    return {"shapes": shapes, "run": run}


def test_one_prime_generates_exactly_what_rnn_play_prints(exported):
    generated = exported["loaded"]["tiny"]["generated"]
    play = exported["plays"][0]
    assert play.stdout.startswith(PRIME) and play.stdout.endswith("\n")
    assert generated["prime 0"] == [play.stdout[len(PRIME) : -1]]
    model, alphabet = exported["tiny"]
    seed, topn, temperature = SETTINGS[1]
    want = expected_text(model, alphabet, PRIME, LENGTH, seed, topn, temperature)
    assert generated["prime 1"] == [want]


def test_each_row_of_primes_of_different_lengths_is_its_prime_as_stream_i(exported):
    """Row i: the state of its prime fed alone, drawn as stream i of rnn_play.py
    --streams (the promise of generate's docstring). So the first row is what its prime
    alone gives, and the same prime in two rows gives two independent texts."""
    generated = exported["loaded"]["tiny"]["generated"]
    texts = generated["batch"]
    model, alphabet = exported["tiny"]
    seed, topn, temperature = BATCH_SETTINGS
    assert texts == expected_rows(model, alphabet, BATCH, LENGTH, seed, topn, temperature)
    alone = expected_text(model, alphabet, BATCH[0], LENGTH, seed, topn, temperature)
    assert generated["first alone"] == [alone] and texts[0] == alone
    assert BATCH[3] == BATCH[0] and texts[3] != texts[0]
    assert len(texts) == 4 and all(len(t) == LENGTH for t in texts)
    # the tiny model has learnt its corpus: only its characters, and its words
    assert set("".join(texts)) <= set(exported["text"])
    assert all(re.search(r"\bthe\b", t) for t in texts)


def test_bytes_that_are_not_utf8_are_one_unknown_each_as_in_rnn_play(exported):
    """A prime and a scored text holding BROKEN: each byte that is not UTF-8 is one
    unknown character, as rnn_play.py reads them, not one per invalid sequence."""
    model, alphabet = exported["tiny"]
    loaded = exported["loaded"]["tiny"]
    prime = codes_of(BROKEN_PRIME, alphabet)
    assert np.count_nonzero(prime == txtutils.UNKNOWN) == 7  # \xff \xfe, \xe2 \x82, 3 bytes
    seed, topn, temperature = SETTINGS[1]
    want = expected_text(model, alphabet, BROKEN_PRIME, LENGTH, seed, topn, temperature)
    assert loaded["generated"]["broken"] == [want]
    raw = broken_text(exported["text"])
    codes = codes_of(raw, alphabet)
    clean = codes_of(exported["text"][:1500], alphabet)
    unknown = np.count_nonzero(codes == txtutils.UNKNOWN) - np.count_nonzero(clean == 0)
    assert unknown == BROKEN_BYTES and len(codes) == len(clean) + BROKEN_BYTES + 1  # CRLF's LF
    bits, chars = loaded["score"][0][-1], loaded["score"][1][-1]
    assert chars == len(codes) - 1
    assert bits == pytest.approx(expected_bits(model, codes), abs=1e-5)


def test_score_is_rnn_play_score(exported):
    (bits, short, empty, _), chars = exported["loaded"]["tiny"]["score"]
    text, (model, alphabet) = exported["text"], exported["tiny"]
    assert bits == pytest.approx(expected_bits(model, codes_of(text, alphabet)), abs=1e-5)
    printed = re.search(r"([\d.]+) bits/char", exported["plays"][-1].stdout)
    assert f"{bits:.3f}" == printed[1]
    assert chars[:3] == [len(text) - 1, 1, 0]
    assert short > 0 and np.isnan(empty)  # fewer than 2 characters: no figure


def test_generate_refuses_bad_settings_and_says_which(exported):
    """The SavedModel's generate checks what its caller may get wrong - a negative length
    or top_n, a temperature that is not a number above 0 (0 would divide the logits by
    zero) - and says which setting, what it must be and the value it got. A length and
    a top_n of 0 (every symbol) are settings: no text, no error."""
    loaded = exported["loaded"]["tiny"]
    assert loaded["generated"]["nothing"] == [""]
    assert set(loaded["refused"]) == set(REFUSED)
    for name, (*_, said) in REFUSED.items():
        lines = loaded["refused"][name]
        assert lines is not None, f"{name}: generated, not refused"
        assert len(lines) == 1 and re.fullmatch(f"assertion failed: {said}", lines[0]), lines


def test_saved_model_cli_lists_the_three_signatures(exported):
    shown = exported["show"]
    assert set(re.findall(r"signature_def\['(\w+)'\]", shown)) == {
        "__saved_model_init_op",
        "generate",
        "score",
        "step",
    }
    for name in ("prime", "length", "temperature", "top_n", "seed", "text", "codes", "state"):
        assert f"inputs['{name}']" in shown
    for name in ("text", "bits_per_char", "chars", "logits", "state"):
        assert f"outputs['{name}']" in shown
    assert "shape: (-1, 98)" in shown  # the logits: any batch, the alphabet
    assert "Cudnn" not in shown  # nothing that needs a GPU


def loops_around_xla(graph_def):
    """The While ops of a graph (its functions included) that are not themselves inside
    an XLA-compiled function and whose body calls one, however deep: [NodeDef]."""
    functions = {f.signature.name: f for f in graph_def.library.function}

    def compiled(f):
        return "_XlaMustCompile" in f.attr and f.attr["_XlaMustCompile"].b

    def called(node):  # the names of the functions node runs
        names = [node.op] if node.op in functions else []
        for value in node.attr.values():
            names += [value.func.name] if value.HasField("func") else []
            names += [f.name for f in value.list.func]
        return names

    def runs_xla(name, seen=()):
        if compiled(functions[name]):
            return True
        inner = [n for node in functions[name].node_def for n in called(node) if n not in seen]
        return any(runs_xla(n, (*seen, name)) for n in inner)

    nodes = [*graph_def.node]
    nodes += [n for f in functions.values() if not compiled(f) for n in f.node_def]
    whiles = [n for n in nodes if n.op in ("While", "StatelessWhile")]
    return [n for n in whiles if runs_xla(n.attr["body"].func.name)]


def test_no_loop_of_the_savedmodel_runs_its_xla_functions_two_at_a_time(exported):
    """Two iterations of a loop running one XLA-compiled function at once (score's loss
    of one call beside the next one's) crashed a process in TensorFlow 2.21 (SIGSEGV,
    found by a test of several score calls): every such loop runs one iteration at a
    time (export.ONE_AT_A_TIME)."""
    saved = saved_model_pb2.SavedModel()
    with open(exported["root"] / "tiny" / "saved_model" / "saved_model.pb", "rb") as f:
        saved.ParseFromString(f.read())
    # tf.scan's loops (a GRU layer's time steps) cannot overlap: each step needs the
    # state the one before made
    scan = re.compile(r"(^|/)scan(_\d+)?/while$")
    loops = [n for n in loops_around_xla(saved.meta_graphs[0].graph_def) if not scan.search(n.name)]
    assert len(loops) >= 3  # score's calls, generate's, and primes of several lengths
    # (a SavedModel leaves out attributes at their default, 10: absent reads as 0)
    assert [n.attr["parallel_iterations"].i for n in loops] == [1] * len(loops)


def test_litert_step_is_the_savedmodel_step_with_builtin_ops_only(exported):
    loaded = exported["loaded"]["tiny"]
    worst, nats = loaded["litert"]["step.tflite"]
    assert worst < 1e-5
    worst_int8, nats_int8 = loaded["litert"]["step_int8.tflite"]
    assert 0 < worst_int8 < 0.5  # int8 weights: close, not equal
    assert abs(nats_int8 - nats) < 0.05
    for ops in loaded["ops"].values():
        assert "FULLY_CONNECTED" in ops
        assert not [op for op in ops if op == "CUSTOM" or op.startswith("Flex")], ops


def test_a_non_ascii_alphabet_survives_the_export(exported):
    model, alphabet, text = exported["cyrillic"]
    loaded = exported["loaded"]["cyrillic"]
    assert loaded["signatures"] == ["generate", "score", "step"]
    [generated] = loaded["generated"]["prime"]
    assert generated == expected_text(model, alphabet, "где ж", 300, seed=11)
    assert set(CYRILLIC) <= set(generated) and WIDE in generated
    [bits], [chars] = loaded["score"]
    assert chars == len(text.replace("\r\n", "\n")) - 1
    assert bits == pytest.approx(expected_bits(model, codes_of(text, alphabet)), abs=1e-5)


# ---------------------------------------------------------------------------
# The graph's text and score calls, in this process (no export)


def small_export(alphabet):
    """Exported for an untrained model of alphabet, small enough to build in no time."""
    config = {"alphasize": len(alphabet), "alphabet": alphabet, "cell_size": 8}
    config.update(layers=1, dropout=0.0)
    keras.utils.set_random_seed(4)
    model = build_model(config)
    return model, export.Exported(model, alphabet)


def test_the_graph_reads_any_bytes_as_rnn_play_does():
    """Random bytes, and random pieces of valid and invalid UTF-8, encoded by the graph
    (eager and traced) and as rnn_play.py encodes a prime or a scored file: the same
    codes, a byte that is not UTF-8 one unknown however the decoder groups it."""
    alphabet = txtutils.ALPHABET + CYRILLIC + WIDE + "é€"
    _, module = small_export(alphabet)
    pieces = [b"a", b" ", b"\r", b"\n", b"\r\n", b"\x00", *(c.encode() for c in "é€г𝄞✓\ufffd")]
    pieces += [*BROKEN, b"\x80", b"\xbf", b"\xc0", b"\xe2", b"\xf0", b"\xf4\x90\x80\x80"]
    rng = np.random.default_rng(5)
    texts = [b"", BROKEN_PRIME, *BROKEN]
    for _ in range(300):
        n = rng.integers(13)
        if rng.random() < 0.3:  # any bytes at all
            texts.append(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        else:
            texts.append(b"".join(pieces[i] for i in rng.integers(0, len(pieces), n)))
    traced = tf.function(
        module.encode, input_signature=[tf.TensorSpec([None], tf.string)], autograph=False
    )
    want = [codes_of(t, alphabet).tolist() for t in texts]
    assert module.encode(tf.constant(texts)).to_list() == want
    assert traced(tf.constant(texts)).to_list() == want
    assert traced(tf.constant([], tf.string)).to_list() == []


def test_score_calls_shrink_with_the_alphabet():
    """The characters of one score call: rnn_play.py's chunk for the 98 symbols, and as
    many as keep the logits of a call at most that many floats for a longer alphabet."""
    floats = SCORE_PER_CALL * txtutils.ALPHASIZE
    assert export.score_cells_per_call(txtutils.ALPHASIZE) == SCORE_PER_CALL
    for alphasize in [99, 107, 150, 1000, 5000, floats - 1]:
        cells = export.score_cells_per_call(alphasize)
        assert cells * alphasize <= floats < (cells + 1) * alphasize, alphasize
    assert export.score_cells_per_call(floats + 1) == 1 == export.score_cells_per_call(10**9)


def test_a_long_alphabet_scores_in_several_calls_as_rnn_play_scores():
    """An alphabet of 98 + 3,000 symbols: 129 characters a call, 64 columns for each
    of two rows; texts of several calls score as rnn_play.py scores each alone."""
    alphabet = txtutils.ALPHABET + "".join(chr(0x4E00 + i) for i in range(3000))
    model, module = small_export(alphabet)
    assert module.score_cells == SCORE_PER_CALL * txtutils.ALPHASIZE // len(alphabet) == 129
    rng = np.random.default_rng(6)
    texts = ["".join(rng.choice(list(alphabet[1:]), n)) for n in (300, 170)]
    out = module.score(tf.constant([t.encode() for t in texts]))
    scores = zip(texts, out["bits_per_char"].numpy(), out["chars"].numpy(), strict=True)
    for text, bits, chars in scores:
        assert chars == len(codes_of(text, alphabet)) - 1
        assert bits == pytest.approx(expected_bits(model, codes_of(text, alphabet)), abs=1e-5)


def test_a_long_prime_is_fed_in_rnn_plays_calls():
    """A prime longer than one of rnn_play.py's calls (Generator.feed: 834 characters a
    call for one stream of a 20,098-symbol alphabet, 278 for three) goes through the
    model a call at a time as rnn_play.py feeds it - so a call's logits stay within
    rnn_play.py's budget however long the prime - and the text is rnn_play.py's: in
    one row, in rows of one prime, and in rows of primes of several lengths."""
    alphabet = txtutils.ALPHABET + "".join(chr(0x4E00 + i) for i in range(20_000))
    model, module = small_export(alphabet)
    assert (score_per_call(len(alphabet)), score_per_call(len(alphabet), 3)) == (834, 278)
    rng = np.random.default_rng(8)
    prime = "".join(rng.choice(list(alphabet[1:]), 2_000))
    seed, length = 12, 30
    # the calls (run eagerly, the loop runs in Python): their columns
    infer, calls = model.infer, []

    def counted(x, state):
        calls.append(tuple(x.shape))
        return infer(x, state)

    model.infer = counted
    module.feed(tf.constant(np.broadcast_to(codes_of(prime, alphabet), (3, len(prime)))))
    model.infer = infer
    assert calls == [(3, 278)] * 7 + [(3, 2_000 - 7 * 278)]

    def generated(primes):
        out = module.generate(
            prime=tf.constant([p.encode() for p in primes]),
            length=tf.constant(length),
            temperature=tf.constant(1.0),
            top_n=tf.constant(0),
            seed=tf.constant(seed, tf.int64),
        )
        return [t.decode() for t in out["text"].numpy()]

    assert generated([prime]) == [expected_text(model, alphabet, prime, length, seed)]
    streams = Generator(model)
    streams.start(np.broadcast_to(codes_of(prime, alphabet), (3, len(prime))), seed)
    assert generated([prime] * 3) == drawn(streams, alphabet, length)
    primes = [prime, prime[:900], prime[:100]]
    assert generated(primes) == expected_rows(model, alphabet, primes, length, seed)


# ---------------------------------------------------------------------------
# Bad input: one line, nothing written


def refused(capfd, argv):
    """main(argv)'s exit status and its stderr lines; nothing on stdout."""
    with pytest.raises(SystemExit) as e:
        rnn_export.main(argv)
    out, err = capfd.readouterr()
    assert out == ""
    return e.value.code, err.splitlines()


def test_bad_input_is_one_line_and_nothing_written(tiny_run, tmp_path, capfd):
    checkpoints = str(tiny_run["checkpoints"])
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_run["checkpoints"] / "tiny", damaged / "tiny")
    for prefix in runs.all_in(str(damaged / "tiny")):
        with open(prefix + ".data-00000-of-00001", "r+b") as f:
            f.truncate(100)
    out = str(tmp_path / "out")
    cases = [
        (["tiny", str(taken), "--checkpoint-dir", checkpoints], "taken exists and is not empty"),
        ([str(damaged / "tiny" / "ckpt-120"), out], "ckpt-120 is damaged"),
        (["tiny", out, "--checkpoint-dir", str(damaged)], "every checkpoint in"),
        (["nosuchrun", out, "--checkpoint-dir", checkpoints], "no run or checkpoint named"),
        (["tiny", "--checkpoint-dir", checkpoints], "the following arguments are required: OUT"),
        (["tiny", out, "--serve", "--no-web"], "there is no page to serve with --no-web"),
        (["tiny", out, "--serve", "--port", "65536"], "--port: must be from 1 to 65535"),
    ]
    for argv, expected in cases:
        code, lines = refused(capfd, argv)
        errors = [line for line in lines if not line.startswith("warning: ")]
        assert code == 2, (argv, lines)
        assert len(errors) == 1 and errors[0].startswith("rnn_export.py: error: "), lines
        assert expected in errors[0], (argv, errors)
    assert sorted(os.listdir(tmp_path)) == ["damaged", "taken"]  # no out, no temporary
    assert os.listdir(taken) == ["keep.txt"]


def test_a_port_in_use_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(rnn_export.ExportError) as e:
            rnn_export.serve(str(tmp_path), port)
    assert str(e.value).startswith(f"cannot serve on 127.0.0.1:{port} (")
    assert str(e.value).endswith("): choose another --port")


def test_a_full_disk_is_one_line_and_nothing_written(tiny_run, tmp_path):
    """TensorFlow's own writes fail with its errors, not OSError (simulated with a
    file-size limit, as a full disk refuses them): one line, exit 2, no folder left."""

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a dead process

    out = tmp_path / "out"
    argv = ["tiny", str(out), "--no-web", "--checkpoint-dir", str(tiny_run["checkpoints"])]
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "rnn_export.py"), *argv],
        preexec_fn=small_files,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"rnn_export.py: error: cannot write {out}: File too large\n"
    assert os.listdir(tmp_path) == []


def test_an_out_dir_that_links_to_an_empty_folder_gets_the_export(tiny_run, tmp_path):
    """OUT a link to an empty folder (on a bigger disk, say): the export is made beside
    that folder and renamed onto it (renaming onto the link failed, after the export),
    and the link leads to it."""
    target = tmp_path / "big" / "out"
    target.mkdir(parents=True)
    link = tmp_path / "out"
    link.symlink_to(target)
    argv = ["tiny", str(link), "--no-web", "--checkpoint-dir", str(tiny_run["checkpoints"])]
    assert rnn_export.main(argv) == 0
    assert link.is_symlink() and "saved_model" in os.listdir(link)
    assert os.listdir(tmp_path / "big") == ["out"]  # no work folder left beside it


def test_serve_reuses_an_export_of_the_same_weights_only(tiny_run, tmp_path, capfd):
    """--serve serves an export in place if it is of this checkpoint: the same run and
    checkpoint, and the same weights - not those of a run deleted and trained again to
    the same step (here another checkpoint of the tiny run, under the same name)."""
    newest, older = runs.all_in(str(tiny_run["checkpoints"] / "tiny"))[:2]
    again = tmp_path / "again" / "tiny"
    again.mkdir(parents=True)
    for path in glob.glob(glob.escape(older) + ".*"):  # the older weights, named as the newest
        shutil.copy(path, again / (os.path.basename(newest) + path[len(older) :]))
    about = webpage.about(newest, ckpt.read_config(newest))
    retrained = str(again / os.path.basename(newest))
    other = webpage.about(retrained, ckpt.read_config(retrained))
    assert (other["run"], other["checkpoint"]) == (about["run"], about["checkpoint"])
    web = tmp_path / "export" / "web"
    web.mkdir(parents=True)
    (web / "model.json").write_text(json.dumps(about))
    assert rnn_export.exported_already(str(tmp_path / "export"), about)
    assert not rnn_export.exported_already(str(tmp_path / "export"), other)
    # --serve of the retrained run: refused in one line, the export left as it was
    argv = [retrained, str(tmp_path / "export"), "--serve"]  # refused before any fetch
    code, lines = refused(capfd, argv)
    assert code == 2 and lines == [
        f"rnn_export.py: error: {tmp_path / 'export'} holds the export of another model (a run "
        "of that name trained again?): delete that folder, or name another OUT_DIR"
    ]
    assert json.loads((web / "model.json").read_text()) == about
    # an export made before model.json held the sha256 is known by its name alone
    (web / "model.json").write_text(json.dumps({k: about[k] for k in ("run", "checkpoint")}))
    assert rnn_export.exported_already(str(tmp_path / "export"), about)


def test_the_page_names_a_best_checkpoint_run_best_and_gives_its_step(
    tiny_run, tmp_path, monkeypatch
):
    """webpage.about, what model.json and the page say of a checkpoint: RUN:best - as a
    user names it - for checkpoints/RUN/best/ckpt-N, the one RUN:best finds, and RUN for
    checkpoints/RUN/ckpt-N, each with its checkpoint and step; named from the checkout
    (checkpoints/, the default, is a relative path) or from inside the folder."""
    newest = runs.all_in(str(tiny_run["checkpoints"] / "tiny"))[0]
    config = ckpt.read_config(newest)
    for folder, step in (("r/best", 40), ("r", 70)):  # the tiny run's weights, renamed
        (tmp_path / "ck" / folder).mkdir(parents=True, exist_ok=True)
        for path in glob.glob(glob.escape(newest) + ".*"):
            shutil.copy(path, tmp_path / "ck" / folder / f"ckpt-{step}{path[len(newest) :]}")
    monkeypatch.chdir(tmp_path)
    best = webpage.about(runs.find_checkpoint("r:best", "ck", print), config)
    assert (best["run"], best["checkpoint"], best["step"]) == ("r:best", "ckpt-40", 40)
    plain = webpage.about(runs.find_checkpoint("r", "ck", print), config)
    assert (plain["run"], plain["checkpoint"], plain["step"]) == ("r", "ckpt-70", 70)
    monkeypatch.chdir(tmp_path / "ck" / "r" / "best")
    assert webpage.about("ckpt-40", config) == best


def test_ctrl_c_while_exporting_is_one_line_and_leaves_nothing(
    tiny_run, tmp_path, monkeypatch, capfd
):
    """Ctrl-C while the model converts (in TensorFlow's export here): one line, the status
    of a Ctrl-C, and no OUT nor work folder left."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rnn_export, "export", interrupted)
    out = tmp_path / "out"
    argv = ["tiny", str(out), "--no-web", "--checkpoint-dir", str(tiny_run["checkpoints"])]
    assert rnn_export.main(argv) == 130
    # (the last line: TensorFlow, loaded in this process, logs its own before it)
    err = capfd.readouterr().err
    assert err.endswith("\n") and err.splitlines()[-1] == (
        "rnn_export.py: stopped (Ctrl-C); nothing written"
    )
    assert os.listdir(tmp_path) == []
