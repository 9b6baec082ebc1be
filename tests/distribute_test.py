"""rnn_train.py --strategy: data-parallel training with tf.distribute computes what one
process computes. MirroredStrategy over 2 logical CPU devices in one process, and
MultiWorkerMirroredStrategy as 2 worker processes on 127.0.0.1, against a plain run
of the same global batch; and a worker killed mid-run."""

import glob
import json
import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import rnn_train
from charrnn import cli
from conftest import (
    HERE,
    TINY,
    cache_env,
    run_cli,
    run_clis,
    run_main,
    where,
    without_cache_noise,
    write_corpus,
)

pytestmark = pytest.mark.slow

# float32 (bfloat16 rounds differently for different batch shapes), dropout and
# clipping on: the masks and the clipped gradient must be the whole batch's
EXACT = [
    *TINY,
    "--no-mixed-precision",
    "--dropout",
    "0.3",
    "--dropout-from-epoch",
    "0",
    "--clip-norm",
    "0.5",
    "--save-every",
    "10",
    "--sample-every",
    "1000",
]


def on_one_file(root, *flags, lines=400):
    """Write a one-file corpus under root; return rnn_train.py's flags to train on it
    with these flags, no validation, and the checkpoints and logs under root too."""
    corpus = write_corpus(str(root / "corpus"), files=1, lines=lines)
    return ["--data", corpus, "--validation", "none", *flags, *where(root)]


def workers(args, n=2, chief_preexec=None, own=None):
    """Start n rnn_train.py --strategy multiworker processes on 127.0.0.1; returns them.
    chief_preexec: run in the chief's process (worker 0) before it starts; the chief
    then goes without the XLA cache, whose writes a limit set there would refuse.
    own: each worker's own flags besides args (a list of n lists)."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in cli.free_ports(n)]}
    procs = []
    for i in range(n):
        task = {"cluster": cluster, "task": {"type": "worker", "index": i}}
        env = dict(os.environ, TF_CONFIG=json.dumps(task))
        env = env if i == 0 and chief_preexec else cache_env(env)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    os.path.join(HERE, "rnn_train.py"),
                    *args,
                    *(own[i] if own else []),
                    "--strategy",
                    "multiworker",
                    "--collective-timeout",
                    "20",
                ],
                env=env,
                preexec_fn=chief_preexec if i == 0 else None,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def finish(procs, timeout=240):
    """[(stdout, stderr, exit status)] of each process, once it ended."""
    results = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        results.append((out, without_cache_noise(err), p.returncode))
    return results


def assert_same_checkpoint(a, b, atol=1e-5, rtol=0.0):
    """Every weight, Adam moment and the RNN state of every batch row."""
    a, b = tf.train.load_checkpoint(str(a)), tf.train.load_checkpoint(str(b))
    skip = ("config", "save", "_", "log")  # the log's figures hold timings
    keys = [k for k in a.get_variable_to_shape_map() if not k.startswith(skip)]
    assert "state/.ATTRIBUTES/VARIABLE_VALUE" in keys
    for key in keys:
        np.testing.assert_allclose(
            a.get_tensor(key), b.get_tensor(key), rtol=rtol, atol=atol, err_msg=key
        )
    state = a.get_tensor("state/.ATTRIBUTES/VARIABLE_VALUE")
    assert np.abs(state).min(axis=1).max() > 0  # every row has a state of its own
    return len(keys)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The reference: 30 steps of the tiny model in one plain process."""
    root = tmp_path_factory.mktemp("plain")
    common = on_one_file(root, *EXACT)
    result = run_cli("rnn_train.py", *common, "--run", "plain", "--max-steps", "30")
    assert result.returncode == 0, result.stderr
    return {"root": root, "common": common, "ck": root / "ck"}


