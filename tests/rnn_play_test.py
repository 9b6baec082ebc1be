"""The real rnn_play.py CLI on the tiny run's checkpoints."""

import glob
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import rnn_play
import txtutils
from charrnn import generate, runs
from charrnn.generate import Generator, Scorer
from charrnn.model import build_model, loss_and_accuracy, mean_loss_and_accuracy
from conftest import (
    HERE,
    cache_env,
    run_cli,
    run_clis,
    run_main,
    sigint_as_from_a_terminal,
    without_cache_noise,
)
from txtutils_test import text_of


def checkpoints(tiny_run):
    return ["--checkpoint-dir", str(tiny_run["checkpoints"])]


def play(tiny_run, *args):
    return run_cli("rnn_play.py", *args, *checkpoints(tiny_run))


def test_generates_the_asked_length_and_the_same_text_for_one_seed(tiny_run, capsys):
    """The same seed gives the same text in another process (b runs in this one)."""
    a = play(tiny_run, "--length", "300", "--seed", "7", "--prime", "ROMEO:")
    b = play_here(tiny_run, "--length", "300", "--seed", "7", "--prime", "ROMEO:", capsys=capsys)
    c = play_here(tiny_run, "--length", "300", "--seed", "8", "--prime", "ROMEO:", capsys=capsys)
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


def test_a_checkpoint_can_be_named_by_run_directory_or_prefix(tiny_run, capsys):
    def named(name):
        args = (name, "--length", "40", "--seed", "3", *checkpoints(tiny_run))
        return run_main(rnn_play.main, *args, capsys=capsys)

    by_run = named("tiny")
    by_dir = named(str(tiny_run["checkpoints"] / "tiny"))
    older = named(str(tiny_run["checkpoints"] / "tiny" / "ckpt-50"))
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
    assert n == len(txtutils.DEFAULT.encode(text_of(text))) - 1
    assert 0 < accuracy <= 1
    # better than a uniform guess over 98 symbols, as the training run's validation showed
    assert nats < np.log(98) - 1
    # the same figure as running the whole text in one call with the state carried
    model, _ = runs.load_model(runs.find_checkpoint("tiny", str(tiny_run["checkpoints"]), print))
    codes = txtutils.DEFAULT.encode(text_of(text)).astype(np.int32)
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
        preexec_fn=sigint_as_from_a_terminal,
    )
    # well past the default length (1,000), and still going
    assert len(proc.stdout.read(2000)) == 2000
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert b"Traceback" not in err


