"""The export's web page (rnn_export.py's OUT/web/) in a real browser: Debian's chromium,
driven by Playwright, the folder served by Python's http.server, a plain static file
server. An English model (the session's tiny run) and a Chinese one (trained here on
Tang poems) write with topn 1 exactly what rnn_play.py --topn 1 prints; a stop text,
Stop and Continue, an endless run, the int8 model, a seed, bad parameters; the page asks
no other host. And the runtime it runs, LiteRT.js: fetched once, its integrity checked,
offline a one-line error. Without chromium the browser tests skip, and on CI fail."""

import concurrent.futures
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

import rnn_export
from charrnn import cli, litertjs
from conftest import (
    HERE,
    cache_env,
    run_clis,
    sigint_as_from_a_terminal,
    tiny_flags,
    without_cache_noise,
)
from tools import browser

PRIME = "ROMEO:"
LENGTH = 300
ZH_PRIME = "春风\r\n☃"  # CRLF: read as LF; the snowman is in no Tang poem: unknown
ZH_LENGTH = 200
# what every page load asks its server for, and nothing else (the float32 model)
LOADED = {
    "index.html",
    "style.css",
    "charrnn.js",
    "model.json",
    "litertjs/core/index.js",
    "litertjs/wasm-utils/index.js",
    "litertjs/wasm/litert_wasm_internal.js",
    "litertjs/wasm/litert_wasm_internal.wasm",
    "step.tflite",
}
WAIT_MS = 60_000


def tang_poems(poems=8, times=15):
    """A Chinese text a tiny model learns in 120 steps: the first poems of 300 Tang poems
    (make corpus-zh) over and over (370 symbols), each time after a character of another
    poem, which occurs once: unknown to the model, which learns to write some (U+FFFD)."""
    with open(os.path.join(HERE, "fortunes-zh", "tang300.txt"), encoding="utf-8") as f:
        every = f.read().split("%\n")
    first = every[:poems]
    rare = iter(sorted(set("".join(every[poems:])) - set("".join(first)) - {"\n"}))
    return "".join(f"{next(rare)}{poem}%\n" for _ in range(times) for poem in first)


def serve_export(args, cwd):
    """rnn_export.py args --serve, until it serves: (its process, its address, what it
    printed before)."""
    [port] = cli.free_ports(1)
    command = [sys.executable, os.path.join(HERE, "rnn_export.py"), *args]
    proc = subprocess.Popen(
        [*command, "--serve", "--port", str(port)],
        cwd=cwd,
        env=cache_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_from_a_terminal,  # stop_serving's Ctrl-C
    )
    lines = []
    for line in proc.stdout:  # ends if it exits
        lines.append(line)
        if line.startswith("serving "):
            return proc, f"http://127.0.0.1:{port}/", lines
    raise AssertionError(
        f"rnn_export.py --serve: {lines} {without_cache_noise(proc.stderr.read())}"
    )


def stop_serving(proc):
    proc.send_signal(signal.SIGINT)  # Ctrl-C: how a user ends it
    assert proc.wait(timeout=30) == 0, proc.stderr.read()


@pytest.fixture(scope="module")
def exports(tiny_run, tmp_path_factory):
    """The session's tiny run exported by rnn_export.py --serve (into export/RUN-ckpt-N,
    served once), a Chinese tiny run trained and exported, and rnn_play.py --topn 1's
    text of each."""
    root = tmp_path_factory.mktemp("web")
    corpus = root / "zh-corpus"
    corpus.mkdir()
    (corpus / "tang.txt").write_text(tang_poems(), encoding="utf-8")
    en = ["tiny", "--checkpoint-dir", str(tiny_run["checkpoints"])]
    zh = ["zh", "--checkpoint-dir", str(root / "ck")]
    serving = None
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        meanwhile = pool.submit(
            run_clis,
            ("rnn_train.py", *tiny_flags(root, str(corpus)), "--run", "zh", "--max-steps", "120"),
            ("rnn_play.py", *en, "--prime", PRIME, "--length", str(LENGTH), "--topn", "1"),
            at_once=1,
        )
        try:
            serving, url, printed = serve_export(en, root)
            with urllib.request.urlopen(url + "index.html", timeout=30) as response:
                served = response.read().decode()
            stop_serving(serving)
        finally:
            if serving and serving.poll() is None:
                serving.kill()
        train, play_en = meanwhile.result()
    assert train.returncode == 0, train.stderr
    exported_zh, play_zh = run_clis(
        ("rnn_export.py", *zh, str(root / "zh")),
        ("rnn_play.py", *zh, "--prime", ZH_PRIME, "--length", str(ZH_LENGTH), "--topn", "1"),
    )
    for result in (play_en, exported_zh, play_zh):
        assert result.returncode == 0, result.stderr
    return {
        "root": root,
        "en": root / "export" / "tiny-ckpt-120" / "web",
        "zh": root / "zh" / "web",
        "printed": printed,
        "served": served,
        "play_en": play_en,
        "play_zh": play_zh,
        "tiny_run": tiny_run,
    }


