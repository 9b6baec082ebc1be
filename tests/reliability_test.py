"""Training survives kills, damaged checkpoints, divergence, full disks and a second
writer; each test tries to break one promise of docs/reliability.md ("What survives what")."""

import glob
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import charrnn.corpus
import rnn_train
from charrnn import ckpt, runs
from charrnn.model import loss_and_accuracy
from conftest import (
    FIXED_SCHEDULE,
    HERE,
    TINY,
    cache_env,
    run_cli,
    run_clis,
    session_folder,
    tiny_flags,
    where,
    write_corpus,
)

TRAIN = [sys.executable, os.path.join(HERE, "rnn_train.py")]


def logged_steps(folder, tag="loss"):
    """Every step logged under tag, in file order, duplicates kept (TensorBoard's own
    reader with its purging of "orphaned" steps turned off, so it hides nothing)."""
    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0}, purge_orphaned_data=False)
    acc.Reload()
    return [e.step for e in acc.Tensors(tag)] if tag in acc.Tags()["tensors"] else []


def partial_saves_since(run_dir, t_ns):
    """Whether a save begun at or after t_ns (time.time_ns) is in run_dir, unfinished.
    The pieces of a save killed earlier are no such thing: a restart deletes them, and
    a save of the same step may then recreate the same folder name."""
    for partial in glob.glob(str(run_dir / "ckpt-*_temp")):
        try:
            if os.stat(partial).st_mtime_ns >= t_ns:
                return True
        except FileNotFoundError:  # deleted as we looked
            pass
    return False


def wait_for_partial_save(proc, run_dir, t_ns, shows=True):
    """Poll, every half millisecond (a save lasts tens of them), until
    partial_saves_since(run_dir, t_ns) is `shows`, proc has ended, or 20 s have passed."""
    deadline = time.monotonic() + 20
    while (
        partial_saves_since(run_dir, t_ns) != shows
        and proc.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.0005)


def step_of(prefix):
    return int(prefix.rsplit("-", 1)[1])


class Output:
    """A process's stdout read as it comes, in a thread: its lines, when the first came
    (time.monotonic), and events set at its first line and at its first progress line
    (both also at its end)."""

    def __init__(self, proc):
        self.lines, self.first_at = [], None
        self.first, self.training = threading.Event(), threading.Event()
        self.stdout = proc.stdout
        self.reader = threading.Thread(target=self.read)
        self.reader.start()

    def read(self):
        for line in self.stdout:
            if not self.lines:
                self.first_at = time.monotonic()
                self.first.set()
            self.lines.append(line)
            if line.startswith("step"):
                self.training.set()
        self.first.set()
        self.training.set()

    def text(self):
        """All of it, once the process has ended."""
        self.reader.join()
        self.stdout.close()
        return "".join(self.lines)


def wait_for_a_save(proc, output, run_dir, started_ns):
    """Until a partial save shows, after the first save of the restart has completed,
    so that the run goes on. A save follows a progress line (both every 3 steps):
    polling before the first would only slow the program down."""
    output.training.wait(timeout=120)
    for shows in (True, False, True):  # a save, its end, the next save
        wait_for_partial_save(proc, run_dir, started_ns, shows)


def wait_for_a_random_moment(output, started, startup, rng):
    """Until a random moment of a restart's life up to 2 s past its first line (by then
    it holds the lock and has restored the checkpoint; compiling follows). Before that
    line, timed from the start, the last restart's start-up taken as its length; after
    it, from the line itself: as many land after it on a slow or busy machine as on a
    fast one."""
    moment = rng.uniform(0.5, startup + 2)
    if moment > startup:
        output.first.wait(timeout=120)
        time.sleep(moment - startup)
    else:
        time.sleep(max(0, started + moment - time.monotonic()))