def test_bad_checkpoints_get_one_line(tiny_run, tmp_path, capsys):
    """(In this process: the hostile-input tests run the process's own start-up.)"""
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
        result = run_main(rnn_play.main, *args, capsys=capsys)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (args, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("rnn_play.py: error:"), (args, lines)
        assert expected in lines[0], (args, lines)


def test_many_streams_are_separate_samples(tiny_run, capsys):
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
    # the same seed gives the same samples (here, in this process)
    again = ("--streams", "5", "--length", "100", "--seed", "2", "--prime", "NURSE:")
    assert play_here(tiny_run, *again, capsys=capsys).stdout == result.stdout


def test_streams_can_go_to_files(tiny_run, tmp_path, capsys, monkeypatch):
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
    # refused later (a --stop the model cannot write): the folder it made is gone again
    never = (
        "--streams",
        "2",
        "--length",
        "5",
        "--stop",
        "\u0416",
        "--out-dir",
        str(tmp_path / "n" / "m" / "samples"),
    )
    refused = play_here(tiny_run, *never, capsys=capsys)
    assert refused.returncode == 2 and "--stop" in refused.stderr
    assert not (tmp_path / "n").exists()  # nor the folders above it this made
    # a file where the folder should be: one error line, before the model is loaded
    monkeypatch.setattr(runs, "load_model", lambda prefix: pytest.fail("loaded the model"))
    (tmp_path / "taken").write_text("")
    taken = ("--streams", "2", "--length", "5", "--out-dir", str(tmp_path / "taken"))
    bad = play_here(tiny_run, *taken, capsys=capsys)
    assert bad.returncode == 2
    assert bad.stderr.startswith("rnn_play.py: error: cannot write") and bad.stderr.count("\n") == 1


def test_ctrl_c_keeps_the_samples_generated_so_far(tiny_run, tmp_path, capsys, monkeypatch):
    """Ctrl-C while many streams generate (KeyboardInterrupt in the third compiled call,
    where Python raises it on SIGINT) writes each stream's text so far and exits 130
    with one line saying so; the samples' text is what an uninterrupted run begins with."""
    out = tmp_path / "samples"
    common = ("--streams", "3", "--seed", "4", "--prime", "KING:")
    whole = play_here(tiny_run, *common, "--length", "600", capsys=capsys)
    assert whole.returncode == 0, whole.stderr
    real = Generator.next
    calls = []

    def next_then_ctrl_c(self, n):
        calls.append(n)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, n)

    monkeypatch.setattr(Generator, "next", next_then_ctrl_c)
    result = play_here(
        tiny_run, *common, "--length", "100000", "--out-dir", str(out), capsys=capsys
    )
    assert result.returncode == 130, result.stderr
    done = 2 * generate.GENERATE_PER_CALL
    assert result.stderr == (
        f"rnn_play.py: stopped (Ctrl-C) after {done:,} of 100,000 characters: "
        f"the samples so far are written to {out}/\n"
    )
    texts = [(out / f"sample-{i}.txt").read_text() for i in (1, 2, 3)]
    printed = re.split(r"^==== sample \d of 3 ====\n", whole.stdout, flags=re.MULTILINE)[1:]
    for text, full in zip(texts, printed, strict=True):
        assert len(text) == len("KING:") + done + 1 and text == full[: len(text) - 1] + "\n"
    # Ctrl-C before any sample was kept (while the prime is read): no text, and status 130
    calls.clear()
    monkeypatch.setattr(
        rnn_play, "feed_prime", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt)
    )
    early = play_here(tiny_run, *common, "--length", "100", capsys=capsys)
    assert (early.returncode, early.stdout) == (130, "")
    assert early.stderr == "rnn_play.py: stopped (Ctrl-C) before every sample was printed\n"


def test_a_sample_file_is_written_whole_or_not_at_all(tiny_run, tmp_path, capsys):
    """Each sample goes to a file beside and is renamed into place: a write that fails
    leaves no sample file, and no part file."""
    out = tmp_path / "samples"
    out.mkdir()
    (out / "sample-1.txt.part").mkdir()  # the file beside cannot be written
    result = play_here(
        tiny_run, "--streams", "2", "--length", "5", "--out-dir", str(out), capsys=capsys
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"rnn_play.py: error: cannot write {out / 'sample-1.txt'}: Is a directory; "
        "choose another --out-dir\n"
    )
    assert sorted(p.name for p in out.iterdir()) == ["sample-1.txt.part"]


def test_an_out_dir_holding_earlier_samples_is_refused_before_the_model_loads(
    tiny_run, tmp_path, capsys, monkeypatch
):
    """Samples of an earlier run would be overwritten, or mixed with these (10 samples
    are sample-01..10, 100 are sample-001..100): the folder is refused, left as it was."""
    out = tmp_path / "samples"
    out.mkdir()
    (out / "sample-01.txt").write_text("an earlier sample\n")
    monkeypatch.setattr(runs, "load_model", lambda prefix: pytest.fail("loaded the model"))
    result = play_here(
        tiny_run, "--streams", "100", "--length", "5", "--out-dir", str(out), capsys=capsys
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"rnn_play.py: error: --out-dir {out} holds the samples of an earlier run "
        "(sample-*.txt): choose another --out-dir, or delete them\n"
    )
    assert sorted(p.name for p in out.iterdir()) == ["sample-01.txt"]
    assert (out / "sample-01.txt").read_text() == "an earlier sample\n"


# ---------------------------------------------------------------------------
# --score: streamed, compiled, exact


