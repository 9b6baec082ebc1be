"""bench.py runs and reports every figure (never judged on speed: that is a benchmark's job)."""

import json

from conftest import run_cli

KEYS = {
    "matmul_gflops",
    "train_chars_per_s",
    "train_fraction_of_limit",
    "train_bf16_chars_per_s",
    "train_5000_symbols_chars_per_s",
    "generate_1_chars_per_s",
    "generate_256_chars_per_s",
    "score_chars_per_s",
    "train_peak_rss_mb",
    "generate_peak_rss_mb",
    "train_run_peak_rss_mb",
}


def test_quick_bench_prints_and_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli("bench.py", "--quick", "--json", str(out))
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
        "generation, 1 stream",
        "generation, 256 streams",
        "scoring (rnn_play.py --score)",
        "peak memory, training step",
        "peak memory, rnn_train.py run (validation on)",
        "peak memory, generation",
    ):
        assert row in result.stdout
    # the table shows the same figures as the JSON
    assert f"{figures['train_chars_per_s']:,} chars/s" in result.stdout
    assert f"{figures['train_fraction_of_limit']:.2f} of the limit" in result.stdout
    assert f"{figures['score_chars_per_s']:,} chars/s" in result.stdout


def test_flop_count_is_the_default_models_figure():
    """24.8 M FLOPs per training character for the default model (3 x 512 GRU, 98
    symbols): the figure the training limit and earlier bench runs are counted in."""
    import bench

    assert round(bench.train_flops_per_char(bench.DEFAULT) / 1e6, 1) == 24.8
