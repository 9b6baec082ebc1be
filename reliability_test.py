"""Training survives kills, damaged checkpoints, divergence, full disks and a second
writer; each test tries to break one promise of the README's "What survives what"."""

import glob
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import ckpt
from conftest import FIXED_SCHEDULE, HERE, TINY, run_cli, write_corpus

TRAIN = [sys.executable, os.path.join(HERE, "rnn_train.py")]


def logged_steps(folder, tag="loss"):
    """Every step logged under tag, in file order, duplicates kept (TensorBoard's own
    reader with its purging of "orphaned" steps turned off, so it hides nothing)."""
    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0}, purge_orphaned_data=False)
    acc.Reload()
    return [e.step for e in acc.Tensors(tag)] if tag in acc.Tags()["tensors"] else []


def step_of(prefix):
    return int(prefix.rsplit("-", 1)[1])


def test_kill_9_at_random_moments(tmp_path):
    """SIGKILL 20 times at random moments (seeded), a third of them aimed at a
    checkpoint being written: every checkpoint left is readable, each restart resumes
    from the newest one, the run ends with all its steps, and the log holds every
    step once."""
    rng = random.Random(20261127)
    corpus = write_corpus(str(tmp_path / "corpus"), files=1, lines=3000)
    run_dir = tmp_path / "ck" / "r"
    dirs = ["--checkpoint-dir", str(tmp_path / "ck"), "--log-dir", str(tmp_path / "log")]
    total = 1000
    first = [
        "--data",
        corpus,
        "--validation",
        "none",
        "--run",
        "r",
        *TINY,
        "--cell-size",
        "256",
        "--save-every",
        "3",
        "--log-every",
        "3",
        "--sample-every",
        "100000",
        "--max-steps",
        str(total),
        *dirs,
    ]
    kills = during_save = resumes_checked = 0
    while kills < 20:
        newest = ckpt.newest_in(str(run_dir))
        args = ["--resume", "r", *dirs] if newest else first
        proc = subprocess.Popen(
            [*TRAIN, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        if kills % 3 == 2:  # aim at a save: kill as soon as a partial one shows
            deadline = time.monotonic() + 20
            while (
                time.monotonic() < deadline
                and proc.poll() is None
                and not glob.glob(str(run_dir / "ckpt-*_temp"))
            ):
                time.sleep(0.0005)
        else:
            time.sleep(rng.uniform(0.5, 6.0))
        if proc.poll() is not None:  # finished before the kill: too few steps asked
            break
        proc.kill()
        out, _ = proc.communicate()
        kills += 1
        during_save += bool(glob.glob(str(run_dir / "ckpt-*_temp")))
        # no checkpoint is ever unreadable
        for prefix in ckpt.all_in(str(run_dir)):
            ckpt.verify(prefix)
        # the restart resumed from the newest complete checkpoint
        m = re.search(r"resuming at step (\d+)", out)
        if newest and m:
            assert int(m[1]) == step_of(newest)
            resumes_checked += 1
    assert kills == 20, f"the run finished after {kills} kills: ask for more steps"
    assert during_save >= 2, during_save
    assert resumes_checked >= 5, resumes_checked

    final = run_cli("rnn_train.py", "--resume", "r", *dirs)
    assert final.returncode == 0, final.stderr
    assert f"done: step {total}" in final.stdout
    steps = logged_steps(tmp_path / "log" / "r" / "training")
    assert len(steps) == len(set(steps)), "a step was logged twice"
    assert steps == sorted(steps) and steps[-1] == total


def test_deterministic_resume_is_bit_exact(tmp_path):
    """With --deterministic and dropout on: 30 steps, a stop, 30 more after --resume
    give exactly the weights, optimizer state and loss curve of 60 steps in one go."""
    corpus = write_corpus(str(tmp_path / "corpus"), files=1)
    dirs = ["--checkpoint-dir", str(tmp_path / "ck"), "--log-dir", str(tmp_path / "log")]
    common = [
        "--data",
        corpus,
        "--validation",
        "none",
        *TINY,
        *FIXED_SCHEDULE,
        "--deterministic",
        "--dropout",
        "0.3",
        "--log-every",
        "5",
        "--sample-every",
        "1000",
        *dirs,
    ]
    whole = run_cli("rnn_train.py", *common, "--run", "whole", "--max-steps", "60")
    half = run_cli("rnn_train.py", *common, "--run", "split", "--max-steps", "30")
    rest = run_cli("rnn_train.py", "--resume", "split", "--max-steps", "60", *dirs)
    for result in (whole, half, rest):
        assert result.returncode == 0, result.stderr
    a = tf.train.load_checkpoint(str(tmp_path / "ck" / "whole" / "ckpt-60"))
    b = tf.train.load_checkpoint(str(tmp_path / "ck" / "split" / "ckpt-60"))
    keys = [k for k in a.get_variable_to_shape_map() if not k.startswith(("config", "save", "_"))]
    assert len(keys) == 28  # 8 weights, 16 Adam moments, its step and rate, RNN state, step
    for key in keys:
        np.testing.assert_array_equal(a.get_tensor(key), b.get_tensor(key), err_msg=key)

    def curve(run):
        acc = EventAccumulator(
            str(tmp_path / "log" / run / "training"),
            size_guidance={"tensors": 0},
            purge_orphaned_data=False,
        )
        acc.Reload()
        return [(e.step, tf.make_ndarray(e.tensor_proto).item()) for e in acc.Tensors("loss")]

    assert curve("whole") == curve("split")
    assert len(curve("whole")) == 12


def trained_run(tmp_path, steps=30, save_every=10):
    corpus = write_corpus(str(tmp_path / "corpus"), files=1)
    dirs = ["--checkpoint-dir", str(tmp_path / "ck"), "--log-dir", str(tmp_path / "log")]
    result = run_cli(
        "rnn_train.py",
        "--data",
        corpus,
        "--validation",
        "none",
        "--run",
        "r",
        *TINY,
        "--save-every",
        str(save_every),
        "--sample-every",
        "1000",
        "--max-steps",
        str(steps),
        *dirs,
    )
    assert result.returncode == 0, result.stderr
    return tmp_path / "ck" / "r", dirs


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def scribble(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 3)
        f.write(os.urandom(64))


def empty(path):
    open(path, "wb").close()


def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning(tmp_path):
    run_dir, dirs = trained_run(tmp_path)
    pristine = tmp_path / "pristine"
    shutil.copytree(run_dir, pristine)
    damages = [
        (truncate, ".data-00000-of-00001"),
        (scribble, ".data-00000-of-00001"),
        (empty, ".index"),
        (scribble, ".index"),
    ]
    for damage, suffix in damages:
        shutil.rmtree(run_dir)
        shutil.copytree(pristine, run_dir)
        damage(str(run_dir / ("ckpt-30" + suffix)))
        played = run_cli("rnn_play.py", "r", "--length", "20", "--seed", "1", *dirs[:2])
        assert played.returncode == 0, (damage.__name__, suffix, played.stderr)
        assert "ckpt-30 is damaged" in played.stderr, (damage.__name__, suffix, played.stderr)
        assert "falling back" in played.stderr
        assert len(played.stdout) == 1 + 20 + 1
    # resuming falls back too, and goes on from the checkpoint before
    resumed = run_cli("rnn_train.py", "--resume", "r", "--max-steps", "40", *dirs)
    assert resumed.returncode == 0, resumed.stderr
    assert "ckpt-30 is damaged" in resumed.stderr
    assert "resuming at step 20" in resumed.stdout
    ckpt.verify(str(run_dir / "ckpt-40"))
    # with every checkpoint damaged: one clear line
    for prefix in ckpt.all_in(str(run_dir)):
        truncate(prefix + ".data-00000-of-00001")
    for script, args in (
        ("rnn_play.py", ["r", *dirs[:2]]),
        ("rnn_train.py", ["--resume", "r", *dirs]),
    ):
        result = run_cli(script, *args)
        errors = [line for line in result.stderr.splitlines() if not line.startswith("warning")]
        assert result.returncode == 2, result.stderr
        assert len(errors) == 1 and "every checkpoint in" in errors[0], result.stderr


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    """A learning rate of 1e38 overflows the weights at once: training stops naming the
    step, suggests a lower rate, and the newest checkpoint holds finite weights."""
    corpus = write_corpus(str(tmp_path / "corpus"), files=1)
    dirs = ["--checkpoint-dir", str(tmp_path / "ck"), "--log-dir", str(tmp_path / "log")]
    result = run_cli(
        "rnn_train.py",
        "--data",
        corpus,
        "--validation",
        "none",
        "--run",
        "r",
        *TINY,
        "--learning-rate",
        "1e38",
        "--save-every",
        "1",
        *dirs,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1
    assert len(lines) == 1 and "diverged" in lines[0] and "--learning-rate" in lines[0], lines
    step = int(re.search(r"at step (\d+)", lines[0])[1])
    newest = ckpt.newest_in(str(tmp_path / "ck" / "r"))
    assert step_of(newest) == step - 1
    reader = tf.train.load_checkpoint(newest)
    for key in reader.get_variable_to_shape_map():
        value = reader.get_tensor(key)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.isfinite(value).all(), key


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_a_full_disk_loses_no_checkpoint(tmp_path):
    """Saves that fail (simulated with a file-size limit, so the OS refuses the writes
    as a full disk would): a warning for each, training goes on, the run ends with a
    clear error, every earlier checkpoint is intact, and a later resume works."""
    run_dir, dirs = trained_run(tmp_path, steps=20)
    before = {p: read(p) for p in glob.glob(str(run_dir / "ckpt-*"))}

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a dead process

    result = subprocess.run(
        [*TRAIN, "--resume", "r", "--max-steps", "40", *dirs],
        preexec_fn=small_files,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "could not save a checkpoint at step 30 (File too large)" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("rnn_train.py: error: the last 20")
    after = {p: read(p) for p in glob.glob(str(run_dir / "ckpt-*")) if not p.endswith("_temp")}
    assert after == before
    again = run_cli("rnn_train.py", "--resume", "r", "--max-steps", "40", *dirs)
    assert again.returncode == 0, again.stderr
    assert "resuming at step 20" in again.stdout
    assert not glob.glob(str(run_dir / "ckpt-*_temp"))  # the pieces of failed saves are gone


def test_one_writer_per_run_and_no_stuck_lock(tmp_path):
    _, dirs = trained_run(tmp_path, steps=10)
    first = subprocess.Popen(
        [*TRAIN, "--resume", "r", "--max-steps", "1000000", *dirs],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        for line in first.stdout:
            if line.startswith("step"):
                break
        second = run_cli("rnn_train.py", "--resume", "r", *dirs)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2
        assert len(lines) == 1 and "being trained by another process" in lines[0], lines
        assert f"pid {first.pid}" in lines[0]
    finally:
        first.kill()
        first.wait()
    third = run_cli("rnn_train.py", "--resume", "r", "--max-steps", "20", *dirs)
    assert third.returncode == 0, third.stderr


def test_an_unwritable_checkpoint_folder_is_one_clear_line(tmp_path):
    corpus = write_corpus(str(tmp_path / "corpus"), files=1)
    (tmp_path / "a-file").write_text("not a folder")
    result = run_cli(
        "rnn_train.py",
        "--data",
        corpus,
        *TINY,
        "--checkpoint-dir",
        str(tmp_path / "a-file" / "ck"),
        "--log-dir",
        str(tmp_path / "log"),
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert len(lines) == 1 and "cannot write in" in lines[0], lines
