"""Shared test fixtures: a tiny corpus the tests write themselves, and one tiny run
of the real rnn_train.py that several test files read."""

import os
import random
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

# Small enough to train in seconds on 2 cores, big enough to learn something (in 120
# steps: at a constant rate, which a cosine would take down too early).
TINY = [
    "--layers",
    "2",
    "--cell-size",
    "32",
    "--batch-size",
    "4",
    "--seqlen",
    "8",
    "--learning-rate",
    "0.01",
    "--warmup",
    "10",
    "--schedule",
    "constant",
    "--log-every",
    "10",
    "--eval-every",
    "40",
    "--sample-every",
    "60",
    "--save-every",
    "50",
]
# A run extended by --resume --max-steps changes its length, so a cosine schedule or
# --dropout-from would take another path than the run trained in one go: tests of
# exact resumes use these.
FIXED_SCHEDULE = ["--schedule", "constant", "--dropout-from", "0"]


def write_corpus(folder, files=3, lines=400, seed=0):
    """A few files of simple repetitive English: easy to learn, quick to train on."""
    rng = random.Random(seed)
    names = ["ROMEO", "JULIET", "NURSE"]
    verbs = ["loves", "sees", "calls", "follows", "greets"]
    os.makedirs(folder, exist_ok=True)
    for i in range(files):
        with open(os.path.join(folder, f"part{i}.txt"), "w") as f:
            f.writelines(
                f"{rng.choice(names)}: the {rng.choice(['moon', 'sun', 'night'])} "
                f"{rng.choice(verbs)} {rng.choice(names).lower()}.\n"
                for _ in range(lines)
            )
    return folder


def run_cli(script, *args, cwd=None, env=None, timeout=300):
    """Run one of the project's scripts as a user would; returns CompletedProcess.
    env: the environment it gets (default: this one)."""
    return subprocess.run(
        [sys.executable, os.path.join(HERE, script), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Train the tiny model for 120 steps through the real CLI. Returns a dict of paths
    and the CompletedProcess."""
    root = tmp_path_factory.mktemp("tiny")
    corpus = write_corpus(str(root / "corpus"))
    result = run_cli(
        "rnn_train.py",
        "--data",
        os.path.join(corpus, "*.txt"),
        "--validation",
        os.path.join(corpus, "part2.txt"),
        "--max-steps",
        "120",
        "--run",
        "tiny",
        *TINY,
        "--checkpoint-dir",
        str(root / "checkpoints"),
        "--log-dir",
        str(root / "log"),
    )
    assert result.returncode == 0, result.stderr
    return {
        "root": root,
        "corpus": corpus,
        "checkpoints": root / "checkpoints",
        "log": root / "log",
        "result": result,
    }
