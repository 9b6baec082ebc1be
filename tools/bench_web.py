"""The web page's figures (docs/deploy.md), in one process: a model's page written
(webpage.write, as rnn_export.py writes OUT/web/), served by http.server and opened in
Debian's chromium; its characters per second (WebAssembly, one stream, the page's own
figure over a whole generation), float32 and int8, beside rnn_play.py's one-stream speed
on the same model (generate.Generator); and what a visit downloads.

    python -m tools.bench_web [RUN_OR_CHECKPOINT] [--chars N] [--rounds R]
    make bench-web                     # an untrained model of the default shape
    make bench-web ARGS="shakespeare"  # a run's newest checkpoint

Speed does not depend on the weights, so without a checkpoint an untrained model of
rnn_train.py's default shape (3 x 512 GRU, the talk's 98 symbols) is measured. Each
round times each of the three once, in turn, so that all see the same machine load;
medians of the rounds. The page samples with its defaults (top-n 2 per 98 symbols)
from a line feed; so does rnn_play.py's path here.
"""

from charrnn import tf_quiet  # noqa: F401, I001  (first: quiets TensorFlow's logging before it loads)

import argparse
import json
import os
import platform
import tempfile

import numpy as np
from playwright.sync_api import sync_playwright

import txtutils
from charrnn import cli, ckpt, litertjs, memory, runs, settings, webpage
from charrnn.hardware import cpu_name
from charrnn.model import build_model
from tools import browser
from tools.timing import generation_run, median_time

DEFAULT = {  # rnn_train.py's model, the talk's alphabet
    "alphasize": txtutils.ALPHASIZE,
    "alphabet": txtutils.ALPHABET,
    **{k: settings.DEFAULTS[k] for k in ("cell_size", "layers", "dropout")},
}
WAIT_MS = 600_000


def model_of(what):
    """(model, alphabet, what the page says of it) of a checkpoint, or of an untrained
    model of the default shape when what is None."""
    if what is None:
        model = build_model(DEFAULT)
        about = {"run": "untrained", "checkpoint": "none", "step": None}
        return model, DEFAULT["alphabet"], {**about, "parameters": memory.parameters(DEFAULT)}
    prefix = runs.find_checkpoint(what, "checkpoints", print)
    model, config = runs.load_model(prefix)
    return model, ckpt.alphabet_of(config).chars, webpage.about(prefix, config)


class Page:
    """The page opened with one model, generating chars characters at each Generate; the
    files it asked its server for."""

    def __init__(self, chromium, url, model, chars):
        self.page = chromium.new_page()
        self.asked = []
        self.page.on("request", lambda r: self.asked.append(r.url.removeprefix(url)))
        query = f"length={chars}&seed=0&model={model}&autostart=1"
        self.page.goto(f"{url}index.html?{query}")
        self.wait(1)  # the first generation: loading, compiling, warming up

    def wait(self, finished):
        self.page.wait_for_selector(
            f'#text[data-finished="{finished}"][data-state=done]', state="attached", timeout=WAIT_MS
        )

    def speed(self, round_):
        """One more generation of the same settings; its characters per second."""
        self.page.click("#generate")
        self.wait(round_ + 2)
        return float(self.page.get_attribute("#speed", "data-chars-per-second"))


def measure(model, web, chars, rounds):
    """{name: characters per second} of rnn_play.py's path and of the page's two models,
    medians of rounds taken in turn, and {model: bytes a visit downloads}."""
    play, played = generation_run(model, 1, chars)
    speeds = {"rnn_play.py (Generator), 1 stream": []}
    with browser.serving(web) as url, sync_playwright() as playwright:
        chromium = browser.launch(playwright)
        with open(os.path.join(web, "model.json"), encoding="utf-8") as f:
            offered = list(json.load(f)["models"])
        pages = {m: Page(chromium, url, m, chars) for m in offered}
        downloads = {
            m: sum(
                os.path.getsize(os.path.join(web, f.split("?")[0] or "index.html")) for f in p.asked
            )
            for m, p in pages.items()
        }
        for round_ in range(rounds):
            speeds["rnn_play.py (Generator), 1 stream"].append(played / median_time(play, 1))
            for m, page in pages.items():
                speeds.setdefault(f"page, LiteRT.js WebAssembly, {m}", []).append(
                    page.speed(round_)
                )
        chromium.close()
    return {name: float(np.median(s)) for name, s in speeds.items()}, downloads


def main(argv=None):  # a measuring tool: bad arguments may end in a traceback
    parser = argparse.ArgumentParser(prog="bench_web.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?", help="a run or checkpoint (default: untrained)")
    parser.add_argument(
        "--chars", type=cli.positive_int, default=2000, help="characters per generation"
    )
    parser.add_argument(
        "--rounds", type=cli.positive_int, default=3, help="timings of each, taken in turn"
    )
    args = parser.parse_args(argv)
    model, alphabet, about = model_of(args.checkpoint)
    with tempfile.TemporaryDirectory(prefix="bench_web.") as tmp:
        web = os.path.join(tmp, "web")
        webpage.write(model, alphabet, about, web, litertjs.fetch())
        speeds, downloads = measure(model, web, args.chars, args.rounds)
        with open(os.path.join(web, "model.json"), encoding="utf-8") as f:
            models = json.load(f)["models"]
    figures = {
        "cpu": cpu_name(),
        "machine": platform.machine(),
        "model": f"{model.layers_count} x {model.cell_size} GRU, {len(alphabet)} symbols",
        "about": about,
        "chars_per_s": speeds,
        "download_bytes": downloads,
        "model_bytes": {m: v["bytes"] for m, v in models.items()},
        "int8_cost": models.get("int8", {}).get("cost"),
    }
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
