"""What `make train` runs before training (make -n: the commands, none run)."""

import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def commands(target, args):
    result = subprocess.run(
        ["make", "-n", target, f"ARGS={args}"], cwd=HERE, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
@pytest.mark.parametrize(
    "args, fetches",
    [
        ("", True),  # the default text: Shakespeare
        ("--epochs 1", True),
        ("--data 'mine/*.txt'", False),  # your own text trains offline
        ("--resume", False),  # the run's checkpoint names its text
        ("--resume mine --epochs 12", False),
        ("--init-from mine:best --run again", False),  # the parent's text, unless --data
    ],
)
def test_make_train_fetches_shakespeare_only_when_it_is_the_text(args, fetches):
    out = commands("train", args)
    assert "rnn_train.py" in out
    assert ("fetch_corpus.py shakespeare" in out) == fetches
