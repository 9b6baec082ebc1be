"""The real rnn_train.py CLI on a tiny model and a tiny corpus."""

import glob
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

import fetch_corpus
import rnn_train
import txtutils
from charrnn import ckpt, runs, settings, training
from charrnn.distribute import Distribution
from charrnn.model import build_model, mean_loss_and_accuracy
from conftest import (
    FIXED_SCHEDULE,
    HERE,
    TINY,
    cache_env,
    run_cli,
    run_clis,
    run_main,
    tiny_flags,
    where,
    without_cache_noise,
    write_corpus,
)
from txtutils_test import UNICODE_TEXTS, cjk_text, count_chars


def read_events(folder):
    """{tag: [(step, value), ...]} from the event files in folder, read with
    TensorBoard's own reader."""
    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    return {
        tag: [(e.step, make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
        for tag in acc.Tags()["tensors"]
    }


def progress(stdout):
    """[(step, loss)] from the progress lines."""
    return [
        (int(m[1]), float(m[2]))
        for m in re.finditer(r"^step +(\d+)/\d+ .* loss ([\d.]+) ", stdout, re.MULTILINE)
    ]


def tree_digest(*folders):
    """A hash of every file's path and bytes below the folders (but the run lock, which
    holds the pid of the last process that trained the run, and the text cache, .text,
    where what was read is kept for later runs)."""
    h = hashlib.sha256()
    for folder in folders:
        for root, _, files in sorted(os.walk(folder)):
            if ".text" in os.path.relpath(root, folder).split(os.sep):
                continue
            for name in sorted(set(files) - {"lock"}):
                path = os.path.join(root, name)
                h.update(path.encode())
                with open(path, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()


def train(*args, capsys):
    """rnn_train.py in this process (run_main): for tests of what it does, not of how
    its process starts, stops or dies."""
    return run_main(rnn_train.main, *args, capsys=capsys)


def test_loss_goes_down_and_checkpoints_appear(tiny_run):
    points = progress(tiny_run["result"].stdout)
    assert [s for s, _ in points] == list(range(10, 121, 10))
    first, last = points[0][1], points[-1][1]
    assert last < first - 1.0, points
    names = os.listdir(tiny_run["checkpoints"] / "tiny")
    assert {"ckpt-50.index", "ckpt-100.index", "ckpt-120.index"} <= set(names)
    assert "---- sample at step 60 ----" in tiny_run["result"].stdout


def test_event_files_hold_both_runs_under_the_same_tags(tiny_run):
    training = read_events(tiny_run["log"] / "tiny" / "training")
    validation = read_events(tiny_run["log"] / "tiny" / "validation")
    # the same tags in both runs, so TensorBoard overlays the curves
    assert {"loss", "accuracy"} <= set(training) & set(validation)
    assert [s for s, _ in training["loss"]] == list(range(10, 121, 10))
    assert [s for s, _ in validation["loss"]] == [40, 80, 120]
    assert validation["loss"][-1][1] < validation["loss"][0][1]
    assert all(0 <= float(v) <= 1 for _, v in training["accuracy"] + validation["accuracy"])
    # the logged training loss is the one on the console (averaged over 10 steps)
    console = progress(tiny_run["result"].stdout)
    assert [round(float(v), 3) for _, v in training["loss"]] == [loss for _, loss in console]
    samples = training["sample"]
    assert [s for s, _ in samples] == [60, 120]
    assert len(samples[-1][1].item().decode()) > 500


def test_the_programs_the_tests_start_share_an_xla_cache(tiny_run, xla_cache):
    """run_cli turns TensorFlow's persistent XLA cache on (for the suite's speed): the
    tiny run's compiled functions are in it, so a TensorFlow that ignored the flag
    would show here, not as a slow suite."""
    assert list(xla_cache.glob("xla_compile_cache__*")), os.listdir(xla_cache)


def test_resume_continues_at_the_right_step(tmp_path, capsys):
    corpus = write_corpus(str(tmp_path / "corpus"))
    first = train(
        *tiny_flags(tmp_path, corpus),
        "--run",
        "r",
        "--max-steps",
        "60",
        capsys=capsys,
    )
    assert first.returncode == 0, first.stderr
    # Resume names nothing but the new limit: the architecture comes from the checkpoint.
    second = train("--resume", "--max-steps", "100", *where(tmp_path), capsys=capsys)
    assert second.returncode == 0, second.stderr
    assert "resuming at step 60" in second.stdout
    assert [s for s, _ in progress(second.stdout)] == [70, 80, 90, 100]
    assert os.path.exists(tmp_path / "ck" / "r" / "ckpt-100.index")
    # The curves continue: every step logged once, in order, across both processes.
    steps = [s for s, _ in read_events(tmp_path / "log" / "r" / "training")["loss"]]
    assert steps == list(range(10, 101, 10))
    # A finished run says so and trains no further.
    again = train("--resume", "r", "--max-steps", "100", *where(tmp_path), capsys=capsys)
    assert again.returncode == 0 and "complete at step 100" in again.stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_a_checkpoint_before_exiting(tmp_path, sig):
    corpus = write_corpus(str(tmp_path / "corpus"), files=1, lines=4000)
    ck = tmp_path / "ck"
    proc = subprocess.Popen(
        [
            sys.executable,
            os.path.join(HERE, "rnn_train.py"),
            "--data",
            corpus,
            "--run",
            "r",
            "--validation",
            "none",
            *TINY,
            "--save-every",
            "100000",
            "--sample-every",
            "100000",
            "--checkpoint-dir",
            str(ck),
            "--log-dir",
            str(tmp_path / "log"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cache_env(),
    )
    for line in proc.stdout:
        if line.startswith("step"):  # training is under way
            break
    proc.send_signal(sig)
    err = without_cache_noise(proc.communicate(timeout=120)[1])
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    assert "--resume r" in err
    saved = [n for n in os.listdir(ck / "r") if n.endswith(".index")]
    assert len(saved) == 1
    step = int(re.match(r"ckpt-(\d+)\.index", saved[0])[1])
    assert step >= 10 and f"stopped at step {step}" in err


def bad_input_cases(tmp):
    """(name, extra setup, args) for every bad input rnn_train.py must refuse."""
    corpus = write_corpus(str(tmp / "corpus"))
    empty = tmp / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("")
    binary = tmp / "binary"
    binary.mkdir()
    (binary / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    small = tmp / "small"
    small.mkdir()
    (small / "a.txt").write_text("too short for one batch")
    data = ["--data", os.path.join(corpus, "*.txt")]
    other = write_corpus(str(tmp / "other"), seed=1)  # not the text the tiny run read
    return [
        ("glob matches nothing", ["--data", str(tmp / "nothing" / "*.txt")], "matches no file"),
        ("a name not there", [*data, str(tmp / "nothere.txt")], "which does not exist"),
        ("empty files", ["--data", str(empty)], "holds no text"),
        ("binary file", ["--data", str(binary)], "not a text file"),
        ("too small", ["--data", str(small), "--validation", "none"], "too small for one batch"),
        (
            "validation takes all",
            [*data, "--validation", os.path.join(corpus, "*.txt")],
            "validation files take all",
        ),
        ("zero batch size", [*data, "--batch-size", "0"], "--batch-size"),
        ("negative seqlen", [*data, "--seqlen", "-3"], "--seqlen"),
        ("negative learning rate", [*data, "--learning-rate", "-0.1"], "--learning-rate"),
        ("dropout of 1", [*data, "--dropout", "1"], "--dropout"),
        ("not a number", [*data, "--cell-size", "big"], "--cell-size"),
        ("negative seed", [*data, "--seed", "-1"], "--seed"),
        ("seed beyond 32 bits", [*data, "--seed", str(2**32)], "--seed"),
        ("beyond this machine's memory", [*data, "--cell-size", "1000000"], "of memory"),
        ("too many layers", [*data, "--layers", "100000"], "of memory"),
        ("nothing to resume", ["--resume"], "nothing to resume"),
        ("resume a run that is not there", ["--resume", "nosuchrun"], "nothing to resume"),
        ("other architecture", ["--resume", "tiny", "--cell-size", "64"], "--cell-size 32"),
        ("run exists", [*data, "--run", "tiny"], "exists already"),
        ("an earlier run's log", [*data, "--run", "gone"], "TensorBoard log of an earlier run"),
        (
            "resume on other text",
            ["--resume", "tiny", "--data", os.path.join(other, "*.txt")],
            "the text of run tiny has changed (read from",
        ),
        (
            "fine-tune with another architecture",
            [*data, "--init-from", "tiny", "--run", "ft", "--cell-size", "64"],
            "--init-from tiny has --cell-size 32, not 64",
        ),
        ("fine-tune and resume", ["--init-from", "tiny", "--resume", "tiny"], "give one of them"),
    ]


def test_bad_input_gets_one_line_and_loses_nothing(tmp_path, tiny_run, capsys):
    """Each bad input: exit 2, one line on stderr that names the problem, no traceback,
    and the existing run's checkpoints and logs untouched. (The run that must survive
    is a copy of the tiny run. rnn_train.py runs in this process: its process's own
    start-up and stderr are tested by the hostile-input tests.)"""
    ck, log = tmp_path / "ck", tmp_path / "log"
    shutil.copytree(tiny_run["checkpoints"], ck)
    shutil.copytree(tiny_run["log"], log)
    shutil.copytree(log / "tiny", log / "gone")  # a run whose checkpoints were deleted
    dirs = ["--checkpoint-dir", str(ck), "--log-dir", str(log)]
    nowhere = ["--checkpoint-dir", str(tmp_path / "none"), "--log-dir", str(log)]
    before = tree_digest(ck, log)
    for name, args, expected in bad_input_cases(tmp_path):
        if name == "nothing to resume":
            result = train(*args, *nowhere, capsys=capsys)
        else:
            result = train(*TINY[4:], *args, *dirs, capsys=capsys)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (name, result.stderr)
        assert len(lines) == 1, (name, result.stderr)
        assert lines[0].startswith("rnn_train.py: error:"), (name, lines)
        assert expected in lines[0], (name, lines)
        assert tree_digest(ck, log) == before, name


def test_a_run_folder_that_cannot_be_written_gets_one_line(tmp_path, tiny_run, capsys):
    """--resume where the run's lock file cannot be written (here a folder stands in
    its place; in life a folder of another user's, or a full disk): one line, exit 2."""
    ck = tmp_path / "ck"
    shutil.copytree(tiny_run["checkpoints"], ck)
    os.remove(ck / "tiny" / "lock")
    (ck / "tiny" / "lock").mkdir()
    result = train("--resume", "tiny", "--checkpoint-dir", str(ck), capsys=capsys)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"rnn_train.py: error: cannot write {ck / 'tiny' / 'lock'}: ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_log_folder_that_cannot_be_written_gets_one_line(tmp_path, tiny_run, capsys):
    """--resume where the run's TensorBoard log cannot be written (a file where its
    training folder should be; in life a read-only folder): one line, exit 2, and the
    checkpoints as they were."""
    ck, log = tmp_path / "ck", tmp_path / "log"
    shutil.copytree(tiny_run["checkpoints"], ck)
    shutil.copytree(tiny_run["log"], log)
    shutil.rmtree(log / "tiny" / "training")
    (log / "tiny" / "training").write_text("in the way")
    before = tree_digest(ck, log)
    result = train(
        "--resume", "tiny", "--checkpoint-dir", str(ck), "--log-dir", str(log), capsys=capsys
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"rnn_train.py: error: cannot write the TensorBoard log in {log / 'tiny'} "
        "(Not a directory): choose another --log-dir\n"
    )
    assert tree_digest(ck, log) == before


def test_resume_restores_everything_training_depends_on(tmp_path):
    """Without dropout (the one random input), 40 steps + resume + 40 steps end with the
    same weights as 80 steps in one go: the weights, optimizer moments, step, data
    position and RNN state all came back from the checkpoint."""
    corpus = write_corpus(str(tmp_path / "corpus"), files=1)
    common = [*tiny_flags(tmp_path, corpus), *FIXED_SCHEDULE, "--dropout", "0"]
    common += ["--sample-every", "1000"]
    whole, half = run_clis(
        ("rnn_train.py", *common, "--run", "whole", "--max-steps", "80"),
        ("rnn_train.py", *common, "--run", "split", "--max-steps", "40"),
    )
    rest = run_cli("rnn_train.py", "--resume", "split", "--max-steps", "80", *where(tmp_path))
    for result in (whole, half, rest):
        assert result.returncode == 0, result.stderr
    a = tf.train.load_checkpoint(str(tmp_path / "ck" / "whole" / "ckpt-80"))
    b = tf.train.load_checkpoint(str(tmp_path / "ck" / "split" / "ckpt-80"))
    # weights, Adam's moments and step count, the RNN state, the step (not the log's
    # figures, which include timings)
    skip = ("config", "save", "_", "log")
    keys = [k for k in a.get_variable_to_shape_map() if not k.startswith(skip)]
    assert len(keys) == 2 * 3 + 2 + 2 * (2 * 3 + 2) + 2 + 2
    for key in keys:
        np.testing.assert_allclose(
            a.get_tensor(key), b.get_tensor(key), rtol=0, atol=1e-6, err_msg=key
        )
    assert progress(whole.stdout)[4:] == progress(rest.stdout)


def test_mixed_precision_trains_and_saves_float32_weights(tmp_path, capsys):
    corpus = write_corpus(str(tmp_path / "corpus"))
    common = tiny_flags(tmp_path, corpus)
    first = train(
        *common,
        "--run",
        "m",
        "--max-steps",
        "60",
        "--mixed-precision",
        capsys=capsys,
    )
    assert first.returncode == 0, first.stderr
    assert "bfloat16 matmuls in training" in first.stdout  # on a CPU, with or without BF16
    losses = [loss for _, loss in progress(first.stdout)]
    assert losses[-1] < losses[0] - 0.5
    reader = tf.train.load_checkpoint(str(tmp_path / "ck" / "m" / "ckpt-60"))
    dtypes = reader.get_variable_to_dtype_map()
    # (saved with the optimizer, the weights are filed under its references to them)
    weights = [k for k in dtypes if "trainable_variables" in k or k.startswith("weights/")]
    assert len(weights) == 2 * 3 + 2  # 2 GRU layers (kernel, recurrent, bias) + softmax
    assert all(dtypes[k] == tf.float32 for k in weights)
    assert not {tf.bfloat16, tf.float16} & set(dtypes.values())
    # the precision is a training choice, not part of the checkpoint's architecture
    second = train(
        "--resume",
        "m",
        "--max-steps",
        "70",
        "--no-mixed-precision",
        *where(tmp_path),
        capsys=capsys,
    )
    assert second.returncode == 0, second.stderr
    assert "resuming at step 60" in second.stdout
    assert "float32 matmuls in training" in second.stdout


def test_learning_rate_schedule():
    from charrnn.training import learning_rate_at

    config = {"learning_rate": 0.004, "warmup": 10, "schedule": "cosine", "min_lr": 0.1}
    config["warmup_share"] = 0.1
    # linear warm-up from (almost) 0 to the peak
    assert [learning_rate_at(s, 0.0, config) for s in (0, 4, 9)] == pytest.approx(
        [0.0004, 0.002, 0.004]
    )
    # ...or over the first tenth of the run if that is shorter: 30 steps of 60 minutes
    # are 3 minutes in, half-way through that tenth
    assert learning_rate_at(3, 0.05, config) == pytest.approx(0.002)
    assert learning_rate_at(5, 0.2, config) == pytest.approx(
        0.004 * (1 + math.cos(0.2 * math.pi)) / 2 * 0.9 + 0.0004
    )
    # then the cosine, from the peak to min_lr x the peak, and no lower after the end
    assert learning_rate_at(10, 0.0, config) == pytest.approx(0.004)
    assert learning_rate_at(500, 0.5, config) == pytest.approx(0.0004 + 0.0036 / 2)
    assert learning_rate_at(999, 1.0, config) == pytest.approx(0.0004)
    assert learning_rate_at(1200, 1.3, config) == pytest.approx(0.0004)
    assert learning_rate_at(500, 0.5, dict(config, schedule="constant")) == 0.004


def test_learning_rate_auto_falls_with_the_runs_length(tmp_path, capsys):
    """--learning-rate auto (the default): the short runs' peak up to SHORT_RUN steps,
    the long runs' from LONG_RUN on, falling between; a time-limited run's length is
    the steps its pace will make by the limit; a fine-tuning takes the long runs' peak,
    and a number given is the peak whatever the length."""
    from charrnn.settings import LONG_PEAK, LONG_RUN, SHORT_PEAK, SHORT_RUN, auto_learning_rate

    assert SHORT_PEAK > LONG_PEAK and SHORT_RUN < LONG_RUN
    assert auto_learning_rate(1) == auto_learning_rate(SHORT_RUN) == SHORT_PEAK
    assert auto_learning_rate(LONG_RUN) == auto_learning_rate(10**9) == LONG_PEAK
    between = [auto_learning_rate(n) for n in range(SHORT_RUN, LONG_RUN + 1, 100)]
    assert all(a > b for a, b in itertools.pairwise(between))
    middle = int(math.sqrt(SHORT_RUN * LONG_RUN))  # geometric: the middle's is the mean's
    assert auto_learning_rate(middle) == pytest.approx(math.sqrt(SHORT_PEAK * LONG_PEAK))
    config = {"learning_rate": "auto", "warmup": 0, "schedule": "constant"}
    assert training.learning_rate_at(5, 0.5, config, run_steps=100) == SHORT_PEAK
    assert training.learning_rate_at(5, 0.5, config, run_steps=LONG_RUN) == LONG_PEAK

    clock = rnn_train.Clock(1.0)  # a minute, half of it gone
    clock.start -= 30
    ends, half = rnn_train.steps_by_the_end, clock.fraction_used()
    assert half == pytest.approx(0.5, rel=0.01)
    assert ends(100, 0, 10_000, half) == pytest.approx(200, rel=0.01)
    assert ends(1100, 1000, 10_000, half) == pytest.approx(1200, rel=0.01)  # resumed
    assert ends(100, 0, 150, half) == 150  # its steps end it before the time
    assert ends(0, 0, 10_000, half) == 10_000  # no pace yet
    assert ends(100, 0, 10_000, rnn_train.Clock(None).fraction_used()) == 10_000

    parent = dict(settings.DEFAULTS)
    fine_tune = types.SimpleNamespace(init_from="p", learning_rate=None)
    assert settings.merge(fine_tune, None, parent)["learning_rate"] == LONG_PEAK
    fine_tune.learning_rate = 0.01
    assert settings.merge(fine_tune, None, parent)["learning_rate"] == 0.01

    # a real short run: its rate rises to the short runs' peak, and it is saved as auto
    corpus = write_corpus(str(tmp_path / "corpus"))
    result = train(
        *tiny_flags(tmp_path, corpus),
        *["--run", "a", "--learning-rate", "auto", "--warmup", "5", "--max-steps", "20"],
        capsys=capsys,
    )
    assert result.returncode == 0, result.stderr
    rates = [float(v) for _, v in read_events(tmp_path / "log" / "a" / "training")["learning_rate"]]
    assert max(rates) == pytest.approx(SHORT_PEAK, rel=1e-6)
    assert ckpt.read_config(str(tmp_path / "ck" / "a" / "ckpt-20"))["learning_rate"] == "auto"


def test_a_time_limits_progress_counts_from_the_training_not_the_set_up():
    """A time-limited run's progress (the cosine's, --warmup-share's, and the pace auto
    counts the run's steps by) runs from when training began: a long set-up (a big
    text read) skips no warm-up; a resumed run's pace is its own steps'."""
    clock = rnn_train.Clock(1.0)
    clock.start -= 20  # 20 s of set-up
    clock.start_training()
    assert clock.training_from == pytest.approx(20, abs=1)
    assert clock.fraction_used() < 0.01
    config = dict(settings.DEFAULTS, learning_rate=0.005, warmup=100, warmup_share=0.1)
    assert training.learning_rate_at(0, clock.fraction_used(), config) < 0.1 * 0.005
    clock.start -= 20  # 20 s of training: half of the 40 the set-up left
    assert clock.fraction_used() == pytest.approx(0.5, abs=0.01)
    ends, half = rnn_train.steps_by_the_end, clock.fraction_used()
    assert ends(100, 0, 10_000, half) == pytest.approx(200, rel=0.02)
    # resumed at step 1,000 of 1,500: 100 steps in half the time make 1,200, not 1,500
    assert ends(1100, 1000, 1500, half) == pytest.approx(1200, rel=0.02)
    assert ends(100, 0, 150, half) == 150  # its steps end it before the time

    late = rnn_train.Clock(1.0)
    late.start -= 70  # a set-up longer than the limit: the first step is the last
    late.start_training()
    assert late.fraction_used() == 1.0 and late.out_of_time()


def test_time_limit_stops_cleanly_and_the_schedule_ends_with_the_time(tmp_path, capsys):
    corpus = write_corpus(str(tmp_path / "corpus"))
    result = train(
        *tiny_flags(tmp_path, corpus, validation=os.path.join(corpus, "part2.txt")),
        "--run",
        "t",
        "--time-limit",
        "0.3",
        "--schedule",
        "cosine",
        "--warmup",
        "20",
        "--min-lr",
        "0.1",
        capsys=capsys,
    )
    assert result.returncode == 0, result.stderr
    m = re.search(
        r"time limit of 0.3 minutes reached at step (\d+): checkpoint (\S+) saved", result.stdout
    )
    assert m, result.stdout
    step = int(m[1])
    assert m[2].endswith(f"ckpt-{step}") and os.path.exists(m[2] + ".index")
    assert step > 100  # it trained for the time, not just a few steps
    # where the time went: mostly in steps, the first of them soon after the start
    spent = re.search(
        r"^time: ([0-9.]+) of 0m(\d+)s in training steps, the first after ([0-9.]+) s",
        result.stdout,
        re.M,
    )
    assert spent, result.stdout
    assert 0.3 < float(spent[1]) < 1 and 18 <= int(spent[2]) < 60 and 0 < float(spent[3]) < 18
    # the last step is logged and validated, so the curves end where the run did
    events = read_events(tmp_path / "log" / "t" / "training")
    assert events["loss"][-1][0] == step
    assert read_events(tmp_path / "log" / "t" / "validation")["loss"][-1][0] == step
    rates = [float(v) for _, v in events["learning_rate"]]
    peak = TINY[TINY.index("--learning-rate") + 1]
    assert max(rates) == pytest.approx(float(peak), rel=0.05)
    # by the end of the time, the cosine is close to its floor (0.1 x the peak)
    assert rates[-1] < 0.2 * float(peak)
    after_warmup = rates[2:]  # logged at steps 10, 20 (the peak), 30...
    assert all(a >= b for a, b in itertools.pairwise(after_warmup))


def test_recipe_talk_is_the_talks_settings(tmp_path, capsys):
    corpus = write_corpus(str(tmp_path / "corpus"))
    result = train(
        *["--data", os.path.join(corpus, "*.txt"), "--validation", "none", *where(tmp_path)],
        "--layers",
        "1",
        "--cell-size",
        "8",
        "--batch-size",
        "4",
        "--seqlen",
        "8",
        "--max-steps",
        "2",
        "--recipe",
        "talk",
        "--run",
        "talk",
        capsys=capsys,
    )
    assert result.returncode == 0, result.stderr
    config = ckpt.read_config(str(tmp_path / "ck" / "talk" / "ckpt-2"))
    assert {
        k: config[k] for k in ("learning_rate", "warmup", "schedule", "clip_norm", "dropout")
    } == {
        "learning_rate": 0.001,
        "warmup": 0,
        "schedule": "constant",
        "clip_norm": 0.0,
        "dropout": 0.2,
    }


def applied_gradient(clip_norm, strategy=None):
    """What one training step (training.make_train_step, --clip-norm clip_norm) applies
    to a tiny model's weights, from the same weights and batch each time: the weights
    before minus after, under plain SGD at a rate of 1 - the gradient as the step hands
    it to the optimizer (Adam's first step moves each weight by about its rate,
    whatever the gradient's size: it would hide a clip). strategy: a tf.distribute one."""
    dist = Distribution(strategy)
    config = {"alphasize": 98, "cell_size": 16, "layers": 2, "dropout": 0.0}
    keras.utils.set_random_seed(1)
    with dist.scope():
        model = build_model(config)
        optimizer = keras.optimizers.SGD(1.0)
        optimizer.build(model.trainable_variables)
    config = {"seed": 0, "clip_norm": clip_norm, "batch_size": 4, "zero_state_every": 0}
    step = training.make_train_step(model, optimizer, config, dist)
    x = np.random.default_rng(0).integers(1, 98, size=[4, 12]).astype(np.int32)
    before = [v.numpy() for v in model.trainable_variables]
    step(x, np.roll(x, -1, axis=1), model.zero_state(4), tf.constant(0, tf.int64), False)
    return [b - v.numpy() for b, v in zip(before, model.trainable_variables, strict=True)]


def global_norm(tensors):
    return math.sqrt(sum(float(np.sum(np.square(t, dtype=np.float64))) for t in tensors))


@pytest.mark.parametrize("strategy", [None, "mirrored"])
def test_clip_norm_scales_a_larger_gradient_down_to_that_global_norm(strategy):
    """--clip-norm C: a step whose gradient has a global norm above C applies it scaled
    down to norm C (every weight's share by the same factor: one global norm, not one
    per weight), and one within C as it is. Under a strategy (one replica here; two:
    distribute_test.py), the sum over the replicas is clipped, in the step as well."""

    def make():
        # made in the test, after TensorFlow has its devices: one CPU replica
        return tf.distribute.MirroredStrategy(["/cpu:0"]) if strategy else None

    unclipped = applied_gradient(0.0, make())  # --clip-norm 0: never clip
    norm = global_norm(unclipped)
    assert norm > 0.1  # a real gradient, worth clipping
    clipped = applied_gradient(norm / 10, make())
    assert global_norm(clipped) == pytest.approx(norm / 10, rel=1e-3)
    for small, full in zip(clipped, unclipped, strict=True):
        np.testing.assert_allclose(small, full / 10, rtol=1e-3, atol=1e-6)
    within = applied_gradient(norm * 2, make())
    for same, full in zip(within, unclipped, strict=True):
        np.testing.assert_allclose(same, full, rtol=1e-4, atol=1e-6)


def test_dropout_starts_where_dropout_from_epoch_says(tmp_path):
    """With --dropout-from-epoch E, the steps before E epochs train exactly as a run
    without dropout (same losses, bit for bit with --deterministic), and later ones
    not: here E is 25 steps' worth of epochs, so the progress lines of steps 10 and 20
    agree and the one of step 30 does not."""
    corpus = write_corpus(str(tmp_path / "corpus"))
    chars = sum(os.path.getsize(p) for p in glob.glob(os.path.join(corpus, "*.txt")))  # ASCII
    epochs = 25 / txtutils.batches_per_epoch(chars, 4, 8)  # TINY: batches of 4 x 8
    assert epochs < 1  # (not a run that ends first)
    common = [*tiny_flags(tmp_path, corpus), "--deterministic"]  # (global: in processes)
    late, never = run_clis(
        (
            "rnn_train.py",
            *common,
            "--run",
            "late",
            "--max-steps",
            "40",
            "--dropout",
            "0.3",
            "--dropout-from-epoch",
            f"{epochs!r}",
        ),
        ("rnn_train.py", *common, "--run", "never", "--max-steps", "40", "--dropout", "0"),
    )
    assert late.returncode == 0, late.stderr
    assert never.returncode == 0, never.stderr
    late_losses, never_losses = progress(late.stdout), progress(never.stdout)
    assert late_losses[:2] == never_losses[:2]  # steps 10 and 20: no dropout yet
    assert late_losses[2:] != never_losses[2:]


def test_validation_in_chunks_gives_the_figures_of_whole_rows():
    """validate() runs rows VALID_PER_CALL characters at a time with the state carried
    along (for memory): the same loss and accuracy as whole rows in one call."""
    keras.utils.set_random_seed(0)
    model = build_model({"alphasize": 98, "cell_size": 16, "layers": 2, "dropout": 0.0})
    codes = np.random.default_rng(0).integers(0, 98, 3 * txtutils.VALID_SEQLEN + 1)
    x, y = (a.astype(np.int32) for a in txtutils.validation_rows(codes, txtutils.VALID_SEQLEN))
    whole = mean_loss_and_accuracy(model, [(x, y)])[:2]

    class Log:
        LOSS = ACCURACY = None
        figures = {}

        def scalar(self, run, tag, value, step, description=None):
            self.figures[tag] = value

    log = Log()
    training.validate(model, types.SimpleNamespace(valid_x=x, valid_y=y), log, step=1)
    np.testing.assert_allclose([log.figures["loss"], log.figures["accuracy"]], whole, rtol=1e-6)


# ---------------------------------------------------------------------------
# Any language: alphabets grown from the text, fine-tuning, a resume that knows its text

# The C locale, without the UTF-8 mode Python turns on by itself in it: where Python
# would write ASCII and die of UnicodeEncodeError on the first Cyrillic character.
C_LOCALE = dict(os.environ, LANG="C", LC_ALL="C", PYTHONUTF8="0")
C_LOCALE.pop("PYTHONIOENCODING", None)


def test_a_corpus_in_every_script_trains_plays_and_scores_in_the_c_locale(tmp_path):
    """Cyrillic, Greek, accented Latin, combining accents, emoji beyond the BMP, CRLF and
    5,000 CJK characters: the alphabet holds them all after the talk's 98; the start
    line says so with the unknown share; training, samples, generation (a prime with a
    character never seen) and scoring work and print UTF-8 in the C locale."""
    texts = {k: v for k, v in UNICODE_TEXTS.items() if k != "cjk"}
    train_text = "".join(texts.values()) * 8 + cjk_text(5000)
    valid_text = "Мороз и солнце ∰ день чудесный\n" * 20  # ∰: never in training
    (tmp_path / "train.txt").write_bytes(train_text.encode())
    (tmp_path / "valid.txt").write_bytes(valid_text.encode())
    dirs = where(tmp_path)
    train = run_cli(
        "rnn_train.py",
        *["--data", str(tmp_path / "train.txt"), "--validation", str(tmp_path / "valid.txt")],
        *["--run", "u", *TINY, "--max-steps", "20", "--sample-every", "20", *dirs],
        env=C_LOCALE,
    )
    assert train.returncode == 0, train.stderr
    expected = txtutils.DEFAULT.grown(*count_chars(train_text))
    assert expected.size > 98 + 5000
    config = ckpt.read_config(runs.newest_in(str(tmp_path / "ck" / "u")))
    assert config["alphabet"] == expected.chars and config["alphasize"] == expected.size
    unknown = valid_text.count("∰") / len(valid_text)
    assert (
        f"alphabet: {expected.size:,} symbols (the talk's 98 + {expected.size - 98:,} from the "
        f"text, each seen 2+ times: " in train.stdout
    )
    assert f"0.00% of the training text, {unknown:.2%} of the validation text" in train.stdout
    sample = train.stdout.split("---- sample at step 20 ----\n")[1].split("\n----")[0]
    assert len(sample) == training.SAMPLE_LENGTH and set(sample) <= set(expected.chars)

    play, score = run_clis(
        (
            "rnn_play.py",
            "u",
            "--prime",
            "Мороз ∰",
            "--length",
            "300",
            "--seed",
            "1",
            *dirs[:2],
            {"env": C_LOCALE},
        ),
        ("rnn_play.py", "u", "--score", str(tmp_path / "valid.txt"), *dirs[:2], {"env": C_LOCALE}),
    )
    assert play.returncode == 0, play.stderr
    assert play.stdout.startswith("Мороз ∰") and len(play.stdout) == len("Мороз ∰") + 300 + 1
    assert set(play.stdout[7:-1]) <= set(expected.chars)
    assert "1 of the prime's 7 characters are not in the model's alphabet" in play.stderr
    assert score.returncode == 0, score.stderr
    assert f"{unknown:.2%} of them not in the model's alphabet" in score.stdout


@pytest.fixture(scope="module")
def fortunes_zh():
    """Debian's fortunes-zh, a real Chinese text of ~4,800 symbols (make corpus-zh;
    fetched here if it is missing, its hash checked)."""
    folder = os.path.join(HERE, "fortunes-zh")
    assert fetch_corpus.main(["fortunes-zh", "--into", folder]) == 0, "make corpus-zh"
    return folder


def ideograph_share(text):
    return sum(0x4E00 <= ord(c) <= 0x9FFF for c in text) / len(text)


def test_a_real_chinese_text_trains_plays_and_scores(tmp_path, fortunes_zh, capsys):
    """A real Chinese text: thousands of symbols from the text itself, a loss that goes
    down, and an early model whose samples - the training's and rnn_play.py's at its
    defaults - hold Chinese: a cut of the 2 or 10 likeliest characters, whatever the
    alphabet, gave only spaces and table rules, each likelier than any ideograph."""
    dirs = where(tmp_path)
    data = ["--data", os.path.join(fortunes_zh, "*.txt")]
    valid = os.path.join(fortunes_zh, "tang300.txt")
    flags = [*TINY, "--max-steps", "30", "--eval-every", "30", "--sample-every", "30"]
    train = run_main(
        rnn_train.main, *data, "--validation", valid, "--run", "zh", *flags, *dirs, capsys=capsys
    )
    assert train.returncode == 0, train.stderr
    config = ckpt.read_config(runs.newest_in(str(tmp_path / "ck" / "zh")))
    assert config["alphasize"] > 4000
    losses = [float(x) for x in re.findall(r"^step .* loss (\d+\.\d+)", train.stdout, re.M)]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert re.search(r"^validation: loss \d+\.\d+", train.stdout, re.M)
    sample = train.stdout.split("---- sample at step 30 ----\n")[1].split("\n----")[0]
    assert ideograph_share(sample) > 0.02, sample

    play, score = run_clis(
        ("rnn_play.py", "zh", "--length", "600", "--seed", "1", *dirs[:2]),
        ("rnn_play.py", "zh", "--score", valid, *dirs[:2]),
    )
    assert play.returncode == 0, play.stderr
    assert ideograph_share(play.stdout) > 0.02, play.stdout
    assert score.returncode == 0, score.stderr
    with open(valid, encoding="utf-8") as f:
        scored = len(f.read()) - 1  # every character predicted from those before it
    figures = re.search(r"\(([\d.]+) nats/char\), accuracy ([\d.]+), over ([\d,]+) ", score.stdout)
    assert float(figures[1]) > 0 and 0 <= float(figures[2]) < 1
    assert int(figures[3].replace(",", "")) == scored


def test_a_checkpoint_of_the_fixed_alphabet_still_plays_scores_and_resumes(tmp_path):
    """testdata/2026-11-checkpoint: saved before alphabets grew and runs knew their
    text. It generates and scores as before, and resumes (its text unchecked: it has
    no fingerprint), keeping the talk's alphabet; the resumed run's checkpoint then
    records its text."""
    shutil.copytree(os.path.join(HERE, "tests", "testdata", "2026-11-checkpoint"), tmp_path / "old")
    dirs = ["--checkpoint-dir", "runs"]
    play, score = run_clis(
        ("rnn_play.py", "v1", "--length", "100", "--seed", "1", *dirs, {"cwd": tmp_path / "old"}),
        ("rnn_play.py", "v1", "--score", "corpus.txt", *dirs, {"cwd": tmp_path / "old"}),
    )
    assert play.returncode == 0 and len(play.stdout) == 1 + 100 + 1, play.stderr
    assert score.returncode == 0 and "bits/char" in score.stdout, score.stderr
    resume = run_cli(
        "rnn_train.py",
        "--resume",
        "v1",
        "--max-steps",
        "9",
        *dirs,
        "--log-dir",
        "log",
        cwd=tmp_path / "old",
    )
    assert resume.returncode == 0, resume.stderr
    assert "resuming at step 6" in resume.stdout and "done: step 9" in resume.stdout
    config = ckpt.read_config(str(tmp_path / "old" / "runs" / "v1" / "ckpt-9"))
    # its dropout started half-way (--dropout-from 0.5, of the run's 9 steps now), not
    # after half of its 10 epochs
    batches = int(re.search(r"^([\d,]+) batches of 4 x 8 per epoch", resume.stdout, re.M)[1])
    assert config["dropout_from_epoch"] * batches == pytest.approx(4.5)
    assert config["alphabet"] == txtutils.ALPHABET
    assert [os.path.basename(p) for p, _, _ in config["data_fingerprint"]["train"]] == [
        "corpus.txt"
    ]


def test_init_from_keeps_every_weight_of_the_parent_and_adds_rows_for_new_symbols(tiny_run):
    """The fine-tuned model before its first step: every weight of the parent bit for
    bit, and for the symbols the parent lacked, the input kernel's rows and the logits
    layer's columns a new model starts from."""
    parent = runs.find_checkpoint("tiny", str(tiny_run["checkpoints"]), print)
    parent_config = ckpt.read_config(parent)
    alphabet = ckpt.alphabet_of(parent_config).grown(*count_chars("жжщщ"))
    config = dict(parent_config, alphabet=alphabet.chars, alphasize=alphabet.size)
    keras.utils.set_random_seed(0)
    model = build_model(config)
    fresh = {
        (layer, n): v.numpy() for layer, ws in model.named_weights().items() for n, v in ws.items()
    }
    ckpt.load_parent_weights(model, parent, parent_config)
    reader = tf.train.load_checkpoint(parent)
    keys = ckpt.saved_variables(reader, parent)
    grown = 0
    for layer, weights in model.named_weights().items():
        for name, variable in weights.items():
            saved, now = reader.get_tensor(keys[f"{layer}/{name}"]), variable.numpy()
            if saved.shape == now.shape:
                np.testing.assert_array_equal(now, saved)
                continue
            grown += 1
            axis = -1 if layer == "softmax" else 0  # the alphabet's: [CELL, A], [A]; [A, 3*CELL]
            known = saved.shape[axis]
            new = np.arange(known, alphabet.size)
            np.testing.assert_array_equal(np.take(now, np.arange(known), axis), saved)
            np.testing.assert_array_equal(
                np.take(now, new, axis), np.take(fresh[layer, name], new, axis)
            )
    assert grown == 3  # gru0/kernel, softmax/kernel, softmax/bias


def test_init_from_starts_a_new_run_on_other_text_and_its_resume_knows_that_text(
    tiny_run, tmp_path
):
    """--init-from: a new run from the tiny run's weights, on Cyrillic text: the start
    line names the parent, the checkpoint records it, the alphabet is the parent's
    grown by the new text. Then that text changes: --resume refuses, saying what
    changed and pointing to --init-from."""
    corpus = tmp_path / "ru"
    corpus.mkdir()
    (corpus / "ru.txt").write_text(UNICODE_TEXTS["cyrillic"] * 30)
    parent = runs.find_checkpoint("tiny", str(tiny_run["checkpoints"]), print)
    dirs = where(tmp_path)
    ft = run_cli(
        "rnn_train.py",
        *["--init-from", str(tiny_run["checkpoints"] / "tiny"), "--data", str(corpus)],
        *["--validation", "none", "--run", "ft", *TINY[4:], "--max-steps", "3", *dirs],
    )
    assert ft.returncode == 0, ft.stderr
    assert f"run ft: new, fine-tuning {parent}; 2 x 32 GRU" in ft.stdout
    config = ckpt.read_config(runs.newest_in(str(tmp_path / "ck" / "ft")))
    assert config["parent"] == parent
    assert config["alphabet"] == txtutils.ALPHABET + "".join(
        sorted(set(UNICODE_TEXTS["cyrillic"]) - set(txtutils.ALPHABET))
    )
    with open(corpus / "ru.txt", "a") as f:
        f.write("ещё строка\n")
    resume = run_cli("rnn_train.py", "--resume", "ft", *dirs)
    assert resume.returncode == 2
    assert resume.stderr.strip() == (
        "rnn_train.py: error: the text of run ft has changed (training files edited: "
        "ru.txt): resume it on the text it was trained on, or train on this text in a new "
        "run with --init-from ft"
    )


def test_the_best_checkpoint_is_kept_whatever_keep_deletes(tmp_path):
    """runs.Best links a checkpoint's files into RUN/best/ when its validation loss is
    the lowest so far, removes the one it replaces, and a resumed run knows it."""
    run = tmp_path / "r"
    run.mkdir()
    best = runs.Best(str(run), MEASURE)
    (run / "best").mkdir()  # the pieces of a best that a kill left unfinished (no .index)
    (run / "best" / "ckpt-5.json").write_text("{}")
    (run / "best" / "ckpt-5.data-00000-of-00001").write_text("5")
    for step, loss in [(10, 2.0), (20, 1.5), (30, 1.7), (40, 1.6)]:
        for suffix in ("index", "data-00000-of-00001"):  # a checkpoint's files, as saved
            (run / f"ckpt-{step}.{suffix}").write_text(f"{step}")
        best.offer(str(run / f"ckpt-{step}"), step, loss)
        for old in run.glob(f"ckpt-{step - 10}.*"):  # --keep 1 deletes the one before
            old.unlink()
    assert (best.step, best.loss) == (20, 1.5)
    kept = sorted(p.name for p in (run / "best").iterdir())
    assert kept == ["ckpt-20.data-00000-of-00001", "ckpt-20.index", "ckpt-20.json"]
    assert (run / "best" / "ckpt-20.data-00000-of-00001").read_text() == "20"
    again = runs.Best(str(run), MEASURE)
    assert (again.step, again.loss) == (20, 1.5)


MEASURE = {"rows": 128, "seqlen": 512, "text": ["abc"]}


@pytest.mark.parametrize(
    "kept", [{"step": 20, "loss": 1.2}, {"step": 20, "loss": 1.2, "measure": {}}]
)
def test_a_best_measured_otherwise_is_replaced_by_the_next_validated_save(tmp_path, kept):
    """A best kept before validation took 128 rows of 512 (or on other held-out text)
    holds a loss of another measure, which the run's saves might never beat."""
    (tmp_path / "r" / "best").mkdir(parents=True)
    for suffix in ("index", "data-00000-of-00001"):
        (tmp_path / "r" / "best" / f"ckpt-20.{suffix}").write_text("20")
        (tmp_path / "r" / f"ckpt-30.{suffix}").write_text("30")
    (tmp_path / "r" / "best" / "ckpt-20.json").write_text(json.dumps(kept))
    best = runs.Best(str(tmp_path / "r"), MEASURE)
    best.offer(str(tmp_path / "r" / "ckpt-30"), 30, 1.4)  # worse than 1.2, but comparable
    assert (best.step, best.loss) == (30, 1.4)
    assert runs.newest_in(str(tmp_path / "r" / "best")).endswith("ckpt-30")
    again = runs.Best(str(tmp_path / "r"), MEASURE)
    assert (again.step, again.loss) == (30, 1.4)  # measured as this run measures


def test_a_new_run_is_refused_a_name_whose_best_checkpoint_is_left(tmp_path, tiny_run, capsys):
    """An earlier run's best/, its checkpoints deleted: a new run of that name would
    take its loss as the bar to beat, and RUN:best would serve the old model."""
    shutil.copytree(tiny_run["checkpoints"] / "tiny" / "best", tmp_path / "ck" / "r" / "best")
    corpus = write_corpus(str(tmp_path / "corpus"))
    result = train(*tiny_flags(tmp_path, corpus), "--run", "r", "--max-steps", "5", capsys=capsys)
    assert result.returncode == 2 and result.stdout == ""
    assert "run r has the best checkpoint of an earlier run" in result.stderr
    assert not (tmp_path / "log").exists()


def test_a_run_names_its_best_checkpoint_and_run_best_finds_it(tmp_path, capsys):
    corpus = write_corpus(str(tmp_path / "corpus"))
    flags = tiny_flags(tmp_path, corpus, validation=os.path.join(corpus, "part2.txt"))
    every = ["--eval-every", "20", "--save-every", "20", "--keep", "1"]
    result = train(*flags, *every, "--run", "r", "--max-steps", "60", capsys=capsys)
    assert result.returncode == 0, result.stderr
    losses = [float(v) for v in re.findall(r"^validation: loss ([\d.]+)", result.stdout, re.M)]
    step = 20 * (1 + losses.index(min(losses)))
    assert f"the best: step {step}, validation loss {min(losses):.3f} (r:best)" in result.stdout
    prefix = runs.find_checkpoint("r:best", str(tmp_path / "ck"), print)
    assert prefix == str(tmp_path / "ck" / "r" / "best" / f"ckpt-{step}")
    ckpt.verify(prefix)
    with pytest.raises(ckpt.CheckpointError, match="no run named nosuchrun"):
        runs.find_checkpoint("nosuchrun:best", str(tmp_path / "ck"), print)


def test_the_run_taken_when_none_is_named_is_the_one_whose_newest_checkpoint_is_newest(
    tmp_path, monkeypatch
):
    """runs.newest_run, the run of --resume, rnn_play.py and rnn_export.py when none is
    named: of several runs, the one whose newest checkpoint was written last - not the
    one of the most steps, nor the first or last by name - passing over what holds no
    complete checkpoint, however recent (a run stopped before its first save, a save
    cut short, a file)."""
    ck = tmp_path / "ck"
    listdir = os.listdir
    start = 1_700_000_000  # seconds since 1970: long before the folders made below

    def save(run, step, seconds, suffixes=("data-00000-of-00001", "index")):
        """A checkpoint's files as a save leaves them (the .index last), start + seconds."""
        (ck / run).mkdir(parents=True, exist_ok=True)
        for suffix in suffixes:
            path = ck / run / f"ckpt-{step}.{suffix}"
            path.write_text(f"{step}")
            os.utime(path, (start + seconds, start + seconds))

    assert runs.newest_run(str(ck)) is None  # no folder yet
    (ck / "stopped").mkdir(parents=True)  # now: newer than any checkpoint below
    assert runs.newest_run(str(ck)) is None
    save("a", 500, 10)
    save("b", 20, 30)
    save("c", 300, 20)
    assert runs.newest_run(str(ck)) == "b"
    save("d", 900, 40, suffixes=["data-00000-of-00001"])  # cut short: no .index
    (ck / "a" / "ckpt-600_temp").mkdir()  # a save of a in progress
    (ck / "notes.txt").write_text("runs to keep")
    assert runs.newest_run(str(ck)) == "b"
    save("a", 600, 50)  # a, resumed, saves again
    assert runs.newest_run(str(ck)) == "a"
    # two runs saved the same second: the later by name, whatever order the folder
    # lists them in
    save("2026-12-07_10-00-00", 250, 60)
    save("2026-12-07_10-05-00", 250, 60)
    listed = os.listdir(ck)
    for order in (sorted(listed), sorted(listed, reverse=True)):
        monkeypatch.setattr(os, "listdir", lambda p, o=order: o if p == str(ck) else listdir(p))
        assert runs.newest_run(str(ck)) == "2026-12-07_10-05-00"


# ---------------------------------------------------------------------------
# Text of any size

PEAK_OF_CHILD = (
    "import resource, subprocess, sys; status = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(status)"
)


def test_the_memory_of_a_run_does_not_grow_with_its_text(tmp_path):
    """Two real runs, on 1 MB and on 98 MB of text: the larger's peak resident memory
    is within 40 MB of the smaller's, where reading the whole text into memory (as
    until issue 17) added 830 MB. Every pass over the text reads it in pieces, and
    training reads each batch's rows from the text cache's file."""
    block = (("to be or not, that is the question " * 2).strip() + "\n").encode() * 7000  # .5 MB
    sizes = {}
    for name, blocks in (("small", 2), ("big", 200)):
        (tmp_path / name).mkdir()
        for part in range(0, blocks, 20):
            with open(tmp_path / name / f"part{part:03}.txt", "wb") as f:
                f.write(block * min(20, blocks - part))
        sizes[name] = blocks * len(block)
    (tmp_path / "valid.txt").write_bytes(block[:200_000])
    runs_ = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-c",
                PEAK_OF_CHILD,
                sys.executable,
                os.path.join(HERE, "rnn_train.py"),
            ]
            + [*tiny_flags(tmp_path / name, tmp_path / name, str(tmp_path / "valid.txt"))]
            + ["--max-steps", "3", "--run", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cache_env(),
        )
        for name in sizes
    }
    peaks = {}
    for name, process in runs_.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        assert "validation: loss" in out
        peaks[name] = int(out.strip().splitlines()[-1]) / 1024  # MB
    assert sizes["big"] - sizes["small"] > 80e6
    assert peaks["big"] - peaks["small"] < 40, peaks


def test_an_edit_that_keeps_size_and_time_is_noticed_on_resume(tmp_path, capsys):
    """The text cache finds texts by their bytes, not by sizes and dates: a resume
    fingerprints every file again, so no edit slips through."""
    corpus = write_corpus(str(tmp_path / "corpus"), files=2)
    first = train(*tiny_flags(tmp_path, corpus), "--run", "r", "--max-steps", "2", capsys=capsys)
    assert first.returncode == 0, first.stderr
    assert "encoded now" in first.stdout
    path = os.path.join(corpus, "part1.txt")
    stat = os.stat(path)
    with open(path, "r+b") as f:
        f.write(b"J")  # ROMEO/JULIET/NURSE -> a capital J at the start, same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    resume = train("--resume", "r", "--max-steps", "4", *where(tmp_path), capsys=capsys)
    assert resume.returncode == 2
    assert "the text of run r has changed (training files edited: part1.txt)" in resume.stderr


def test_a_resume_maps_the_codes_its_run_encoded_and_says_so(tmp_path, capsys, monkeypatch):
    """...and a big text's passes say how far they are (made to talk at once here)."""
    monkeypatch.setattr(rnn_train.ReadingProgress, "EVERY", 0.0)
    corpus = write_corpus(str(tmp_path / "corpus"), files=2)
    first = train(*tiny_flags(tmp_path, corpus), "--run", "r", "--max-steps", "2", capsys=capsys)
    assert first.returncode == 0, first.stderr
    for what in ("fingerprinting", "counting", "encoding"):
        assert re.search(
            rf"^reading the text: {what} 100% of [\d.,]+ [kMG]B, 0m00s left$", first.stdout, re.M
        )
    folder = re.search(r"^the text's codes: (\S+) \(.*, encoded now\)$", first.stdout, re.M)[1]
    assert os.path.dirname(folder) == str(tmp_path / "ck" / ".text")
    resume = train("--resume", "r", "--max-steps", "4", *where(tmp_path), capsys=capsys)
    assert resume.returncode == 0, resume.stderr
    assert f"the text's codes: {folder} (" in resume.stdout
    assert "encoded by an earlier run)" in resume.stdout
    assert "reading the text: counting" not in resume.stdout  # known by its content
    assert "reading the text: encoding" not in resume.stdout
