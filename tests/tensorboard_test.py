"""A real TensorBoard server, on 127.0.0.1, serves the tiny run's curves; the README's
screenshot tool draws them in Debian's chromium (skipped without it, failed on CI)."""

import os
import struct
import subprocess
import sys
import time
import urllib.parse

import pytest

from charrnn import cli
from conftest import run_cli
from tools import browser
from tools.screenshot_tensorboard import get_json


@pytest.fixture
def tensorboard(tiny_run):
    [port] = cli.free_ports(1)
    exe = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    proc = subprocess.Popen(
        [
            exe,
            "--logdir",
            str(tiny_run["log"]),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--reload_interval",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


def test_tensorboard_serves_training_and_validation_scalars(tensorboard):
    deadline = time.monotonic() + 90
    runs = []
    while time.monotonic() < deadline:
        try:
            runs = get_json(tensorboard + "/data/runs")
            if {"tiny/training", "tiny/validation"} <= set(runs):
                break
        except OSError:
            pass  # not listening yet
        time.sleep(0.5)
    assert {"tiny/training", "tiny/validation"} <= set(runs), runs

    def scalars(run, tag):
        query = urllib.parse.urlencode({"run": run, "tag": tag})
        return get_json(f"{tensorboard}/data/plugin/scalars/scalars?{query}")

    training = scalars("tiny/training", "loss")
    validation = scalars("tiny/validation", "loss")
    assert [step for _, step, _ in training] == list(range(10, 121, 10))
    assert [step for _, step, _ in validation] == [40, 80, 120]
    assert training[-1][2] < training[0][2]
    tags = get_json(f"{tensorboard}/data/plugin/scalars/tags")
    assert {"loss", "accuracy"} <= set(tags["tiny/training"]) & set(tags["tiny/validation"])


def test_the_screenshot_tool_draws_the_curves(tiny_run, tmp_path):
    try:
        browser.chromium()
    except browser.NoBrowser as e:
        if os.environ.get("CI"):
            pytest.fail(f"{e}: .ci/run installs it")
        pytest.skip(f"{e}: the screenshot is not tested")
    out = tmp_path / "curves.png"
    logs = str(tiny_run["log"] / "tiny")
    result = run_cli("tools/screenshot_tensorboard.py", logs, str(out), "--height", "640")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote {out}\n"
    png = out.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", png[16:24]) == (1600, 640)  # the IHDR chunk: width, height
