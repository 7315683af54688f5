"""Open a `drivelab data view` page in headless Chromium: errors, video playback, cursor and plots.

    python scripts/check_data_view.py VIEW/index.html [--screenshot shot.png] [--episode 3 --frame 120]

A copy of the page with two small scripts added is written beside it (its videos are relative
files) and removed afterwards: the first, at the top of <head>, records every uncaught error,
unhandled rejection and ``console.error`` before the page's own script runs; the second, on load,
waits for the video's first frame, plays it and checks that the time moved and the plots' cursor
followed, then moves the range slider to the last frame and checks the cursor went there. The
verdict is written into the DOM, which ``--dump-dom`` prints. Exit status: 0 all fine, 1 a check
failed, 2 no browser / bad arguments.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_card_html import (  # the card check's browser runner
    _chromium,
    find_browser,
    take_screenshot,
)

#: Runs of the browser before the check gives up on a probe that did not finish.
TRIES = 3

ERRORS = """<script>
window.__viewErrors = [];
window.addEventListener('error', e => __viewErrors.push('error: ' + (e.message || (e.target && e.target.src) || e)), true);
window.addEventListener('unhandledrejection', e => __viewErrors.push('rejection: ' + e.reason));
const __consoleError = console.error;
console.error = (...args) => { __viewErrors.push('console.error: ' + args.join(' ')); __consoleError(...args); };
</script>"""

PROBE = """<script>
window.addEventListener('load', async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const video = document.getElementById('video'), slider = document.getElementById('cursor');
  const cursorX = () => { const c = document.querySelector('.plot canvas'); return c ? +c.dataset.cursor : null; };
  const r = {errors: window.__viewErrors, plots: document.querySelectorAll('.plot canvas').length};
  for (let i = 0; i < 100 && video.readyState < 2 && !video.error; i++) await sleep(50);
  r.ready = video.readyState; r.video_error = video.error ? video.error.code : null;
  r.duration = video.duration; r.width = video.videoWidth;
  r.frame_before = +document.body.dataset.frame; r.cursor_before = cursorX();
  video.currentTime = 0;
  try { await video.play(); r.played = true; } catch (e) { r.played = false; r.errors.push('play: ' + e); }
  for (let i = 0; i < 100 && video.currentTime < Math.min(0.6, video.duration * 0.5); i++) await sleep(50);
  await sleep(100);
  r.time_after_play = video.currentTime; r.frame_after_play = +document.body.dataset.frame;
  r.cursor_after_play = cursorX();
  video.pause();
  slider.value = slider.max; slider.dispatchEvent(new Event('input'));
  await sleep(100);
  r.slider_max = +slider.max; r.frame_after_slider = +document.body.dataset.frame;
  r.cursor_after_slider = cursorX(); r.video_time_after_slider = video.currentTime;
  r.readout = document.getElementById('readout').textContent.split('\\n')[0];
  const out = document.createElement('pre'); out.id = 'view-check';
  out.textContent = 'VIEW-CHECK ' + JSON.stringify(r); document.body.appendChild(out);
});
</script>"""


def check(page: Path, screenshot: Path | None = None, episode: int | None = None, frame: int = 0,
          width: int = 1200, height: int = 900) -> dict:
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium/Chrome on PATH (apt-get install chromium)")
    html = page.read_text(encoding="utf-8")
    page = page.resolve()
    probe = page.parent / f".check-{uuid.uuid4().hex[:8]}.html"
    probe.write_text(html.replace("<head>", "<head>" + ERRORS, 1).replace("</body>", PROBE + "</body>"),
                     encoding="utf-8")
    try:
        for _ in range(TRIES):  # a loaded machine may spend the virtual-time budget before the probe ends
            dumped = _chromium(browser, "--autoplay-policy=no-user-gesture-required", "--dump-dom", probe.as_uri())
            match = re.search(r"VIEW-CHECK (\{.*\})", dumped.stdout)
            if match is not None:
                break
    finally:
        probe.unlink()
    if match is None:
        raise RuntimeError(f"the browser did not run the check (exit {dumped.returncode}): {dumped.stderr[-300:]}")
    result = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    result["ok"] = bool(
        not result["errors"] and result["ready"] >= 2 and result["video_error"] is None and result["played"]
        and result["time_after_play"] > 0 and result["frame_after_play"] > result["frame_before"]
        and result["cursor_after_play"] > result["cursor_before"]
        and result["frame_after_slider"] == result["slider_max"]
        and result["cursor_after_slider"] > result["cursor_after_play"])
    if screenshot is not None:
        anchor = f"#episode={episode}&frame={frame}" if episode is not None else f"#frame={frame}"
        result["screenshot"] = take_screenshot(browser, page.resolve().as_uri() + anchor, screenshot, width, height)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("--screenshot", type=Path, default=None)
    parser.add_argument("--episode", type=int, default=None)
    parser.add_argument("--frame", type=int, default=0)
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args()
    if not args.page.is_file():
        print(f"error: {args.page} does not exist", file=sys.stderr)
        return 2
    try:
        result = check(args.page, args.screenshot, args.episode, args.frame, args.width, args.height)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