def test_mirrored_over_two_cpu_devices_equals_one_process(plain):
    result = run_cli(
        "rnn_train.py",
        *plain["common"],
        "--run",
        "mirrored",
        "--max-steps",
        "30",
        "--strategy",
        "mirrored",
        "--cpu-replicas",
        "2",
    )
    assert result.returncode == 0, result.stderr
    assert "2 replicas" in result.stdout
    # the state of every row, checkpointed at steps 10, 20 and 30, and the weights
    for step in (10, 20, 30):
        assert_same_checkpoint(
            plain["ck"] / "plain" / f"ckpt-{step}", plain["ck"] / "mirrored" / f"ckpt-{step}"
        )


def test_fine_tuning_under_mirrored_equals_one_process(plain, tmp_path):
    """--init-from under --strategy: the parent's weights, grown to the new text's
    alphabet, reach every replica, and the fine-tuning trains as in one process."""
    corpus = tmp_path / "ru"
    corpus.mkdir()
    english = (plain["root"] / "corpus" / "part0.txt").read_text()
    (corpus / "a.txt").write_text(english + "ДЖУЛЬЕТТА: луна.\n" * 40)
    parent = str(plain["ck"] / "plain")
    common = ["--data", str(corpus), "--validation", "none", *EXACT, "--init-from", parent]
    common += ["--max-steps", "10", *where(tmp_path)]
    one, mirrored = run_clis(
        ("rnn_train.py", *common, "--run", "one"),
        ("rnn_train.py", *common, "--run", "two", "--strategy", "mirrored", "--cpu-replicas", "2"),
    )
    assert one.returncode == 0, one.stderr
    assert mirrored.returncode == 0, mirrored.stderr
    assert f"new, fine-tuning {parent}" in mirrored.stdout and "2 replicas" in mirrored.stdout
    assert "the talk's 98 + 12 from the text" in mirrored.stdout, mirrored.stdout
    # A trained parent's weights are larger than a new model's, and so are the float32
    # differences of summing the replicas' gradients in another order: on a CPU
    # without AVX-512 (2026-12-02) 3 of 3,072 weights of ~0.2 differed by 1.1e-5.
    assert_same_checkpoint(
        tmp_path / "ck" / "one" / "ckpt-10", tmp_path / "ck" / "two" / "ckpt-10", rtol=1e-4
    )


def test_two_workers_equal_one_process_and_only_the_chief_writes(plain):
    args = [*plain["common"], "--run", "multi", "--max-steps", "30"]
    (out0, err0, rc0), (out1, err1, rc1) = finish(workers(args))
    assert rc0 == 0, err0
    assert rc1 == 0, err1
    assert "2 replicas" in out0 and out1 == ""  # one voice: the chief's
    for step in (10, 20, 30):
        assert_same_checkpoint(
            plain["ck"] / "plain" / f"ckpt-{step}", plain["ck"] / "multi" / f"ckpt-{step}"
        )
    # one set of TensorBoard logs, written once
    events = [f for _, _, files in os.walk(plain["root"] / "log" / "multi") for f in files]
    assert len(events) == 1


