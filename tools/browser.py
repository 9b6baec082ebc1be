"""Headless Chromium for the tests and the tools that look at a page: Debian's chromium
(apt-get install chromium), driven by Playwright (requirements.txt), which downloads no
browser of its own; and a folder served as any static file server serves it.

    with serving(folder) as url, sync_playwright() as p:
        browser = launch(p)
"""

import contextlib
import shutil
import subprocess
import sys
import time
import urllib.request

from charrnn import cli

HOST = "127.0.0.1"
# headless, and quiet: nothing but the page's own requests leaves the browser
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
MISSING = "chromium not found: apt-get install chromium (Debian's; no browser is downloaded)"


class NoBrowser(Exception):
    """There is no chromium to launch."""


def chromium():
    """The path of the system's chromium; NoBrowser if there is none."""
    path = shutil.which("chromium")
    if path is None:
        raise NoBrowser(MISSING)
    return path


def launch(playwright, args=()):
    """The system's chromium, headless, launched by playwright (sync_playwright())."""
    return playwright.chromium.launch(executable_path=chromium(), args=[*ARGS, *args])


@contextlib.contextmanager
def serving(folder, timeout=30):
    """Serve folder on a free port of 127.0.0.1 with Python's http.server, a plain
    static file server, as long as the block runs; yields its address."""
    [port] = cli.free_ports(1, HOST)
    command = [sys.executable, "-m", "http.server", "--bind", HOST, "--directory", folder]
    server = subprocess.Popen(
        [*command, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://{HOST}:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"http.server did not serve {folder} on {url}") from None
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)