@pytest.fixture(scope="module")
def chromium():
    """The system's chromium under Playwright; on CI its absence fails the tests."""
    try:
        browser.chromium()
    except browser.NoBrowser as e:
        if os.environ.get("CI"):
            pytest.fail(f"{e}: .ci/run installs it")
        pytest.skip(f"{e}: the web page is not tested in a browser")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = browser.launch(p)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def servers(exports):
    """Each model's web folder served by http.server, as any static server serves it."""
    with browser.serving(str(exports["en"])) as en, browser.serving(str(exports["zh"])) as zh:
        yield {"en": en, "zh": zh}


class Visit:
    """A page opened in a fresh browser context, what it asked for (a request to any
    other host is recorded and refused), and what it reported as an error."""

    def __init__(self, chromium, server, query):
        self.server = server
        self.context = chromium.new_context()
        self.local, self.foreign, self.errors = [], [], []
        self.context.route("**/*", self.route)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(f"exception: {e}"))
        self.page.on(
            "console", lambda m: m.type == "error" and self.errors.append(f"console: {m.text}")
        )
        self.page.goto(f"{server}index.html?{urllib.parse.urlencode(query)}")

    def route(self, route):
        url = route.request.url
        if url.startswith(self.server):
            self.local.append(urllib.parse.urlsplit(url).path.lstrip("/"))
            route.continue_()
        else:
            self.foreign.append(url)
            route.abort()

    def wait(self, state, ms=WAIT_MS):
        """Wait for the text's state (ready, running, stopped, done)."""
        self.page.wait_for_selector(f"#text[data-state={state}]", state="attached", timeout=ms)

    def click(self, button, state):
        """Click a button that starts a generation, and wait for it to end in state."""
        finished = int(self.page.get_attribute("#text", "data-finished") or 0)
        self.page.click(button)
        ended = f'#text[data-finished="{finished + 1}"]'
        self.page.wait_for_selector(ended, state="attached", timeout=WAIT_MS)
        assert self.page.get_attribute("#text", "data-state") == state

    def text(self):
        return self.page.eval_on_selector("#text", "e => e.textContent")

    def messages(self):
        return self.page.eval_on_selector_all("#message p", "ps => ps.map(p => p.textContent)")

    def close(self):
        self.context.close()
        assert self.foreign == [], "the page asked another host"
        assert self.errors == [], "the page reported an error in the console"


@pytest.fixture
def visit(chromium, servers):
    opened = []

    def open_page(which, **query):
        opened.append(Visit(chromium, servers[which], query))
        return opened[-1]

    yield open_page
    for page in opened:
        page.close()


def test_the_english_page_writes_what_rnn_play_prints_with_topn_1(visit, exports):
    page = visit("en", prime=PRIME, length=LENGTH, topn=1, autostart=1)
    page.wait("done")
    assert page.text() == exports["play_en"].stdout[:-1]  # rnn_play.py ends with a line feed
    assert page.page.get_attribute("#text", "data-done") == "true"
    assert set(page.local) == LOADED  # the page's files only, from its own server
    about = page.page.text_content("#about")
    for words in ("Run tiny, ckpt-120 (step 120)", "2 x 32 GRU", "98 symbols", "22,242 weights"):
        assert words in about
    assert re.search(r"a visit downloads 9\.\d MB \(model 98 kB, runtime 9\.7 MB\)", about)
    assert re.fullmatch(r"300 characters, [\d,]+ chars/s", page.page.text_content("#speed"))
    assert page.messages() == []