def mixed_bytes(n, seed=0):
    """n random parts (1 to 4 bytes each) of everything a piece boundary can cut: CRLF,
    lone CRs, UTF-8 of 2, 3 and 4 bytes, invalid and truncated sequences, ASCII."""
    rng = np.random.default_rng(seed)
    parts = [b"\r\n", b"\r", b"\n", "é".encode(), "✓".encode(), "𝄞".encode(), b"\xff", b"\xe2\x9c"]
    parts += [bytes([c]) for c in b"ROMEO: the moon sees juliet."]
    return b"".join(parts[i] for i in rng.integers(0, len(parts), size=n))


def test_reading_in_pieces_gives_the_codes_of_the_whole_file(tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_bytes(mixed_bytes(3000))
    whole = txtutils.DEFAULT.encode(text_of(str(path)))
    for size in (1, 2, 3, 5, 64, 1000, 1 << 20):
        pieces = list(txtutils.read_pieces(str(path), size))
        np.testing.assert_array_equal(np.concatenate(pieces), whole, err_msg=f"size {size}")
        # a piece's memory, not the file's: a held CR and a replaced incomplete sequence
        # at most beyond the bytes read
        assert max(len(p) for p in pieces) <= size + 4
    path.write_bytes(mixed_bytes(3000) + b"\0")  # a NUL past the first pieces
    with pytest.raises(txtutils.CorpusError, match="is not a text file"):
        list(txtutils.read_pieces(str(path), 100))


def old_score(model, path):
    """--score as it was before streaming (git show 0d68509:rnn_play.py): the whole
    file read at once, 1000 characters per call of model.infer, the state carried."""
    codes = txtutils.DEFAULT.encode(text_of(path)).astype(np.int32)
    x, y = codes[:-1], codes[1:]
    pieces = ((x[None, i : i + 1000], y[None, i : i + 1000]) for i in range(0, len(x), 1000))
    return mean_loss_and_accuracy(model, pieces)


def test_score_gives_the_old_figures_across_chunks_and_pieces(tiny_run, tmp_path):
    """Chunks of 512 characters and pieces of 700 bytes, with a CRLF and a UTF-8
    sequence cut by piece boundaries: the same text, one state through it all."""
    text = Path(tiny_run["corpus"], "part2.txt").read_bytes()[:6000]
    text = text[:699] + b"\r\n" + text[699:1397] + "é".encode() + text[1397:]
    assert text[699:701] == b"\r\n" and text[1399:1401] == "é".encode()  # cut at 700, 1400
    text = text[:2000] + mixed_bytes(500) + text[2000:]
    path = tmp_path / "text.txt"
    path.write_bytes(text)
    model, _ = runs.load_model(runs.find_checkpoint("tiny", str(tiny_run["checkpoints"]), print))
    nats, accuracy, n = old_score(model, str(path))
    for chunk, piece in ((512, 700), (generate.SCORE_PER_CALL, generate.SCORE_PIECE)):
        got = generate.score(Scorer(model, chunk), str(path), piece_bytes=piece)
        assert got[2] == n > 3 * 512
        assert abs(got[0] - nats) < 1e-5, (chunk, piece)
        assert abs(got[1] - accuracy) < 1e-5, (chunk, piece)


def test_score_shows_progress_on_a_terminal_and_ctrl_c_stops_it_with_130(tiny_run, tmp_path):
    """On a terminal, a progress line (characters done of the total, speed) moves while
    it scores; Ctrl-C then stops it with one line saying so and status 130."""
    path = tmp_path / "long.txt"
    path.write_text("ROMEO: the moon sees juliet.\n" * 300_000)  # 8.7 M characters: seconds
    total = path.stat().st_size - 1
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "rnn_play.py"), "--score", str(path)]
        + ["--checkpoint-dir", str(tiny_run["checkpoints"])],
        stdout=subprocess.PIPE,
        stderr=slave,
        preexec_fn=sigint_as_from_a_terminal,
    )
    os.close(slave)
    try:
        err = read_terminal_until(master, proc, rb"[\d,]+ chars/s")
        proc.send_signal(signal.SIGINT)
        err += read_terminal_until(master, proc, None)
        out = proc.stdout.read()
        assert proc.wait(timeout=60) == 130, err
    finally:
        proc.kill()  # nothing left running if it failed (a no-op once it has exited)
        proc.wait()
        proc.stdout.close()
        os.close(master)
    assert out == b""  # no figures from part of the text
    err = err.decode()
    assert re.search(rf"\rscoring: [\d,]+ / {total:,} characters \(\d+%\), [\d,]+ chars/s", err)
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.endswith("\r\n")  # one line (a terminal adds \r)
    last = err.split("\r")[-2].strip()  # after the progress line, wiped with spaces
    assert last.startswith(f"rnn_play.py: scoring of {path} stopped (Ctrl-C) after "), err
    assert f"of {total:,} characters" in last and last.endswith("no figures")


