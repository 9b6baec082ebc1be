"""bench_quality.py trains both entrants on the text it is given, never on the held-out
play, and scores that play (never judged on the figures: that is the bench's job)."""

import json
import math
import os
import re

from conftest import TINY, run_cli
from tools import bench_quality

WORDS = [
    "the",
    "king",
    "and",
    "the",
    "queen",
    "of",
    "the",
    "night",
    "speak",
    "of",
    "love",
    "and",
    "war",
    "to",
    "all",
    "their",
    "men",
]

POEMS = "春眠不觉晓处处闻啼鸟夜来风雨声花落知多少床前明月光疑是地上霜举头望明月低头思故乡"
WHO = ("this checkout", "Keras GRU")
# the alphabets of the two texts: the talk's 98 symbols, and the poems' characters
ALPHABET = {"en": 98, "zh": 98 + len(set(POEMS))}


def write_corpus(folder, names, chars):
    folder.mkdir()
    for i, name in enumerate(names):
        words = [WORDS[(i * 7 + j * j) % len(WORDS)] for j in range(chars // 4)]
        lines = [" ".join(words[k : k + 9]) + "." for k in range(0, len(words), 9)]
        (folder / name).write_text("\n".join(lines)[:chars] + "\n")  # chars + 1


def bench(tmp_path, *flags):
    """A bench of tiny runs in tmp_path/work that must succeed: (the finished process,
    its JSON figures, the work folder)."""
    out, work = tmp_path / "q.json", tmp_path / "work"
    result = run_cli(
        "tools/bench_quality.py",
        *flags,
        *("--flags", " ".join(TINY), "--work-dir", str(work), "--json", str(out)),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return result, json.loads(out.read_text()), work


def test_both_entrants_train_and_score_both_texts(tmp_path):
    """English: both entrants train on all but the held-out play and the validation
    play, and score the held-out play. Chinese (--zh-minutes): a fortune file cut into
    blocks of entries, every tenth held out; both entrants have the alphabet of the
    training text, and the sample's share of ideographs is measured."""
    corpus = tmp_path / "corpus"
    write_corpus(corpus, ["a.txt", "b.txt", "held.txt", "valid.txt"], 12_000)
    entries = [(POEMS * 2)[(i * 5) % 40 :][:12] + f" {i}" for i in range(500)]
    zh = tmp_path / "zh.txt"
    zh.write_text("\n%\n".join(entries) + "\n")
    result, figures, work = bench(
        tmp_path,
        *("--corpus", str(corpus), "--test", "held.txt", "--valid", "valid.txt"),
        *("--zh-text", str(zh), "--minutes", "0.02", "--zh-minutes", "0.02", "--peer-cell", "16"),
    )
    assert figures["test"] == "held.txt"
    runs = {(r["text"], r["who"]): r for r in figures["runs"]}
    assert set(runs) == {(text, who) for text in ("en", "zh") for who in WHO}
    for run in runs.values():
        assert run["steps"] > 0
        assert f"{run['nats']:.3f} nats/char" in result.stdout
        # real scores of barely trained models (a 16-unit peer): near the alphabet's
        # log, on the whole test text and on the first 30 characters, from nothing
        # (cold) and after the characters before them (warm)
        for figure in ("nats", "cold", "warm"):
            assert 0 < run[figure] < math.log(ALPHABET[run["text"]]) + 1, run
    for text in ("en", "zh"):  # where its time went, as rnn_train.py said
        ours = runs[text, "this checkout"]
        assert 0 < ours["in_steps"] < 1 and ours["first_step"] > 0

    # English: trained on a.txt and b.txt only, the held-out and validation plays left out
    log = (work / "1-en-this-0.02.log").read_text()
    assert "training on 24,002 characters (2 files), validating on 12,001 (valid.txt)" in log

    # Chinese: the fifth block of each ten held out for the test
    test = (work / "zh" / "test.txt").read_text().split("\n%\n")
    assert len(test) == 50 and test[0].endswith(" 40")
    # each entry 12 ideographs, a space, 1 to 3 digits, and the 3 characters of "\n%\n"
    assert 12 / 19 < figures["zh_text_share"] < 12 / 17
    # the share of ideographs in the samples rnn_play.py wrote, 1,000 characters each
    samples = sorted((work / "3-zh-this-0.02-samples").glob("*.txt"))
    assert len(samples) == bench_quality.SAMPLES
    written = "".join(path.read_text(encoding="utf-8") for path in samples)
    assert len(written) >= bench_quality.SAMPLES * 1000
    assert runs["zh", "this checkout"]["zh_share"] == bench_quality.ideograph_share(written)
    log = (work / "3-zh-this-0.02.log").read_text()
    assert "validating on" in log and "(valid.txt)" in log
    alphabet = re.search(r"alphabet: (\d+) symbols", log)
    assert alphabet and int(alphabet[1]) == ALPHABET["zh"], log  # the poems' characters joined


def test_without_a_work_dir_the_runs_leave_nothing_behind(tmp_path):
    """The runs' checkpoints (~50 MB each at the default size) go to a temporary
    folder that the bench removes; the figures name no log there. The same minutes
    twice are two runs: they once wrote into one run and ended the bench with a
    traceback (runs are named by their number too)."""
    corpus, temp, out = tmp_path / "corpus", tmp_path / "temp", tmp_path / "q.json"
    write_corpus(corpus, ["a.txt", "b.txt", "held.txt", "valid.txt"], 12_000)
    temp.mkdir()
    result = run_cli(
        "tools/bench_quality.py",
        *("--corpus", str(corpus), "--test", "held.txt", "--valid", "valid.txt"),
        *("--minutes", "0.02", "0.02", "--zh-minutes", "--no-peer", "--json", str(out)),
        *("--flags", " ".join(TINY)),
        env=dict(os.environ, TMPDIR=str(temp)),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert f"work in {temp}{os.sep}bench-quality-" in result.stdout  # (where it was)
    runs = json.loads(out.read_text())["runs"]
    assert [r["minutes"] for r in runs] == [0.02, 0.02]
    for run in runs:
        assert run["steps"] > 0 and "log" not in run
    assert list(temp.iterdir()) == []


def test_a_missing_play_is_one_line(tmp_path):
    corpus = tmp_path / "corpus"
    write_corpus(corpus, ["a.txt", "valid.txt"], 1_000)
    result = run_cli("tools/bench_quality.py", "--corpus", str(corpus), "--valid", "valid.txt")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "julius_caesar_gut.txt is not in" in result.stderr
