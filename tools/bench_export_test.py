"""bench_export.py (make bench-export) on the small checkpoint of testdata/: it runs,
reports every figure, and the held-out losses of the three ways agree."""

import json
import os

import pytest

from conftest import HERE
from tools import bench_export

OLD = os.path.join(HERE, "tests", "testdata", "2026-11-checkpoint")


def test_bench_export_reports_sizes_speeds_and_agreeing_losses(tmp_path, capsys):
    out = tmp_path / "export"
    run = os.path.join(OLD, "runs", "v1")
    bench_export.main([run, os.path.join(OLD, "corpus.txt"), str(out), "500"])
    printed = capsys.readouterr().out
    figures = json.loads(printed[printed.index("{") :])
    assert figures["sizes"]["step.tflite"] == os.path.getsize(out / "step.tflite")
    assert 0 < figures["sizes"]["step_int8.tflite"] < figures["sizes"]["step.tflite"]
    speeds = {**figures["generation_chars_per_s"], **figures["litert_chars_per_s"]}
    assert len(speeds) == 8 and all(v > 0 for v in speeds.values()), speeds
    held_out = figures["held_out"]
    assert held_out["characters"] == 499
    saved = held_out["SavedModel score, nats/char"]
    assert abs(held_out["LiteRT float32, nats/char"] - saved) < 1e-4, held_out
    assert abs(held_out["LiteRT int8, nats/char"] - saved) < 0.05, held_out
    # the same folder again: refused before anything is written over that export
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(SystemExit, match="exists and is not empty: name a new folder"):
        bench_export.main([run, os.path.join(OLD, "corpus.txt"), str(out), "500"])
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
