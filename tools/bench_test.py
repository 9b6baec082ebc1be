"""bench.py runs and reports every figure (never judged on speed: that is a benchmark's job)."""

import argparse
import glob
import json
import os
import sys
from pathlib import Path

import pytest

from conftest import run_cli

KEYS = {
    "matmul_gflops",
    "train_chars_per_s",
    "train_fraction_of_limit",
    "train_bf16_chars_per_s",
    "train_5000_symbols_chars_per_s",
    "train_5000_symbols_ratio",
    "train_bf16_5000_symbols_chars_per_s",
    "train_bf16_5000_symbols_ratio",
    "generate_1_5000_symbols_chars_per_s",
    "score_5000_symbols_chars_per_s",
    "generate_1_chars_per_s",
    "generate_256_chars_per_s",
    "score_chars_per_s",
    "train_peak_rss_mb",
    "generate_peak_rss_mb",
    "train_run_peak_rss_mb",
    "files_300_peak_rss_mb",
    "files_300_resume_peak_rss_mb",
}


def test_quick_bench_prints_and_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli("tools/bench.py", "--quick", "--json", str(out))
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())
    assert set(figures) >= KEYS
    for key in KEYS:
        assert figures[key] > 0, key
    assert figures["train_flops_per_char"] > 0
    for row in (
        "fp32 matmul",
        "training, float32",
        "training, --mixed-precision",
        "training, float32, 5,000-symbol alphabet",
        "training, --mixed-precision, 5,000 symbols",
        "generation, 1 stream, 5,000 symbols",
        "scoring, 5,000 symbols",
        "generation, 1 stream",
        "generation, 256 streams",
        "scoring (rnn_play.py --score)",
        "peak memory, training step",
        "peak memory, rnn_train.py run (validation on)",
        "peak memory, generation",
        "text 300 KB in 300 files: the same",
    ):
        assert row in result.stdout
    # the table shows the same figures as the JSON
    assert f"{figures['train_chars_per_s']:,} chars/s" in result.stdout
    assert f"{figures['train_fraction_of_limit']:.2f} of the limit" in result.stdout
    assert f"{figures['score_chars_per_s']:,} chars/s" in result.stdout
    check_text_figures(figures, result.stdout)


def check_text_figures(figures, stdout):
    """The large-text figures of the quick bench (--text-sizes 1M): the run and its
    --resume ran to the end, their figures in the JSON and in rows after the older
    ones; the encoding speed."""
    assert figures["text_sizes_bytes"] == [10**6]
    assert figures["memory_limit_gb"] == 16
    for run, row in (
        ("text_1mb", "text 1 MB: peak memory / first step / whole run"),
        ("text_1mb_resume", "text 1 MB, --resume: the same"),
    ):
        peak, first = figures[f"{run}_peak_rss_mb"], figures[f"{run}_first_step_s"]
        total = figures[f"{run}_run_s"]
        assert figures[f"{run}_stopped"] is False, run
        assert peak > 100, run  # TensorFlow alone takes more
        assert 0 < first < total, run
        assert value_of(stdout, row) == f"{peak:,} MB / {first:.1f} s / {total:.1f} s"
    # the new rows come after the older ones
    assert stdout.index("peak memory, generation") < stdout.index("text 1 MB: peak memory")
    encoding = "encoding (read, count, encode) 1 MB"
    assert figures["encode_mb_per_s"] > 0
    assert value_of(stdout, encoding) == f"{figures['encode_mb_per_s']:,.1f} MB/s"


def value_of(stdout, row):
    """The value the table shows in a row."""
    (line,) = (line for line in stdout.splitlines() if line.startswith(row + "  "))
    return line[len(row) :].strip()


def test_flop_count_is_the_default_models_figure():
    """24.8 M FLOPs per training character for the default model (3 x 512 GRU, 98
    symbols): the figure the training limit and earlier bench runs are counted in."""
    from tools import bench

    assert round(bench.train_flops_per_char(bench.DEFAULT) / 1e6, 1) == 24.8