def test_the_chinese_page_writes_what_rnn_play_prints_with_topn_1(visit, exports):
    """Hundreds of symbols, a prime with CRLF and a character the model never saw: the
    page warns as rnn_play.py warns, shows the prime as typed, then the same text;
    sampling among all the characters, it writes some it knows only as unknown, U+FFFD."""
    page = visit("zh", prime=ZH_PRIME, length=ZH_LENGTH, topn=1, autostart=1)
    page.wait("done")
    play = exports["play_zh"]
    # (run_cli reads rnn_play.py's output with universal newlines: its CRLF as LF)
    assert page.text().replace("\r\n", "\n") == play.stdout[:-1]
    assert page.text().startswith(ZH_PRIME) and len(page.text()) == len(ZH_PRIME) + ZH_LENGTH
    assert re.search(r"[\u4e00-\u9fff]", page.text()[len(ZH_PRIME) :])
    [warning] = page.messages()
    assert warning == "1 of the prime's 4 characters are not in the model's alphabet: " + (
        "the model reads them as unknown"
    )
    assert warning in play.stderr
    with open(exports["zh"] / "model.json", encoding="utf-8") as f:
        symbols = json.load(f)["alphasize"]
    assert symbols > 300
    page.page.fill("input[name=topn]", str(symbols))  # all of them
    page.page.fill("input[name=length]", "1000")
    page.page.fill("input[name=seed]", "1")
    page.click("#generate", "done")
    prime = page.page.input_value("[name=prime]")  # the form's, its CRLF a line feed
    written = page.text()[len(prime) :]
    assert page.text().startswith(prime) and "\ufffd" in written
    # code 0's character is one the page writes, so a stop text may hold it
    page.page.fill("[name=stop]", "\ufffd")
    page.click("#generate", "done")
    assert page.messages() == [warning]
    assert page.text() == prime + written[: written.index("\ufffd") + 1]


def test_a_stop_text_ends_the_text_right_after_it(visit, exports):
    written = exports["play_en"].stdout[len(PRIME) : -1]
    stop = written[50:53]  # three characters it writes: their first time may be earlier
    page = visit("en", prime=PRIME, length=LENGTH, topn=1, stop=stop, autostart=1)
    page.wait("done")
    assert page.text() == PRIME + written[: written.index(stop) + len(stop)]
    # a stop text that holds a line feed stays whole in the form, for the next Generate
    line_feed = written.index("\n")
    stop = written[line_feed - 2 : line_feed + 1]
    page = visit("en", prime=PRIME, length=LENGTH, topn=1, stop=stop, autostart=1)
    page.wait("done")
    page.click("#generate", "done")
    assert page.text() == PRIME + written[: written.index(stop) + len(stop)]
    assert page.page.input_value("[name=stop]") == stop