def test_kill_9_at_random_moments(tmp_path):
    """SIGKILL 20 times at random moments (seeded), a third of them aimed at a
    checkpoint being written: every checkpoint left is readable, each restart resumes
    from the newest one, the run ends with all its steps, and the log holds every
    step once."""
    rng = random.Random(20261127)
    corpus = write_corpus(str(tmp_path / "corpus"), files=1, lines=3000)
    run_dir = tmp_path / "ck" / "r"
    dirs = where(tmp_path)
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
    startup = 4.0  # seconds to the first line, until a restart shows it here
    kills = during_save = resumes_checked = 0
    while kills < 20:
        newest = runs.newest_in(str(run_dir))
        args = ["--resume", "r", *dirs] if newest else first
        started, started_ns = time.monotonic(), time.time_ns()
        proc = subprocess.Popen(
            [*TRAIN, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=cache_env(),
        )
        output = Output(proc)
        if kills % 3 == 2:
            wait_for_a_save(proc, output, run_dir, started_ns)
        else:
            wait_for_a_random_moment(output, started, startup, rng)
        if proc.poll() is not None:  # finished before the kill: too few steps asked
            break
        proc.kill()
        proc.wait()
        out = output.text()
        kills += 1
        if output.first_at:
            startup = output.first_at - started
        during_save += partial_saves_since(run_dir, started_ns)
        # no checkpoint is ever unreadable
        for prefix in runs.all_in(str(run_dir)):
            ckpt.verify(prefix)
        # the restart resumed from the newest complete checkpoint
        m = re.search(r"resuming at step (\d+)", out)
        if newest and m:
            assert int(m[1]) == step_of(newest)
            resumes_checked += 1
    assert kills == 20, f"the run finished after {kills} kills: ask for more steps"
    assert during_save >= 2, during_save
    assert resumes_checked >= 5, resumes_checked

    # The last restart trains to the end, moved to a few saves past the newest
    # checkpoint: the total asked is there so that no kill comes after the end, and
    # training all of it would take minutes.
    end = step_of(runs.newest_in(str(run_dir))) + 9
    final = run_cli("rnn_train.py", "--resume", "r", "--max-steps", str(end), *dirs)
    assert final.returncode == 0, final.stderr
    assert f"done: step {end}" in final.stdout
    steps = logged_steps(tmp_path / "log" / "r" / "training")
    assert len(steps) == len(set(steps)), "a step was logged twice"
    assert steps == sorted(steps) and steps[-1] == end


def test_deterministic_resume_is_bit_exact(tmp_path):
    """With --deterministic and dropout on: 30 steps, a stop, 30 more after --resume
    give exactly the weights, optimizer state and loss curve of 60 steps in one go."""
    corpus = write_corpus(str(tmp_path / "corpus"), files=1)
    dirs = where(tmp_path)
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
    whole, half = run_clis(
        ("rnn_train.py", *common, "--run", "whole", "--max-steps", "60"),
        ("rnn_train.py", *common, "--run", "split", "--max-steps", "30"),
    )
    rest = run_cli("rnn_train.py", "--resume", "split", "--max-steps", "60", *dirs)
    for result in (whole, half, rest):
        assert result.returncode == 0, result.stderr
    a = tf.train.load_checkpoint(str(tmp_path / "ck" / "whole" / "ckpt-60"))
    b = tf.train.load_checkpoint(str(tmp_path / "ck" / "split" / "ckpt-60"))
    skip = ("config", "save", "_", "log")  # the log's figures hold timings
    keys = [k for k in a.get_variable_to_shape_map() if not k.startswith(skip)]
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


_trained = {}  # (steps, save_every): the folder of a run trained once for the session


def trained_run(tmp_path, steps=20, save_every=10):
    """Run "r" trained for steps, saved every save_every, in tmp_path (corpus, ck and
    log); returns its checkpoint folder and the --checkpoint-dir and --log-dir flags.
    Trained once a session and copied for each test, which may damage or extend its
    copy (whose config names the first corpus: the same text)."""
    if (steps, save_every) not in _trained:
        root = session_folder(f"trained-{steps}-{save_every}")
        corpus = write_corpus(str(root / "corpus"), files=1)
        dirs = where(root)
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
        _trained[steps, save_every] = root
    for name in ("corpus", "ck", "log"):
        shutil.copytree(_trained[steps, save_every] / name, tmp_path / name)
    dirs = where(tmp_path)
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
    damages = [
        (truncate, ".data-00000-of-00001"),
        (scribble, ".data-00000-of-00001"),
        (empty, ".index"),
        (scribble, ".index"),
    ]
    # Each case in a copy of the run of its own, so that all run together: rnn_play.py
    # with each damage, --resume with the last, and both with every checkpoint damaged.
    plays = []
    for i, (damage, suffix) in enumerate(damages):
        copy = tmp_path / f"damaged-{i}"
        shutil.copytree(run_dir, copy / "r")
        damage(str(copy / "r" / ("ckpt-20" + suffix)))
        plays.append(
            ("rnn_play.py", "r", "--length", "20", "--seed", "1", "--checkpoint-dir", copy)
        )
    damage, suffix = damages[-1]
    damage(str(run_dir / ("ckpt-20" + suffix)))
    ruined = ["--checkpoint-dir", str(tmp_path / "ruined"), "--log-dir", str(tmp_path / "log2")]
    shutil.copytree(run_dir, tmp_path / "ruined" / "r")
    shutil.copytree(tmp_path / "log", tmp_path / "log2")
    for prefix in runs.all_in(str(tmp_path / "ruined" / "r")):
        truncate(prefix + ".data-00000-of-00001")
    resumed, *played, ruined_play, ruined_resume = run_clis(
        ("rnn_train.py", "--resume", "r", "--max-steps", "30", *dirs),  # the longest first
        *plays,
        ("rnn_play.py", "r", *ruined[:2]),
        ("rnn_train.py", "--resume", "r", *ruined),
    )
    for (damage, suffix), result in zip(damages, played, strict=True):
        assert result.returncode == 0, (damage.__name__, suffix, result.stderr)
        assert "ckpt-20 is damaged" in result.stderr, (damage.__name__, suffix, result.stderr)
        assert "falling back" in result.stderr
        assert len(result.stdout) == 1 + 20 + 1
    # resuming falls back too, and goes on from the checkpoint before
    assert resumed.returncode == 0, resumed.stderr
    assert "ckpt-20 is damaged" in resumed.stderr
    assert "resuming at step 10" in resumed.stdout
    ckpt.verify(str(run_dir / "ckpt-30"))
    # with every checkpoint damaged: one clear line
    for result in (ruined_play, ruined_resume):
        errors = [line for line in result.stderr.splitlines() if not line.startswith("warning")]
        assert result.returncode == 2, result.stderr
        assert len(errors) == 1 and "every checkpoint in" in errors[0], result.stderr


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
    assert not glob.glob(str(run_dir / "ckpt-*_temp"))  # no pieces left to fill the disk
    after = {p: read(p) for p in glob.glob(str(run_dir / "ckpt-*"))}
    assert after == before
    again = run_cli("rnn_train.py", "--resume", "r", "--max-steps", "40", *dirs)
    assert again.returncode == 0, again.stderr
    assert "resuming at step 20" in again.stdout
    assert not glob.glob(str(run_dir / "ckpt-*_temp"))  # the pieces of failed saves are gone
    # a new run that could save nothing has nothing to resume: it is started again
    fresh = subprocess.run(
        [
            *TRAIN,
            *tiny_flags(tmp_path, str(tmp_path / "corpus")),
            "--run",
            "new",
            "--max-steps",
            "5",
        ],
        preexec_fn=small_files,
        capture_output=True,
        text=True,
        check=False,
    )
    assert fresh.returncode == 1, fresh.stderr
    assert fresh.stderr.strip().splitlines()[-1] == (
        "rnn_train.py: error: the last 5 steps could not be saved; free some space and "
        "start the run again"
    )


def test_one_writer_per_run_and_no_stuck_lock(tmp_path):
    _, dirs = trained_run(tmp_path)
    first = subprocess.Popen(
        [*TRAIN, "--resume", "r", "--max-steps", "1000000", *dirs],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=cache_env(),
    )
    try:
        # its first line comes once it holds the run's lock (the first thing it takes)
        assert "resuming at step 20" in first.stdout.readline()
        second = run_cli("rnn_train.py", "--resume", "r", *dirs)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2
        assert len(lines) == 1 and "being trained by another process" in lines[0], lines
        assert f"pid {first.pid}" in lines[0]
    finally:
        first.kill()
        first.wait()
    third = run_cli("rnn_train.py", "--resume", "r", "--max-steps", "30", *dirs)
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


def loss_on_a_batch(prefix, corpus):
    """The loss of the checkpoint's weights on the first batch of the corpus."""
    model, config = runs.load_model(prefix)
    codes = np.asarray(charrnn.corpus.read_corpus([corpus], [])[0], dtype=np.int32)
    n = config["batch_size"] * config["seqlen"]
    x, y = (
        codes[:n].reshape(config["batch_size"], -1),
        codes[1 : n + 1].reshape(config["batch_size"], -1),
    )
    logits, _ = model.infer(x, model.zero_state(len(x)))
    return float(loss_and_accuracy(logits, y)[0])


def test_divergence_saves_nothing_that_gives_an_infinite_loss(tmp_path):
    """A learning rate of 1e38 gives weights near 1e38 after one step: finite, yet
    their loss is not. No such checkpoint is saved, from the start of a run or in the
    middle of one, and the advice names a checkpoint whose loss is finite."""
    run_dir, dirs = trained_run(tmp_path, steps=20)
    corpus = str(tmp_path / "corpus")
    blow_up = ["--learning-rate", "1e38", "--warmup", "0", "--save-every", "1"]
    # in the middle of the run, and from the start of another (at the same time: its
    # own folders)
    resumed, fresh = run_clis(
        ("rnn_train.py", "--resume", "r", "--max-steps", "40", *blow_up, *dirs),
        (
            "rnn_train.py",
            "--data",
            corpus,
            "--validation",
            "none",
            "--run",
            "fresh",
            *TINY,
            *blow_up,
            *dirs,
        ),
    )
    lines = resumed.stderr.strip().splitlines()
    assert resumed.returncode == 1
    assert len(lines) == 1 and "diverged" in lines[0] and "--learning-rate" in lines[0], lines
    assert "Nothing was saved after step 20" in lines[0], lines
    newest = runs.newest_in(str(run_dir))
    assert step_of(newest) == 20
    assert np.isfinite(loss_on_a_batch(newest, corpus))

    lines = fresh.stderr.strip().splitlines()
    assert fresh.returncode == 1
    assert len(lines) == 1 and "diverged before any checkpoint" in lines[0], lines
    assert runs.newest_in(str(tmp_path / "ck" / "fresh")) is None


def test_a_signal_during_the_last_save_waits_for_it(tmp_path, monkeypatch, capfd):
    """Ctrl-C while the run's last checkpoint is being written: the save completes,
    and the run exits as a stopped one (130), saying the checkpoint was saved."""
    corpus = write_corpus(str(tmp_path / "corpus"), files=1)
    real_save = tf.train.CheckpointManager.save

    def save_with_a_signal(self, *args, **kwargs):
        if kwargs.get("checkpoint_number") == 12:
            os.kill(os.getpid(), signal.SIGINT)  # arrives while the save is under way
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save_with_a_signal)
    status = rnn_train.main(
        [
            "--data",
            corpus,
            "--validation",
            "none",
            "--run",
            "r",
            *TINY,
            "--max-steps",
            "12",
            *where(tmp_path),
        ]
    )
    err = capfd.readouterr().err
    assert status == 130, err
    assert "stopped at step 12: checkpoint saved" in err
    assert "quit without saving" not in err
    assert step_of(runs.newest_in(str(tmp_path / "ck" / "r"))) == 12