def read_terminal_until(fd, proc, pattern, timeout=120):
    """What a process writes to a terminal (fd: its master side), until pattern shows
    (None: until the process closes it). Fails if the time runs out first."""
    got, deadline = b"", time.monotonic() + timeout
    while pattern is None or not re.search(pattern, got):
        assert time.monotonic() < deadline, (proc.poll(), got)
        if not select.select([fd], [], [], 1)[0]:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: every writer closed it
            data = b""
        if not data:
            assert pattern is None, (proc.poll(), got)
            return got
        got += data
    return got


def test_score_reads_a_pipe_once(tiny_run, tmp_path):
    """`cat f | rnn_play.py RUN --score /dev/stdin` (and `--score <(zcat f.gz)`): a pipe
    is read once, and gives the figure of the file itself (it was read twice, the
    second time empty, and ended in a traceback); an empty pipe is one line, exit 2."""
    text = os.path.join(tiny_run["corpus"], "part2.txt")
    (from_file,) = run_clis(("rnn_play.py", "tiny", "--score", text, *checkpoints(tiny_run)))
    assert from_file.returncode == 0, from_file.stderr
    figures = from_file.stdout.split(": ", 1)[1]
    command = [sys.executable, os.path.join(HERE, "rnn_play.py"), "tiny", "--score"]
    for given, expected in ((Path(text).read_bytes(), 0), (b"", 2)):
        piped = subprocess.run(
            [*command, "/dev/stdin", *checkpoints(tiny_run)],
            input=given,
            capture_output=True,
            env=cache_env(),
            check=False,
            timeout=120,
        )
        err = without_cache_noise(piped.stderr).decode()
        assert piped.returncode == expected, err
        if expected:
            assert err.count("\n") == 1 and "fewer than 2 characters" in err, err
        else:
            assert piped.stdout.decode() == f"/dev/stdin: {figures}"


def test_a_tiny_temperature_samples_the_likeliest(tiny_run):
    """--temperature 1e-46 is 0 in float32: it gave logits of +-inf, and the sampler the
    lowest code; a temperature near 0 must pick the likeliest, as --topn 1 does."""
    model, _ = runs.load_model(runs.find_checkpoint("tiny", str(tiny_run["checkpoints"]), print))
    prime = [txtutils.DEFAULT.encode("ROMEO: the ")] * 3
    texts = []
    for options in ({"topn": 1}, {"temperature": 1e-46}, {"temperature": 1e-30, "topn": 5}):
        generator = Generator(model, **options)
        generator.start(prime, seed=3)
        texts.append(generator.next(40))
    np.testing.assert_array_equal(texts[0], texts[1])
    np.testing.assert_array_equal(texts[0], texts[2])
    assert len(set(texts[0][0])) > 1  # not one code over and over


def test_scoring_a_big_alphabet_keeps_its_logits_small():
    """The logits of one scoring call are [CHUNK, ALPHASIZE]: with a fixed chunk of
    4,096, a crafted 300,000-symbol model asked ~5 GB per call. The chunk shrinks with
    the alphabet; the 98 symbols keep theirs."""
    assert generate.score_per_call(98) == generate.SCORE_PER_CALL
    for alphasize in (5000, 300_000):
        chunk = generate.score_per_call(alphasize)
        assert 1 <= chunk * alphasize <= generate.SCORE_LOGITS
    model = build_model({"alphasize": 300_000, "cell_size": 4, "layers": 1, "dropout": 0.0})
    scorer = Scorer(model)
    assert scorer.per_call == generate.score_per_call(300_000) == 55
    scorer.feed(np.arange(200, dtype=np.int32))
    assert scorer.finish()[2] == 199