def test_continue_goes_on_from_the_state(visit, exports):
    """150 characters, then Continue for 150 more: rnn_play.py's 300 in one go."""
    page = visit("en", prime=PRIME, length=LENGTH // 2, topn=1, autostart=1)
    page.wait("done")
    page.click("#continue", "done")
    assert page.text() == exports["play_en"].stdout[:-1]


def test_an_endless_run_stops_and_continues(visit):
    page = visit("en", prime=PRIME, length=0, autostart=1)
    page.page.wait_for_function("document.getElementById('text').textContent.length > 200")
    assert page.page.get_attribute("#text", "data-state") == "running"
    page.page.click("#stop")
    page.wait("stopped")
    stopped = page.text()
    time.sleep(0.3)
    assert page.text() == stopped and len(stopped) > 200
    assert page.page.get_attribute("#text", "data-done") is None  # stopped, not finished
    assert page.page.is_enabled("#continue") and page.page.is_disabled("#stop")
    # the link, and the address, write what is on the page: its length, not "until Stop"
    link = page.page.get_attribute("#link", "href")
    assert f"length={len(stopped) - len(PRIME)}&" in link and page.page.url.endswith(link)
    again = visit("en", **dict(urllib.parse.parse_qsl(link.split("?")[1])))
    again.wait("done")
    assert again.text() == stopped
    page.page.click("#continue")  # endless again
    assert page.page.is_hidden("#link")  # no link writes a text made in parts
    page.page.wait_for_function(
        f"document.getElementById('text').textContent.length > {len(stopped) + 100}"
    )
    page.page.click("#stop")
    page.wait("stopped")
    assert page.text().startswith(stopped)
    assert page.page.is_hidden("#link")


def test_a_prime_too_long_for_a_link_writes_and_says_so(visit):
    prime = "O Romeo, Romeo, wherefore art thou Romeo? " * 200  # 8,400 characters
    page = visit("en", prime=prime, length=20, autostart=1)
    page.wait("done")
    assert len(page.text()) == len(prime) + 20
    assert page.messages() == ["the prime is too long for a link: no link to this text"]
    assert page.page.is_hidden("#link") and "?" not in page.page.url


def test_a_page_whose_script_cannot_load_says_so(chromium, servers):
    context = chromium.new_context()
    try:
        context.route("**/charrnn.js", lambda route: route.abort())
        page = context.new_page()
        page.goto(servers["en"] + "index.html")
        page.wait_for_selector("#text[data-state=error]", state="attached", timeout=WAIT_MS)
        assert page.text_content("#message") == (
            "cannot load the page's scripts: serve the whole web/ folder that rnn_export.py wrote"
        )
    finally:
        context.close()


def test_the_int8_model_and_a_seed(visit, exports):
    """The int8 model, offered where it is much smaller, says what it costs; the same seed
    writes the same text, another seed another."""
    page = visit("en", prime=PRIME, length=200, seed=7, model="int8", autostart=1)
    page.wait("done")
    first = page.text()
    assert "step_int8.tflite" in page.local and "step.tflite" not in page.local
    assert re.search(r"int8 weights cost [+-]\d\.\d{4} nats/char", page.page.text_content("#about"))
    assert first.startswith(PRIME) and len(first) == len(PRIME) + 200
    page.click("#generate", "done")  # the form holds the URL's settings
    assert page.text() == first
    page.page.fill("input[name=seed]", "8")
    page.click("#generate", "done")
    assert page.text() != first and "seed=8" in page.page.url


BAD = {  # each parameter, its bad value, and the page's message
    "length": ("-1", 'length must be a whole number, 0 or more (0: until Stop), got "-1"'),
    "topn": ("0", 'topn must be a whole number from 1 to 98 (98: all), got "0"'),
    "temperature": ("warm", 'temperature must be a number above 0, got "warm"'),
    "seed": ("1.5", 'seed must be a whole number from 0 to 9007199254740991, got "1.5"'),
    "model": ("toString", 'model must be float32 or int8, got "toString"'),
    "autostart": ("yes", 'autostart must be 1 or 0, got "yes"'),
    "lenght": (
        "5",
        'unknown parameter "lenght": the parameters are prime, length, temperature, topn, '
        "seed, stop, model, autostart",
    ),
}


def test_bad_parameters_each_get_their_message(visit):
    """Each bad URL parameter, and a bad field of the form, is one line on the page,
    nothing is generated, and a good value then works."""
    page = visit("en", **{name: value for name, (value, _) in BAD.items()})
    page.wait("ready")
    assert sorted(page.messages()) == sorted(message for _, message in BAD.values())
    assert page.text() == "" and page.page.is_enabled("#generate")
    page = visit("en", topn=99, temperature=0, stop="☃")
    page.wait("ready")
    assert page.messages() == [
        'topn must be a whole number from 1 to 98 (98: all), got "99"',
        'temperature must be a number above 0, got "0"',
        'stop "☃" holds characters that are not in the model\'s alphabet: it could never '
        "be generated",
    ]
    page.page.fill("input[name=temperature]", "1")
    page.page.fill("[name=stop]", "")
    page.page.click("#generate")
    assert page.messages() == ['topn must be a whole number from 1 to 98 (98: all), got "99"']
    assert page.page.get_attribute("#text", "data-state") == "ready"
    page.page.fill("input[name=topn]", "98")  # 98: all the characters
    page.page.fill("input[name=length]", "50")
    page.click("#generate", "done")
    assert page.messages() == [] and len(page.text()) == 1 + 50  # after a line feed


def test_the_served_export_is_reused_and_says_where_it_is(exports):
    """rnn_export.py --serve exported into export/RUN-ckpt-N and served it; run again
    without a run's name (the newest run: the only one there), it serves that export as
    it is."""
    assert exports["printed"][0].endswith("exported to export/tiny-ckpt-120/\n")
    assert exports["printed"][-1].startswith("serving export/tiny-ckpt-120/web/ on http://")
    assert '<script type="importmap">' in exports["served"]
    checkpoints = str(exports["tiny_run"]["checkpoints"])
    proc, url, printed = serve_export(["--checkpoint-dir", checkpoints], exports["root"])
    try:
        assert len(printed) == 1 and printed[0].startswith("serving ")  # no export
        with urllib.request.urlopen(url + "model.json", timeout=30) as response:
            assert b'"checkpoint": "ckpt-120"' in response.read()
            # the next run's page may be served here: a browser asks before it reuses a file
            assert response.headers["Cache-Control"] == "no-cache"
    finally:
        stop_serving(proc)


def test_the_screenshot_tool_takes_the_page_once_written(chromium, exports, tmp_path):
    out = tmp_path / "web.png"
    web = str(exports["en"])
    taken, refused = run_clis(
        ("tools/screenshot_web.py", web, str(out), "--query", "prime=ROMEO:&length=100"),
        ("tools/screenshot_web.py", str(tmp_path), str(out)),
    )
    assert taken.returncode == 0, taken.stderr
    png = out.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", png[16:24]) == (1000, 640)  # the IHDR chunk: width, height
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "holds no index.html: name an export's web/ folder" in refused.stderr


# ---------------------------------------------------------------------------
# The runtime: LiteRT.js, its integrity pinned (no browser needed)


def test_a_tarball_of_another_integrity_is_refused(tmp_path):
    def download(url, limit):
        return b"not the package"

    with pytest.raises(litertjs.FetchError, match="has integrity sha512-.*refusing it"):
        litertjs.fetch(str(tmp_path), download=download)
    assert os.listdir(tmp_path) == []


def test_a_damaged_cache_is_fetched_again_and_never_unpacked(tmp_path):
    real = litertjs.fetch()  # the checkout's cache (make litertjs)
    fetched = []

    def download(url, limit):
        fetched.append(url)
        name = next(p.name for p in litertjs.PACKAGES if p.url == url)
        with open(real[name], "rb") as f:
            return f.read()

    paths = litertjs.fetch(str(tmp_path), download=download)
    assert len(fetched) == 2
    with open(paths["@litertjs/wasm-utils"], "r+b") as f:
        f.write(b"x")
    with pytest.raises(litertjs.FetchError, match="is not the pinned @litertjs/wasm-utils"):
        litertjs.unpack(paths, str(tmp_path / "web"))
    assert litertjs.fetch(str(tmp_path), download=download) == paths and len(fetched) == 3
    # a folder where a tarball should be: read as no tarball, and refused in words
    os.remove(paths["@litertjs/core"])
    os.mkdir(paths["@litertjs/core"])
    with pytest.raises(litertjs.FetchError, match="^cannot write .*core.*: Is a directory"):
        litertjs.fetch(str(tmp_path), download=download)
    assert len(fetched) == 4
    assert sorted(os.listdir(tmp_path)) == sorted(p.tarball for p in litertjs.PACKAGES) + ["web"]


def test_ctrl_c_while_fetching_the_runtime_leaves_no_temporary_file(tmp_path, monkeypatch, capsys):
    real = litertjs.fetch()  # the checkout's cache (make litertjs)

    def download(url, limit):
        name = next(p.name for p in litertjs.PACKAGES if p.url == url)
        with open(real[name], "rb") as f:
            return f.read()

    def interrupted(src, dst):  # Ctrl-C after the tarball is written, before its rename
        raise KeyboardInterrupt

    monkeypatch.setattr(litertjs.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        litertjs.fetch(str(tmp_path), download=download)
    assert os.listdir(tmp_path) == []
    # make litertjs: one line, the status of a Ctrl-C
    monkeypatch.setattr(litertjs, "CACHE", str(tmp_path))
    fetch = litertjs.fetch
    monkeypatch.setattr(litertjs, "fetch", lambda: fetch(str(tmp_path), download=download))
    assert litertjs.main([]) == 130
    assert capsys.readouterr().err == "charrnn.litertjs: stopped (Ctrl-C); nothing written\n"
    assert os.listdir(tmp_path) == []


def test_offline_the_export_is_one_line_and_nothing_written(tiny_run, tmp_path, monkeypatch, capfd):
    [port] = cli.free_ports(1)  # nothing listens there
    monkeypatch.setattr(litertjs, "REGISTRY", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(litertjs, "CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        rnn_export.main(["tiny", str(out), "--checkpoint-dir", str(tiny_run["checkpoints"])])
    assert e.value.code == 2
    [line] = capfd.readouterr().err.splitlines()
    assert line.startswith("rnn_export.py: error: the web page's runtime, LiteRT.js 2.5.3: ")
    assert "could not download" in line and line.endswith("(--no-web)")
    assert sorted(os.listdir(tmp_path)) == []  # no out, no cache, no temporary
    assert (
        rnn_export.main(
            ["tiny", str(out), "--checkpoint-dir", str(tiny_run["checkpoints"]), "--no-web"]
        )
        == 0
    )
    assert "web" not in os.listdir(out)
