"""Shared test fixtures: a tiny corpus the tests write themselves, the flags of a tiny
run (tiny_flags, where), one tiny run of the real rnn_train.py that several test files
read, run_cli/run_clis, which start the programs as a user would, with a compilation
cache shared by the session, and run_main, which runs a program's main() in the
test's own process."""

import concurrent.futures
import fcntl
import json
import os
import pathlib
import random
import re
import signal
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

# The programs set this before TensorFlow loads (charrnn/tf_quiet.py). A test module
# that imports TensorFlow itself may load it first, in a worker's process, and then
# XLA's start-up lines (once a process) reach the stderr an in-process test compares.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Every program a test starts compiles the same few XLA functions again (1.6 s of the
# 7.6 s of a 60-step tiny run, measured on 2 idle cores). TensorFlow's persistent XLA
# cache, shared by the processes of one session, compiles each once; the executables it
# loads are the ones it saved, so results stay bit for bit the same. It lives in the
# session's pytest folder: never an entry from another machine or TensorFlow build.
_session = {}

# What TensorFlow logs each time it loads an entry of that cache: it tries the file as
# text before binary, and reads XLA's tuning flags as CPU features this one lacks. The
# test harness's doing, not the program's: cache_env's users drop these lines only.
CACHE_NOISE = re.compile(
    r"^(?:E\d{4} [\d:.]+ +\d+ (?:text_format\.cc:\d+\] Error parsing text-format "
    r"tensorflow\.XlaSerializedCacheEntry: |cpu_aot_loader\.cc:\d+\] Loading XLA:CPU AOT "
    r"result\. Target machine feature \+prefer-no-(?:scatter|gather) is not )"
    # absl's note before its first line of the above (the first thing it ever logs)
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
    r"STDERR$).*\n",
    re.MULTILINE,
)


def shared_folder(tmp_path_factory):
    """The pytest folder of the whole test run: the session's, or under pytest-xdist,
    the one that holds each worker's."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session", autouse=True)
def xla_cache(tmp_path_factory):
    """The folder of the session's XLA compilation cache (see cache_env), shared by
    the workers of pytest-xdist too."""
    _session["factory"] = tmp_path_factory
    _session["xla_cache"] = shared_folder(tmp_path_factory) / "xla-cache"
    _session["xla_cache"].mkdir(exist_ok=True)
    return _session["xla_cache"]


def session_folder(name):
    """A new folder in the session's pytest folder, for what several tests share."""
    return _session["factory"].mktemp(name)


def cache_env(env=None):
    """env (default: this process's) with the session's XLA cache turned on, for a
    program a test starts; read its stderr through without_cache_noise."""
    env = dict(os.environ if env is None else env)
    if "xla_cache" in _session:
        flag = f"--tf_xla_persistent_cache_directory={_session['xla_cache']}"
        env["TF_XLA_FLAGS"] = f"{env.get('TF_XLA_FLAGS', '')} {flag}".strip()
    return env


def without_cache_noise(stderr):
    """stderr (str or bytes) but the lines the XLA cache of cache_env logs."""
    if isinstance(stderr, bytes):
        return without_cache_noise(stderr.decode(errors="surrogateescape")).encode(
            errors="surrogateescape"
        )
    return CACHE_NOISE.sub("", stderr) if stderr else stderr


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
# A run extended by --resume --max-steps changes its length, so a cosine schedule, a
# warm-up cut to a share of the run or --dropout-from-epoch would take another path than
# the run trained in one go: tests of exact resumes use these.
FIXED_SCHEDULE = ["--schedule", "constant", "--warmup-share", "1", "--dropout-from-epoch", "0"]


def sigint_as_from_a_terminal():
    """A Popen preexec_fn: the child gets SIGINT at its default, as from a terminal. A
    suite started in the background (nohup, `&` in a script) passes SIGINT on ignored,
    and a test's Ctrl-C would then do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def where(root):
    """The flags that keep a test's runs under root: checkpoints in root/ck, logs in
    root/log."""
    root = os.fsdecode(root)
    return ["--checkpoint-dir", os.path.join(root, "ck"), "--log-dir", os.path.join(root, "log")]


def tiny_flags(root, data, validation="none"):
    """rnn_train.py's flags for a tiny run on data (a folder: its *.txt), under root:
    what most training tests share, so that each says only what differs."""
    return ["--data", os.path.join(data, "*.txt"), "--validation", validation, *TINY, *where(root)]


def run_main(main, *args, capsys):
    """A program's main(args) in this process, as run_cli runs it in another (a
    CompletedProcess): the same code without the seconds of importing TensorFlow,
    where the process itself is not what is tested."""
    capsys.readouterr()
    try:
        status = main(list(args))
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), status, out, err)


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
    env: the environment it gets (default: this one), plus the session's XLA cache,
    whose log lines are taken out of stderr."""
    if script.startswith("tools/"):  # a maintainer tool runs as a module of the checkout
        env = dict(os.environ if env is None else env, PYTHONPATH=HERE)
        command = [sys.executable, "-m", script.removesuffix(".py").replace("/", ".")]
    else:
        command = [sys.executable, os.path.join(HERE, script)]
    result = subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=cache_env(env),
        timeout=timeout,
        check=False,
    )
    result.stderr = without_cache_noise(result.stderr)
    return result


def run_clis(*calls, at_once=2):
    """run_cli(*call) for each call (a tuple of its arguments; a dict last holds its
    keyword arguments), at_once of them at a time: most of a tiny run is importing
    and compiling, one core each. Returns their results in the order of calls."""

    def run(call):
        *args, kwargs = call if call and isinstance(call[-1], dict) else (*call, {})
        return run_cli(*args, **kwargs)

    with concurrent.futures.ThreadPoolExecutor(max_workers=at_once) as pool:
        return list(pool.map(run, calls))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Train the tiny model for 120 steps through the real CLI, once for the whole test
    run (under pytest-xdist, the first worker that needs it trains it while the others
    wait for it). Returns a dict of paths and the CompletedProcess."""
    shared = shared_folder(tmp_path_factory)
    with open(shared / "tiny.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = shared / "tiny.json"
        if not done.exists():
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
            done.write_text(json.dumps([str(root), result.args, result.stdout, result.stderr]))
    root, args, stdout, stderr = json.loads(done.read_text())
    root = pathlib.Path(root)
    return {
        "root": root,
        "corpus": str(root / "corpus"),
        "checkpoints": root / "checkpoints",
        "log": root / "log",
        "result": subprocess.CompletedProcess(args, 0, stdout, stderr),
    }
