"""Screenshot an export's web page as it writes: the README's picture (docs/web.png).

    .venv/bin/python -m tools.screenshot_web OUT_DIR/web web.png
    .venv/bin/python -m tools.screenshot_web OUT_DIR/web web.png --query "prime=ROMEO:&seed=1" \\
        --width 1000 --height 640

It serves the folder with Python's http.server on 127.0.0.1, opens the page in Debian's
chromium (Playwright: tools/browser.py) with the query's settings and autostart=1, waits
until the text is written (length characters: the query's, default 400), and saves the
page as a PNG.
"""

import os
import sys
import urllib.parse

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

from charrnn import cli
from tools import browser

PROG = "screenshot_web.py"


def screenshot(web, query, width, height, timeout):
    """The PNG of the page of the folder web, opened with query (a dict), once written."""
    with browser.serving(web) as url, sync_playwright() as playwright:
        chromium = browser.launch(playwright, ["--hide-scrollbars"])
        try:
            page = chromium.new_page(
                viewport={"width": width, "height": height}, color_scheme="light"
            )
            page.goto(f"{url}index.html?{urllib.parse.urlencode(query)}")
            page.wait_for_selector(
                '#text[data-finished="1"], #text[data-state=error]',
                state="attached",
                timeout=timeout * 1000,
            )
            return page.screenshot(type="png")
        finally:
            chromium.close()


def main(argv=None):
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("web", help="an export's web page folder, e.g. export/RUN-ckpt-N/web")
    parser.add_argument("out", help="the PNG file to write")
    parser.add_argument(
        "--query",
        default="",
        help="the page's settings as URL parameters, e.g. 'prime=ROMEO:&seed=1&length=400'",
    )
    parser.add_argument("--width", type=cli.positive_int, default=1000, help="page width")
    parser.add_argument("--height", type=cli.positive_int, default=640, help="page height")
    parser.add_argument("--timeout", type=cli.positive_float, default=120, help="seconds")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.web, "index.html")):
        parser.error(f"{args.web} holds no index.html: name an export's web/ folder")
    query = {"length": "400", **dict(urllib.parse.parse_qsl(args.query)), "autostart": "1"}
    try:
        browser.chromium()
        png = screenshot(args.web, query, args.width, args.height, args.timeout)
    except browser.NoBrowser as e:
        cli.error(PROG, e)
        return 1
    except PlaywrightError as e:
        cli.error(PROG, f"Chromium: {str(e).splitlines()[0]}")
        return 1
    with open(args.out, "wb") as f:
        f.write(png)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