# rnn_train.py, killed (os._exit) on its n-th write of the log, right after the
# checkpoint it follows was saved: before writing anything, or after one figure.
KILLED_AFTER_A_SAVE = """
import os, sys
from charrnn import tf_quiet
from charrnn import tensorboard_log
write_out, calls = tensorboard_log.HeldBackLog.write_out, [0]

def killed_on_the_nth(self):
    calls[0] += 1
    if calls[0] == N:
        if MIDWAY:
            self.pending = self.pending[:1]
            write_out(self)
        os._exit(137)
    write_out(self)

tensorboard_log.HeldBackLog.write_out = killed_on_the_nth
import rnn_train
sys.exit(rnn_train.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("midway", [False, True])
def test_a_kill_between_checkpoint_and_log_loses_no_figure(tmp_path, midway):
    """Killed after saving ckpt-20 and before (or while) writing its figures to the
    log: the resumed run writes them, and the log holds every step exactly once."""
    corpus = write_corpus(str(tmp_path / "corpus"), files=2)
    dirs = where(tmp_path)
    flags = ["--log-every", "5", "--eval-every", "10", "--save-every", "10", "--max-steps", "30"]
    data = ["--data", corpus, "--validation", os.path.join(corpus, "part1.txt")]
    train = [*data, "--run", "r", *TINY, *flags, *dirs]
    code = KILLED_AFTER_A_SAVE.replace("N", "2").replace("MIDWAY", str(midway))
    killed = subprocess.run(
        [sys.executable, "-c", code, *train],
        cwd=HERE,
        capture_output=True,
        text=True,
        check=False,
    )
    assert killed.returncode == 137, killed.stderr
    assert step_of(runs.newest_in(str(tmp_path / "ck" / "r"))) == 20
    resumed = run_cli("rnn_train.py", "--resume", "r", *dirs)
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(r"resuming at step 20", resumed.stdout)
    log = tmp_path / "log" / "r"
    assert logged_steps(log / "training") == list(range(5, 31, 5))
    assert logged_steps(log / "validation") == [10, 20, 30]
