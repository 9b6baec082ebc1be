"""gpu_check.py: it runs here, without a GPU, and its checks can fail - including the
cuDNN check, traced here as on a GPU (Keras told a GPU is there; nothing runs on it)."""

import importlib

import numpy as np
import pytest

from conftest import run_cli
from tools import gpu_check

# the module, not the function of the same name that its package exports
keras_rnn = importlib.import_module("keras.src.backend.tensorflow.rnn")


def test_gpu_check_runs_here_and_says_there_is_no_gpu():
    result = run_cli("tools/gpu_check.py", "--quick")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "GPU: none found" in out
    for dtype in ("float32", "bfloat16"):
        assert f"[ok     ] gradients, {dtype}:" in out
        assert f"[ok     ] training, {dtype}:" in out
    for check in ("inference graphs", "generation", "scoring"):
        assert f"[ok     ] {check}:" in out
    assert "[skipped] cuDNN: no GPU" in out
    assert "training step (median of 3): float32 " in out and "; bfloat16 " in out
    assert out.rstrip().endswith(
        "verdict: PASS - every check that could run passed (no GPU: checked on the CPU only)"
    )
    assert "Traceback" not in result.stderr


@pytest.fixture
def as_on_a_gpu(monkeypatch):
    """Keras builds its GRU as on a GPU: through cuDNN's op, which can be traced here
    (not run: the CPU has no kernel for it)."""
    monkeypatch.setattr(keras_rnn, "_is_gpu_available", lambda: True)


def keras_trainer():
    """A Trainer through Keras' layers, which can be traced here but not run (cuDNN)."""
    _, layers = gpu_check.twins(gpu_check.QUICK, mixed_precision=False)
    return gpu_check.Trainer(layers, gpu_check.QUICK, gpu_check.practice_text(2000))


def test_the_cudnn_check_finds_cudnn_in_the_training_step(as_on_a_gpu, capsys):
    report = gpu_check.Report()
    gpu_check.check_cudnn(report, keras_trainer(), gpu=True)
    assert report.failed == []
    out = capsys.readouterr().out
    assert "[ok     ] cuDNN: the training step runs Keras' GRU through " in out
    assert "CudnnRNNBackpropV3, CudnnRNNV3" in out  # forward and backward


def test_the_cudnn_check_fails_when_keras_falls_back_to_its_loop(as_on_a_gpu, capsys):
    trainer = keras_trainer()
    for gru in trainer.model.grus:
        gru.use_cudnn = False  # what a setting cuDNN cannot run amounts to
    report = gpu_check.Report()
    gpu_check.check_cudnn(report, trainer, gpu=True)
    assert report.failed == ["cuDNN"]
    assert "[FAIL   ] cuDNN: no cuDNN op in the training step" in capsys.readouterr().out


def test_generation_and_scoring_run_without_cudnn_as_on_a_gpu(as_on_a_gpu, capsys):
    """Generation's loop is XLA-compiled, which cuDNN's op cannot be: with Keras' GRU
    set for a GPU, generation and scoring still trace, compile and run (the fused cell)."""
    fused, layers = gpu_check.twins(gpu_check.QUICK, mixed_precision=False)
    gpu_check.Trainer(fused, gpu_check.QUICK, gpu_check.practice_text(2000)).train(5)
    for a, b in zip(fused.weights, layers.weights, strict=True):
        b.assign(a)  # trained weights: scoring must beat a uniform guess
    report = gpu_check.Report()
    gpu_check.check_inference(report, layers, gpu_check.practice_text(1500, seed=1))
    out = capsys.readouterr().out
    assert report.failed == [], out
    assert "[ok     ] inference graphs: generation and scoring run the fused cell" in out


def test_the_comparisons_can_fail(monkeypatch, capsys):
    """No difference at all allowed: float32's rounding is enough to fail."""
    monkeypatch.setitem(gpu_check.GRADIENT_LIMITS, "float32", 0.0)
    monkeypatch.setitem(gpu_check.LIMITS, "float32", 0.0)
    report = gpu_check.Report()
    text = gpu_check.practice_text(2000)
    trainers = gpu_check.compare_paths(report, gpu_check.QUICK, 2, False, text)
    assert report.failed == ["gradients, float32", "training, float32"]
    assert len(trainers) == 2 and not np.array_equal(trainers[0].weights(), trainers[1].weights())
    out = capsys.readouterr().out
    assert "[FAIL   ] gradients, float32: one batch" in out
    assert "[FAIL   ] training, float32: 2 steps" in out


def test_a_failed_check_gives_the_fail_verdict_and_status_1(monkeypatch, capsys):
    def broken(report, *args):
        report.check("scoring", False, "infinite loss")
        return {}

    monkeypatch.setattr(gpu_check, "run_checks", broken)
    assert gpu_check.main(["--quick"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL   ] scoring: infinite loss" in out
    assert "verdict: FAIL - scoring" in out


def test_a_bad_flag_is_one_line_and_status_2(capsys):
    with pytest.raises(SystemExit) as stop:
        gpu_check.main(["--steps", "0"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("gpu_check.py: error: argument --steps: must be a whole number from 1 to")
    assert len(err.strip().splitlines()) == 1