def play_here(tiny_run, *args, capsys):
    """rnn_play.py in this process (run_main), on the tiny run."""
    return run_main(rnn_play.main, "tiny", *args, *checkpoints(tiny_run), capsys=capsys)


def samples_of(stdout):
    return re.split(r"==== sample \d+ of \d+ ====\n", stdout)[1:]


def test_stop_ends_each_sample_right_after_its_first_stop(tiny_run, capsys):
    """--stop TEXT: each stream's sample ends right after the first TEXT it generates
    (a TEXT in the prime does not count), or at --length; the text before is the text
    without --stop."""
    common = ["--length", "400", "--seed", "5", "--prime", "ROMEO: the e"]
    whole = play_here(tiny_run, *common, "--streams", "3", capsys=capsys)
    assert whole.returncode == 0, whole.stderr
    prime = "ROMEO: the e"
    for stop in ("e ", "moon", "QZQZ"):  # the last never comes: --length ends it
        cut = play_here(tiny_run, *common, "--streams", "3", "--stop", stop, capsys=capsys)
        assert cut.returncode == 0, cut.stderr
        for full, short in zip(samples_of(whole.stdout), samples_of(cut.stdout), strict=True):
            generated = full[len(prime) :]
            end = generated.find(stop)
            expected = generated if end < 0 else generated[: end + len(stop)] + "\n"
            assert short == prime + expected, (stop, short)
    one = play_here(tiny_run, *common, "--stop", "e ", capsys=capsys)
    first = samples_of(whole.stdout)[0]
    assert one.stdout.endswith("e \n") and len(one.stdout) < len(first)
    bad = play_here(tiny_run, "--stop", "\u0416", capsys=capsys)
    assert bad.returncode == 2 and "not in the model's alphabet" in bad.stderr


def test_a_prime_file_is_the_prime_and_may_be_long(tiny_run, tmp_path, capsys):
    """--prime-file FILE: its text (CRLF read as LF) primes every stream as --prime
    would, and a long one is fed in compiled chunks (the stream's state carried)."""
    text = ("ROMEO: the moon loves juliet.\n" * 400)[:-1] + "é"  # > 4,096: several calls
    path = tmp_path / "prime.txt"
    path.write_bytes(text.replace("\n", "\r\n").encode())
    common = ["--length", "100", "--seed", "9", "--streams", "2"]
    given = play_here(tiny_run, *common, "--prime", text, capsys=capsys)
    from_file = play_here(tiny_run, *common, "--prime-file", str(path), capsys=capsys)
    assert given.returncode == from_file.returncode == 0, from_file.stderr
    assert from_file.stdout.replace("\r\n", "\n") == given.stdout  # (shown as it is)
    assert samples_of(given.stdout)[0].startswith(text)
    # the state after the long prime is the state of the whole text at once
    model, _ = runs.load_model(runs.find_checkpoint("tiny", str(tiny_run["checkpoints"]), print))
    codes = txtutils.DEFAULT.encode(text)
    chunked = Generator(model)
    chunked.start(codes[None, : len(codes) // 2], seed=0)
    chunked.feed(codes[None, len(codes) // 2 :])
    _, state = model.infer(codes[None].astype(np.int32), model.zero_state(1))
    np.testing.assert_allclose(chunked.state, state, atol=1e-5)
    for args, words in [
        (["--prime-file", str(tmp_path / "none.txt")], "cannot read"),
        (["--prime-file", str(path), "--prime", "x"], "not both"),
    ]:
        refused = play_here(tiny_run, *args, capsys=capsys)
        assert refused.returncode == 2 and words in refused.stderr, refused.stderr
    (tmp_path / "empty.txt").write_text("")
    empty = play_here(tiny_run, "--prime-file", str(tmp_path / "empty.txt"), capsys=capsys)
    assert empty.returncode == 2 and "the prime is empty" in empty.stderr
