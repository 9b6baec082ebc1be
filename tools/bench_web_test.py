"""tools/bench_web.py on the tiny run: the page's speed, float32 and int8, beside
rnn_play.py's, and what a visit downloads (skipped without chromium, failed on CI)."""

import json
import os

import pytest

from conftest import run_cli
from tools import browser


def test_bench_web_times_the_page_and_rnn_play(tiny_run):
    try:
        browser.chromium()
    except browser.NoBrowser as e:
        if os.environ.get("CI"):
            pytest.fail(f"{e}: .ci/run installs it")
        pytest.skip(f"{e}: the page is not timed")
    prefix = str(tiny_run["checkpoints"] / "tiny" / "ckpt-120")
    result = run_cli("tools/bench_web.py", prefix, "--chars", "300", "--rounds", "1")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["model"] == "2 x 32 GRU, 98 symbols"
    speeds = figures["chars_per_s"]
    assert set(speeds) == {
        "rnn_play.py (Generator), 1 stream",
        "page, LiteRT.js WebAssembly, float32",
        "page, LiteRT.js WebAssembly, int8",
    }
    assert all(s > 0 for s in speeds.values())
    runtime = 9_000_000  # the WebAssembly build alone is 9.4 MB
    for model, size in figures["model_bytes"].items():
        assert runtime + size < figures["download_bytes"][model] < runtime + size + 10**6
