"""The real rnn_play.py CLI on the tiny run's checkpoints."""

import glob
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

import ckpt
import txtutils
from conftest import HERE, run_cli
from model import loss_and_accuracy


def play(tiny_run, *args):
    return run_cli("rnn_play.py", *args, "--checkpoint-dir", str(tiny_run["checkpoints"]))


def test_generates_the_asked_length_and_the_same_text_for_one_seed(tiny_run):
    a = play(tiny_run, "--length", "300", "--seed", "7", "--prime", "ROMEO:")
    b = play(tiny_run, "--length", "300", "--seed", "7", "--prime", "ROMEO:")
    c = play(tiny_run, "--length", "300", "--seed", "8", "--prime", "ROMEO:")
    assert a.returncode == 0, a.stderr
    assert a.stderr == ""
    assert a.stdout.startswith("ROMEO:")
    assert len(a.stdout) == len("ROMEO:") + 300 + 1  # the prime, the text, a final newline
    assert a.stdout == b.stdout
    assert a.stdout != c.stdout
    # the tiny model has learnt its corpus: only its characters (out of 98), and words
    generated = a.stdout[len("ROMEO:") :]
    corpus = "".join(Path(p).read_text() for p in glob.glob(os.path.join(tiny_run["corpus"], "*")))
    assert set(generated) <= set(corpus)
    assert re.search(r"\bthe\b", generated)


def test_any_prime_text_works(tiny_run):
    result = play(tiny_run, "--length", "50", "--seed", "1", "--prime", "Żółw ✓\r\n\tnaïve")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Żółw ✓")


def test_a_checkpoint_can_be_named_by_run_directory_or_prefix(tiny_run):
    by_run = play(tiny_run, "tiny", "--length", "40", "--seed", "3")
    by_dir = play(tiny_run, str(tiny_run["checkpoints"] / "tiny"), "--length", "40", "--seed", "3")
    older = play(
        tiny_run, str(tiny_run["checkpoints"] / "tiny" / "ckpt-50"), "--length", "40", "--seed", "3"
    )
    assert by_run.returncode == by_dir.returncode == older.returncode == 0
    assert by_run.stdout == by_dir.stdout
    assert older.stdout != by_run.stdout  # other weights, other text


def test_score_prints_bits_per_character(tiny_run, tmp_path):
    text = os.path.join(tiny_run["corpus"], "part2.txt")
    result = play(tiny_run, "--score", text)
    assert result.returncode == 0, result.stderr
    m = re.search(
        r"([\d.]+) bits/char \(([\d.]+) nats/char\), accuracy ([\d.]+), "
        r"over ([\d,]+) characters",
        result.stdout,
    )
    bits, nats, accuracy, n = float(m[1]), float(m[2]), float(m[3]), int(m[4].replace(",", ""))
    assert abs(bits - nats / np.log(2)) < 2e-3
    assert n == len(txtutils.read_file(text)) - 1
    assert 0 < accuracy <= 1
    # better than a uniform guess over 98 symbols, as the training run's validation showed
    assert nats < np.log(98) - 1
    # the same figure as running the whole text in one call with the state carried
    model, _ = ckpt.load_model(ckpt.resolve("tiny", str(tiny_run["checkpoints"]), print))
    codes = txtutils.read_file(text).astype(np.int32)
    logits, _ = model.infer(codes[None, :-1], model.zero_state(1))
    expected, _ = loss_and_accuracy(logits, codes[None, 1:])
    assert abs(nats - float(expected)) < 2e-3


def test_endless_output_stops_quietly_on_ctrl_c(tiny_run):
    proc = subprocess.Popen(
        [
            sys.executable,
            os.path.join(HERE, "rnn_play.py"),
            "--length",
            "0",
            "--checkpoint-dir",
            str(tiny_run["checkpoints"]),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # as from a terminal: a suite started in the background (nohup, `&` in a
        # script) passes SIGINT on ignored, and Ctrl-C would then do nothing
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    proc.stdout.read(2000)  # well past any fixed default length... it keeps going
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert b"Traceback" not in err


def test_bad_checkpoints_get_one_line(tiny_run, tmp_path):
    (tmp_path / "notarun").mkdir()
    cases = [
        (["--checkpoint-dir", str(tmp_path / "empty")], "no checkpoint in"),
        ([str(tmp_path / "notarun"), "--checkpoint-dir", str(tmp_path)], "holds no checkpoint"),
        (["nosuchrun", "--checkpoint-dir", str(tiny_run["checkpoints"])], "no run or checkpoint"),
        (
            [
                "--score",
                str(tmp_path / "missing.txt"),
                "--checkpoint-dir",
                str(tiny_run["checkpoints"]),
            ],
            "cannot read",
        ),
        (["--length", "-1"], "--length"),
        (["--streams", "4", "--length", "0"], "--length"),
        (["--streams", "0"], "--streams"),
    ]
    for args, expected in cases:
        result = run_cli("rnn_play.py", *args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (args, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("rnn_play.py: error:"), (args, lines)
        assert expected in lines[0], (args, lines)


def test_many_streams_are_separate_samples(tiny_run):
    result = play(tiny_run, "--streams", "5", "--length", "100", "--seed", "2", "--prime", "NURSE:")
    assert result.returncode == 0, result.stderr
    parts = re.split(r"^==== sample (\d+) of 5 ====\n", result.stdout, flags=re.MULTILINE)
    assert parts[0] == ""
    numbers, samples = parts[1::2], parts[2::2]
    assert all(s.endswith("\n") for s in samples)
    samples = [s[:-1] for s in samples]  # each is followed by one line break
    assert numbers == ["1", "2", "3", "4", "5"]
    assert all(s.startswith("NURSE:") and len(s) == len("NURSE:") + 100 for s in samples)
    assert len(set(samples)) == 5  # independent draws, not one sample five times
    # the same seed gives the same samples
    assert (
        play(
            tiny_run, "--streams", "5", "--length", "100", "--seed", "2", "--prime", "NURSE:"
        ).stdout
        == result.stdout
    )


def test_streams_can_go_to_files(tiny_run, tmp_path):
    out = tmp_path / "samples"
    result = play(
        tiny_run, "--streams", "12", "--length", "70", "--seed", "1", "--out-dir", str(out)
    )
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == [f"sample-{i:02d}.txt" for i in range(1, 13)]
    texts = [(out / f).read_text() for f in files]
    assert all(len(t) == 1 + 70 + 1 for t in texts)  # prime (a newline), text, newline
    assert "12 samples written to" in result.stdout
    assert len(set(texts)) == 12
    # a file where the folder should be: one error line
    (tmp_path / "taken").write_text("")
    bad = play(tiny_run, "--streams", "2", "--length", "5", "--out-dir", str(tmp_path / "taken"))
    assert bad.returncode == 2
    assert bad.stderr.startswith("rnn_play.py: error: cannot write") and bad.stderr.count("\n") == 1
