"""Screenshot TensorBoard's scalar charts with headless Chromium: the README's picture
(docs/tensorboard.png).

    .venv/bin/python -m tools.screenshot_tensorboard log/RUNNAME curves.png
    .venv/bin/python -m tools.screenshot_tensorboard log/RUNNAME curves.png --tags loss accuracy \\
        --width 1600 --height 1000 --smoothing 0

It serves LOGDIR with a real TensorBoard on 127.0.0.1, opens the Time Series
dashboard filtered to the wanted tags (one chart per tag, one line per run, so
training and validation overlay), waits until every chart has drawn a line for
each run that logs its tag, and saves the page as a PNG. Needs Debian's
Chromium: apt-get install chromium.

Chromium is driven by Playwright (tools/browser.py) rather than run with
--screenshot: that one-shot mode can only guess, with a time budget, when the
charts are drawn, and cannot set TensorBoard's display settings, which live in
the page's localStorage (settings pane, outliers, smoothing, card width).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

from charrnn import cli
from tools import browser

PROG = "screenshot_tensorboard.py"
HOST = "127.0.0.1"
SIDEBAR = 0.2  # the runs list takes 20% of the width (TensorBoard's default)
CARD_WIDTH = 335, 735  # the card widths TensorBoard accepts (its settings slider)
CARD_GAP = 16  # the card grid's padding and the gap between cards
# this machine's network is closed: no QUIC traffic either; the picture has no scrollbars
BROWSER_ARGS = ["--disable-quic", "--hide-scrollbars"]

# How many lines each scalar card has drawn, by tag. forceSVG=true puts each
# line in the DOM as an SVG path (one per run, two with smoothing: raw + smoothed).
COUNT_LINES = """Object.fromEntries([...document.querySelectorAll("scalar-card")].map(card => [
    card.querySelector(".tag")?.title,
    [...card.querySelectorAll(".series-view path")].filter(p => p.getAttribute("d")).length]))"""


class ScreenshotError(Exception):
    """What went wrong, in one line the user can act on."""


def event_runs(logdir):
    """The TensorBoard runs under logdir: the folders holding event files, named
    as TensorBoard names them (relative, '/'-separated, '.' for logdir itself)."""
    runs = set()
    for folder, _, files in os.walk(logdir):
        if any("tfevents" in name for name in files):
            runs.add(os.path.relpath(folder, logdir).replace(os.sep, "/"))
    if not runs:
        raise ScreenshotError(f"no TensorBoard event files under {logdir}")
    return runs


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def last_line(path):
    """The last line a child process wrote to its log file, to quote in an error."""
    with open(path, errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[-1] if lines else "no message"


def wait_for_scalars(server, proc, log, runs, tags, deadline):
    """Wait until TensorBoard answers and lists every run and tag; return, for each
    wanted tag, how many runs log it: the lines its chart must show. TensorBoard
    lists runs as it finds them and adds their tags as it reads their files, so
    the answer counts only once it has held still for a while."""
    listed, scalars, still_since = None, None, time.monotonic()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ScreenshotError(
                f"TensorBoard exited with status {proc.returncode}: {last_line(log)}"
            )
        previous = scalars
        try:
            listed = set(get_json(f"{server}/data/runs"))
            scalars = get_json(f"{server}/data/plugin/scalars/tags")
        except OSError:
            pass  # not listening yet
        if scalars != previous:
            still_since = time.monotonic()
        still = time.monotonic() - still_since
        if scalars is not None and runs <= listed:
            have = {tag for run_tags in scalars.values() for tag in run_tags}
            missing = [tag for tag in tags if tag not in have]
            if not missing and still >= 1:
                return {tag: sum(tag in run_tags for run_tags in scalars.values()) for tag in tags}
            if missing and still >= 5:
                raise ScreenshotError(
                    f"no scalar tag {', '.join(missing)} in the logs "
                    f"(they have: {', '.join(sorted(have)) or 'none'})"
                )
        time.sleep(0.5)
    if listed is None:
        raise ScreenshotError(f"TensorBoard did not answer on {server} in time")
    raise ScreenshotError(
        f"TensorBoard did not list all the runs and tags in time (runs: "
        f"{', '.join(sorted(runs))}; tags: {', '.join(tags)})"
    )


def stop(proc, terminate=True):
    """Let proc end, asking it to (SIGTERM) if terminate; kill it if it takes over 10 s."""
    if terminate:
        proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def dashboard_url(server, tags):
    """The Time Series dashboard showing only the wanted tags. forceSVG: TensorBoard
    otherwise draws with WebGL, which headless Chromium without a GPU lacks."""
    tag_filter = "^(" + "|".join(re.escape(tag) for tag in tags) + ")$"
    query = urllib.parse.urlencode({"forceSVG": "true", "tagFilter": tag_filter})
    return f"{server}/?{query}#timeseries"


def display_settings(width, ntags, smoothing):
    """TensorBoard's settings, as its page stores them in localStorage: settings pane
    closed, y axes over all the data, and cards wide enough to share one row."""
    room = width * (1 - SIDEBAR) - CARD_GAP * (ntags + 1) - 24  # borders, scrollbar
    card = min(max(int(room / ntags), CARD_WIDTH[0]), CARD_WIDTH[1])
    return {
        "timeSeriesSettingsPaneOpened": False,
        "ignoreOutliers": False,
        "scalarSmoothing": smoothing,
        "timeSeriesCardMinWidth": card,
    }


def screenshot(url, settings, lines, width, height, deadline):
    """Open url in a width x height page with these settings, wait (until deadline)
    for each tag's chart to draw its lines, and return the PNG bytes."""
    with sync_playwright() as playwright:
        chromium = browser.launch(playwright, BROWSER_ARGS)
        try:
            page = chromium.new_page(
                viewport={"width": width, "height": height}, color_scheme="light"
            )
            store = (
                f"localStorage.setItem('_tb_global_settings', {json.dumps(json.dumps(settings))})"
            )
            page.add_init_script(store)  # before TensorBoard's own scripts read it
            page.goto(url)
            drawn = {}
            while any(drawn.get(tag, 0) < n for tag, n in lines.items()):
                if time.monotonic() > deadline:
                    shown = ", ".join(f"{tag} {drawn.get(tag, 0)}/{n}" for tag, n in lines.items())
                    raise ScreenshotError(
                        f"the charts were not drawn in time (lines: {shown}); "
                        "is the window large enough to show them all?"
                    )
                time.sleep(0.5)
                drawn = page.evaluate(COUNT_LINES) or {}
            # Lines in the DOM are painted on the next frame: wait for two to be sure.
            page.evaluate(
                "new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"
            )
            return page.screenshot(type="png")
        finally:
            chromium.close()