def test_a_killed_worker_stops_the_others_and_resume_continues(tmp_path):
    args = on_one_file(
        tmp_path, *TINY, "--save-every", "20", "--sample-every", "100000", "--run", "k", lines=4000
    )
    chief, other = workers(args)
    ck = tmp_path / "ck" / "k"
    deadline = time.monotonic() + 120
    while not (ck.exists() and any(n.endswith(".index") for n in os.listdir(ck))):
        assert time.monotonic() < deadline and chief.poll() is None, "no checkpoint in time"
        time.sleep(0.2)
    other.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    err = without_cache_noise(chief.communicate(timeout=90)[1])
    other.communicate()
    assert time.monotonic() - killed_at < 60  # no hang
    assert chief.returncode == 1
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("rnn_train.py: error: lost contact with another worker"), err
    assert "--resume k" in last
    saved = max(int(n[5:-6]) for n in os.listdir(ck) if n.endswith(".index"))
    assert f"checkpoint is at step {saved}" in last
    # the same two workers continue from there...
    again = workers(["--resume", "k", "--max-steps", str(saved + 20), *where(tmp_path)])
    (out0, err0, rc0), (_, err1, rc1) = finish(again)
    assert rc0 == rc1 == 0, err0 + err1
    assert f"resuming at step {saved}" in out0
    # ...and so does a plain process, one replica instead of two
    result = run_cli(
        "rnn_train.py", "--resume", "k", "--max-steps", str(saved + 40), *where(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert f"resuming at step {saved + 20}" in result.stdout
    assert os.path.exists(ck / f"ckpt-{saved + 40}.index")


def test_distribution_misuse_gets_one_line(tmp_path, monkeypatch, capsys):
    """Each in this process (run_main), as they fail before TensorFlow's devices are
    touched, but a batch that does not split over 3 CPU replicas: that is found once
    they are made, which a process does once, so it runs as a program of its own."""
    common = on_one_file(tmp_path, *TINY, "--max-steps", "2")
    no_task = json.dumps({"cluster": {"worker": ["localhost:1"]}})
    past_end = json.dumps(
        {"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 1}}
    )
    cases = [
        (["--strategy", "multiworker"], None, "TF_CONFIG"),
        (["--strategy", "multiworker"], "{cluster", "TF_CONFIG"),
        (["--strategy", "multiworker"], no_task, '"task"'),
        (["--strategy", "multiworker"], past_end, '"task"'),
        (["--strategy", "mirrored", "--cpu-replicas", str(10**12)], None, "1 to 1024"),
    ]
    results = []
    for args, tf_config, _ in cases:
        if tf_config is None:
            monkeypatch.delenv("TF_CONFIG", raising=False)
        else:
            monkeypatch.setenv("TF_CONFIG", tf_config)
        results.append(run_main(rnn_train.main, *common, *args, capsys=capsys))
    monkeypatch.delenv("TF_CONFIG", raising=False)
    uneven = ["--strategy", "mirrored", "--cpu-replicas", "3"]
    cases.append((uneven, None, "does not split evenly"))
    results.append(run_cli("rnn_train.py", *common, *uneven, timeout=120))
    for (args, _, expected), result in zip(cases, results, strict=True):
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (args, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("rnn_train.py: error:"), (args, lines)
        assert expected in lines[0], (args, lines)


def test_a_signal_to_one_worker_stops_every_worker_after_the_same_step(tmp_path):
    """Ctrl-C to the worker that is not the chief: both stop after the same step, the
    chief saves one checkpoint there, and both exit 130 (128 + SIGINT), no traceback."""
    flags = ["--run", "w", "--max-steps", "100000", "--log-every", "1"]
    args = on_one_file(tmp_path, *TINY, *flags, "--sample-every", "100000", lines=3000)
    chief, other = workers(args)
    while not chief.stdout.readline().startswith("step "):  # training is under way
        assert chief.poll() is None, chief.stderr.read()
    other.send_signal(signal.SIGINT)
    results = finish([chief, other])
    saved = glob.glob(str(tmp_path / "ck" / "w" / "ckpt-*.index"))
    assert len(saved) == 1, saved
    step = int(saved[0].rsplit("-", 1)[1].removesuffix(".index"))
    for _, err, status in results:
        assert status == 130, err
        assert "Traceback" not in err
        assert f"stopped at step {step}: checkpoint saved" in err, err


@pytest.mark.parametrize("edit", ["a line more", "a new letter"])
def test_workers_that_read_other_text_refuse_before_the_first_step(tmp_path, edit):
    """Each worker reads its own copy of the text: one that differs (an edited file
    here, its length the same or not, or another alphabet) is refused on every worker,
    in one line naming what differs, before any step or folder."""
    copies = [write_corpus(str(tmp_path / f"copy{i}"), files=2) for i in range(2)]
    with open(os.path.join(copies[1], "part1.txt"), "a") as f:
        f.write("ROMEO: the moon sees juliet.\n" if edit == "a line more" else "жж")
    args = ["--validation", "none", *TINY, "--run", "d", "--max-steps", "5", *where(tmp_path)]
    results = finish(workers(args, own=[["--data", c] for c in copies]), timeout=120)
    differ = "files and alphabet and lengths" if edit != "a line more" else "files and lengths"
    for out, err, status in results:
        assert status == 2, err
        [line] = err.splitlines()
        assert line == (
            f"rnn_train.py: error: the workers do not read the same text: their {differ} "
            "differ; give every worker the same files (and flags)"
        )
        assert "step" not in out
    assert not (tmp_path / "ck" / "d").exists()


def test_a_failed_last_save_fails_every_worker_alike(tmp_path):
    """The chief's last save fails (a full disk: a file-size limit on the chief alone):
    every worker learns it, and all exit 1 with the same line, none waiting for another,
    the checkpoint before intact."""
    args = on_one_file(tmp_path, *TINY, "--sample-every", "100000", "--run", "f")
    assert run_cli("rnn_train.py", *args, "--max-steps", "10").returncode == 0
    saved = {p: p.read_bytes() for p in (tmp_path / "ck" / "f").glob("ckpt-*")}

    def full_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a dead process

    procs = workers([*args, "--resume", "f", "--max-steps", "20"], chief_preexec=full_disk)
    try:
        results = finish(procs, timeout=120)
    finally:
        for p in procs:
            p.kill()
    line = "rnn_train.py: error: the last 10 steps could not be saved; free some space"
    for _, err, status in results:
        assert status == 1, err
        assert "lost contact" not in err and "Traceback" not in err, err
        assert [x for x in err.splitlines() if "could not be saved" in x] == [
            f"{line} and --resume f from step 10"
        ], err
    assert saved and {p: p.read_bytes() for p in saved} == saved


# Two workers ask stop_together what the loop asks after every step, each with its own
# reason and its own clock's share of --time-limit (argv: reason, share)
ASK = """
import sys, types
sys.path.insert(0, sys.argv[3])
from charrnn.distribute import Distribution, make_strategy
flags = types.SimpleNamespace(strategy="multiworker", collective_timeout=20)
dist = Distribution(make_strategy(flags))
print(*dist.stop_together(int(sys.argv[1]), float(sys.argv[2])), dist.chief)
"""


@pytest.mark.parametrize("chief", ["worker", "chief"])
def test_every_worker_follows_the_chiefs_clock_and_the_strongest_reason(chief):
    """The share of the time limit used sets each step's learning rate (the cosine,
    the warm-up, auto's peak): on every worker it must be the chief's, or workers
    whose clocks started apart would apply different rates and their weights drift
    apart. The strongest reason to stop is every worker's. chief: the chief's task,
    worker 0 or a "chief" task of its own."""
    ports = cli.free_ports(2)
    if chief == "worker":
        cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
        tasks = [("worker", 0), ("worker", 1)]
    else:
        cluster = {"chief": [f"127.0.0.1:{ports[0]}"], "worker": [f"127.0.0.1:{ports[1]}"]}
        tasks = [("chief", 0), ("worker", 0)]
    procs = []
    for (kind, index), (reason, share) in zip(tasks, [(0, 0.25), (2, 0.75)], strict=True):
        task = {"cluster": cluster, "task": {"type": kind, "index": index}}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", ASK, str(reason), str(share), HERE],
                env=dict(os.environ, TF_CONFIG=json.dumps(task)),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    answers = []
    for out, err, status in finish(procs, timeout=120):
        assert status == 0, err
        answers.append(out.split())
    assert answers == [["2", "0.25", "True"], ["2", "0.25", "False"]]


def test_the_time_limit_is_the_chiefs(tmp_path):
    """A worker's own --time-limit does not stop the run: the chief's clock does, the
    one its learning rates follow, so the schedule ends where the run does."""
    args = on_one_file(tmp_path, *TINY, "--run", "t", "--max-steps", "60", "--save-every", "60")
    own = [[], ["--time-limit", "0.001"]]  # the other worker's limit: gone at once
    results = finish(workers(args, own=own))
    for _, err, status in results:
        assert status == 0, err
    assert os.path.exists(tmp_path / "ck" / "t" / "ckpt-60.index")  # all 60 steps
