"""Open a model card's HTML page in headless Chromium: screenshot it and find broken images.

    python scripts/check_card_html.py runs/<line>/<line>_v1/card.html --screenshot card.png

A card page must stand alone (every picture embedded as a data URI), so the check loads it in a
real browser from a temporary copy with nothing beside it, then asks the browser itself which
<img> elements failed to decode (``complete`` with ``naturalWidth == 0``): a malformed base64
string or a wrong MIME type shows up here even when the HTML looks right. A small script is
appended to that copy; it writes the verdict into the DOM, which ``--dump-dom`` prints.
The screenshot is of the page as written. Exit status: 0 every image fine (a page may have none),
1 broken images or external references, 2 no browser / bad arguments.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PROBE = """
<script>
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  const broken = images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt || i.src.slice(0, 40));
  const sizes = images.map(i => [i.alt, i.naturalWidth, i.naturalHeight]);
  const out = document.createElement('pre');
  out.id = 'card-check';
  out.textContent = 'CARD-CHECK ' + JSON.stringify({images: images.length, broken: broken, sizes: sizes});
  document.body.appendChild(out);
});
</script>
"""


def find_browser() -> str | None:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def _chromium(browser: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    common = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--allow-file-access-from-files",
              "--virtual-time-budget=10000"]
    return subprocess.run([browser, *common, *args], capture_output=True, text=True, timeout=timeout)


def take_screenshot(browser: str, url: str, screenshot: Path, width: int, height: int) -> str:
    """Chromium's screenshot of ``url`` at ``width`` x ``height``; the file's path (or raise)."""
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    shot = _chromium(browser, f"--screenshot={screenshot.resolve()}", f"--window-size={width},{height}", url)
    if not screenshot.is_file():
        raise RuntimeError(f"no screenshot written (exit {shot.returncode}): {shot.stderr[-300:]}")
    return str(screenshot)


def external_references(html: str) -> list[str]:
    """src/href values that would need a file or the network (data: URIs and anchors are fine)."""
    refs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html) + re.findall(r'<link[^>]*\shref="([^"]*)"', html)
    return [r for r in refs if not r.startswith("data:")]


def check(page: Path, screenshot: Path | None, width: int = 1200, height: int = 3000) -> dict:
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium/Chrome on PATH (apt-get install chromium)")
    html = page.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        alone = Path(tmp) / "page.html"  # nothing beside it: relative files would break
        alone.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
        dumped = _chromium(browser, "--dump-dom", alone.as_uri())
    match = re.search(r"CARD-CHECK (\{.*\})", dumped.stdout)
    if match is None:
        raise RuntimeError(f"the browser did not run the check (exit {dumped.returncode}): {dumped.stderr[-300:]}")
    result = json.loads(match.group(1).replace("&quot;", '"'))
    result["external"] = external_references(html)
    if screenshot is not None:
        result["screenshot"] = take_screenshot(browser, page.resolve().as_uri(), screenshot, width, height)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("--screenshot", type=Path, default=None)
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=3000)
    args = parser.parse_args()
    if not args.page.is_file():
        print(f"error: {args.page} does not exist", file=sys.stderr)
        return 2
    try:
        result = check(args.page, args.screenshot, args.width, args.height)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 1 if result["broken"] or result["external"] else 0


if __name__ == "__main__":
    sys.exit(main())