def test_text_sizes_are_powers_of_1000_and_checked():
    from tools import bench

    assert bench.parse_sizes("10M,1G") == [10**7, 10**9]
    assert bench.parse_sizes("1g, 500k,1.5M,7,10M,1G") == [7, 500_000, 1_500_000, 10**7, 10**9]
    for bad in ("", "10X", "M", "0", "-1M", "nanM", "1e999G"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.parse_sizes(bad)
    assert bench.parse_args([]).text_sizes == [10**7, 10**9]
    assert bench.parse_args(["--quick"]).text_sizes == [10**6]
    assert bench.parse_args(["--quick", "--text-sizes", "2M"]).text_sizes == [2 * 10**6]
    assert bench.text_key(10**9) == "text_1gb" and bench.size_label(10**7) == "10 MB"


def test_bad_flags_are_one_line_errors(tmp_path, capsys):
    from tools import bench

    for argv in (["--text-sizes", "10Q"], ["--code", str(tmp_path)], ["--memory-limit", "0"]):
        with pytest.raises(SystemExit) as exit:
            bench.parse_args(argv)
        assert exit.value.code == 2
        assert "(see --help)" in capsys.readouterr().err


def test_generated_text_is_english_like_and_cut_into_files(tmp_path):
    from tools import bench

    block = bench.english_text(200_000, seed=0)
    assert len(block) == 200_000
    assert (block == bench.english_text(200_000, seed=0)).all()
    assert not (block == bench.english_text(200_000, seed=1)).all()
    text = block.tobytes().decode("ascii")
    lines = text.split("\n")
    assert text.endswith("\n") and lines[-1] == ""
    lengths = sorted(len(line) for line in lines[1:-2])  # the first and last: cut
    assert 55 <= lengths[len(lengths) // 2] <= 85  # a line feed every 60 to 80 characters
    assert max(lengths) < 120
    words = {word.strip(",.;?").lower() for line in lines[:-2] for word in line.split()}
    assert words <= {word.lower() for word in bench.WORDS}
    assert len(words) > 200
    assert ". The " in text or ". The\n" in text  # a capital after a full stop

    pattern = bench.write_text(str(tmp_path / "train"), 100_000, block[:25_000], part_bytes=30_000)
    files = sorted(glob.glob(pattern))
    assert [os.path.basename(f) for f in files] == [f"part-{i:04d}.txt" for i in range(4)]
    assert [os.path.getsize(f) for f in files] == [30_000, 30_000, 30_000, 10_000]
    written = b"".join(Path(f).read_bytes() for f in files)
    first, second = written[:25_000], written[25_000:50_000]
    assert first == block[:25_000].tobytes()
    assert second != first and sorted(second) == sorted(first)  # the block, rotated
    assert b"\n" + second[:50] in first  # rotated to start at one of its lines


def watch(tmp_path, program, limit_mb=1024):
    from tools import bench

    argv = [sys.executable, "-c", program]
    return bench.watch_run(argv, str(tmp_path), limit_mb, str(tmp_path / "stderr.txt"))


def test_watch_run_times_the_first_step_and_reads_the_peak_memory(tmp_path):
    program = (
        "import time\n"
        "print('reading the text')\n"
        "time.sleep(0.5)\n"
        "b = b'x' * (200 << 20)\n"  # 200 MB, held until the end
        "print('step 1/3  epoch 1/10  loss 4.585')\n"
        "time.sleep(0.5)\n"
        "print('step 2/3  epoch 1/10  loss 4.585')\n"
    )
    watched = watch(tmp_path, program)
    assert not watched.stopped
    assert 0.5 <= watched.first_step_s < watched.seconds - 0.3
    assert 200 < watched.peak_mb < 400


def test_watch_run_stops_a_run_past_the_memory_limit(tmp_path):
    program = "import time\nb = b'x' * (300 << 20)\nprint('step 1/3')\ntime.sleep(60)\n"
    watched = watch(tmp_path, program, limit_mb=100)
    assert watched.stopped
    assert watched.seconds < 30  # killed, not waited for
    assert watched.peak_mb > 100


def test_watch_run_raises_with_the_end_of_stderr_on_failure(tmp_path):
    program = "import sys\nprint('step 1/3')\nsys.exit('rnn_train.py: error: no text')\n"
    with pytest.raises(RuntimeError, match=r"exit status 1\): rnn_train.py: error: no text"):
        watch(tmp_path, program)