def run(args):
    try:
        browser.chromium()
    except browser.NoBrowser as e:
        raise ScreenshotError(e) from None
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise ScreenshotError(f"no folder to write {args.out} in")
    runs = event_runs(args.logdir)
    deadline = time.monotonic() + args.timeout
    server = f"http://{HOST}:{cli.free_ports(1, HOST)[0]}"
    with tempfile.TemporaryDirectory(prefix="screenshot_tensorboard.") as tmp:
        tb_log = os.path.join(tmp, "tensorboard.log")
        with open(tb_log, "w") as log:
            tensorboard = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tensorboard.main",
                    "--logdir",
                    args.logdir,
                    "--host",
                    HOST,
                    "--port",
                    server.rsplit(":", 1)[1],
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        try:
            lines = wait_for_scalars(server, tensorboard, tb_log, runs, args.tags, deadline)
            # A fresh time budget: TensorBoard's start-up must not eat Chromium's.
            png = screenshot(
                dashboard_url(server, args.tags),
                display_settings(args.width, len(args.tags), args.smoothing),
                lines,
                args.width,
                args.height,
                time.monotonic() + args.timeout,
            )
        except PlaywrightError as e:  # the browser quit, or refused: its first line
            raise ScreenshotError(f"Chromium: {str(e).splitlines()[0]}") from None
        finally:
            stop(tensorboard)
    with open(args.out, "wb") as f:
        f.write(png)


def main(argv=None):
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("logdir", help="a run's log folder, e.g. log/RUNNAME")
    parser.add_argument("out", help="the PNG file to write")
    parser.add_argument(
        "--tags",
        nargs="+",
        default=["loss", "accuracy"],
        help="scalar tags to show, one chart each (default: loss accuracy)",
    )
    parser.add_argument("--width", type=int, default=1600, help="page width in pixels")
    parser.add_argument("--height", type=int, default=1000, help="page height in pixels")
    parser.add_argument(
        "--smoothing",
        type=float,
        default=0.0,
        help="TensorBoard's smoothing, 0 to 0.99 (default 0: the raw values)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60,
        help="seconds to wait for TensorBoard, then for the charts (default 60)",
    )
    args = parser.parse_args(argv)
    if args.width < 400 or args.height < 300:
        parser.error("--width must be at least 400 and --height at least 300")
    if not 0 <= args.smoothing < 1:
        parser.error("--smoothing must be in [0, 1)")
    try:
        run(args)
    except ScreenshotError as e:
        cli.error(PROG, e)
        return 1  # not 2: as often TensorBoard or Chromium failing as bad input
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
