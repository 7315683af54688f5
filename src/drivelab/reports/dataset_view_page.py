"""The HTML and JavaScript of `drivelab data view`'s page: no library, no network, opens from disk.

The plots are drawn by ~100 lines of plain JavaScript on <canvas> elements from the JSON embedded
in the page: a time cursor must follow the playing video 60 times a second, and the card's
pictures are matplotlib PNGs (static) while a charting library would either need a CDN (no network
when the page is opened) or add megabytes of inlined script. The video is a plain <video> element
playing H.264 MP4 (encoded with PyAV), which every browser decodes natively.
"""

from __future__ import annotations

import html
import json
from typing import Any

STYLE = """
body{font-family:system-ui,sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:16px 0 6px}
.meta{color:#555;font-size:13px;margin-bottom:8px}
table{border-collapse:collapse;font-size:12px} td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}
th{background:#eee} td.l,th.l{text-align:left} tr.pick{cursor:pointer} tr.pick:hover{background:#e8f0fb}
tr.on{background:#d4e4fa} .flag{color:#b00;font-weight:bold}
#episodes{max-height:260px;overflow-y:auto;display:inline-block;border:1px solid #ddd}
#player{display:flex;gap:16px;align-items:flex-start;margin-top:8px}
#left{flex:0 0 auto} video{width:384px;image-rendering:pixelated;background:#000;display:block}
#cursor{width:384px} #readout{font:12px monospace;white-space:pre;margin-top:6px}
#plots{flex:1 1 auto;min-width:420px} .plot{margin-bottom:4px}
.plot canvas{width:100%;height:92px;background:#fff;border:1px solid #ddd;display:block;cursor:crosshair}
.plot .t{font-size:12px;color:#333}
"""

SCRIPT = r"""
const DATA = JSON.parse(document.getElementById('view-data').textContent);
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#17becf', '#7f7f7f'];
const video = document.getElementById('video'), cursor = document.getElementById('cursor');
const readout = document.getElementById('readout'), plots = document.getElementById('plots');
let ep = null, frame = 0, canvases = [];

function pick(index, at) {
  ep = DATA.episodes.find(e => e.index === index) || DATA.episodes[0];
  if (!ep) return;
  document.querySelectorAll('tr.pick').forEach(r => r.classList.toggle('on', +r.dataset.index === ep.index));
  document.getElementById('title').textContent = 'episode ' + ep.index + ' (' + ep.split + ', ' + ep.length +
      ' frames, ' + ep.source + ')';
  cursor.max = ep.length - 1;
  plots.innerHTML = '';
  canvases = ep.series.map(s => {
    const div = document.createElement('div'); div.className = 'plot';
    const t = document.createElement('div'); t.className = 't';
    t.textContent = s.label + (s.unit ? ' [' + s.unit + ']' : '') + '  ';
    if (s.lines.length > 1) s.lines.forEach((l, k) => {
      const key = document.createElement('span'); key.style.color = COLORS[k % COLORS.length];
      key.textContent = (l.dashed ? '- - ' : '\u2014 ') + l.name + '  '; t.append(key);
    });
    const c = document.createElement('canvas');
    c.addEventListener('click', e => seek(Math.round(e.offsetX / c.clientWidth * (ep.length - 1))));
    div.append(t, c); plots.append(div);
    return {c, s};
  });
  video.src = ep.video;
  seek(at || 0);
}

function seek(f) {
  frame = Math.max(0, Math.min(ep.length - 1, f | 0));
  video.currentTime = (frame + 0.5) / ep.video_fps;
  draw();
}

function range(s) {
  let lo = s.low, hi = s.high;
  if (lo === null || hi === null) {
    const all = s.lines.flatMap(l => l.values.filter(v => v !== null));
    if (lo === null) lo = Math.min(...all); if (hi === null) hi = Math.max(...all);
  }
  if (!(hi > lo)) { hi = lo + 1; }
  return [lo, hi];
}

function draw() {
  cursor.value = frame;
  document.body.dataset.frame = frame;
  const text = ['frame ' + frame + '  t=' + (frame / ep.fps).toFixed(2) + ' s'];
  for (const {c, s} of canvases) {
    const w = c.clientWidth, h = c.clientHeight, dpr = window.devicePixelRatio || 1;
    if (c.width !== w * dpr) { c.width = w * dpr; c.height = h * dpr; }
    const g = c.getContext('2d'); g.setTransform(dpr, 0, 0, dpr, 0, 0); g.clearRect(0, 0, w, h);
    const [lo, hi] = range(s), n = ep.length, x = i => (n > 1 ? i / (n - 1) : 0.5) * (w - 2) + 1;
    const y = v => h - 3 - (v - lo) / (hi - lo) * (h - 6);
    if (lo < 0 && hi > 0) { g.strokeStyle = '#ccc'; g.beginPath(); g.moveTo(0, y(0)); g.lineTo(w, y(0)); g.stroke(); }
    s.lines.forEach((l, k) => {
      g.strokeStyle = COLORS[k % COLORS.length]; g.lineWidth = l.dashed ? 1.5 : 1; g.setLineDash(l.dashed ? [4, 3] : []);
      g.beginPath(); let up = false;
      l.values.forEach((v, i) => { if (v === null) { up = false; return; } up ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v)); up = true; });
      g.stroke();
    });
    g.setLineDash([]); g.strokeStyle = '#000'; g.lineWidth = 1;
    const cx = Math.round(x(frame)) + 0.5; g.beginPath(); g.moveTo(cx, 0); g.lineTo(cx, h); g.stroke();
    c.dataset.cursor = cx;
    const hot = s.onehot ? s.lines.find(l => l.values[frame] > 0.5) : null;
    if (s.onehot) { text.push(s.label.padEnd(26) + (hot ? hot.name : '-')); continue; }
    text.push(s.label.padEnd(26) + s.lines.map(l => l.name + '=' + (l.values[frame] === null ? '-' : (+l.values[frame]).toFixed(3))).join('  '));
  }
  readout.textContent = text.join('\n');
}

function fromVideo() {
  const f = Math.min(ep.length - 1, Math.floor(video.currentTime * ep.video_fps));
  if (f !== frame) { frame = f; draw(); }
}
function follow() { if (ep && !video.paused) { fromVideo(); requestAnimationFrame(follow); } }
video.addEventListener('play', () => requestAnimationFrame(follow));
video.addEventListener('timeupdate', () => { if (ep) fromVideo(); });  // where animation frames are throttled
video.addEventListener('seeked', () => { if (ep && video.paused) fromVideo(); });
cursor.addEventListener('input', () => { video.pause(); seek(+cursor.value); });
document.querySelectorAll('tr.pick').forEach(r => r.addEventListener('click', () => pick(+r.dataset.index, 0)));
window.addEventListener('keydown', e => {
  if (e.key === 'ArrowRight') seek(frame + 1); else if (e.key === 'ArrowLeft') seek(frame - 1);
  else if (e.key === ' ') { e.preventDefault(); video.paused ? video.play() : video.pause(); }
});
const want = new URLSearchParams(location.hash.slice(1));
pick(want.has('episode') ? +want.get('episode') : (DATA.episodes[0] || {}).index, +(want.get('frame') || 0));
"""


def render_page(title: str, meta_lines: list[str], header: list[str], rows: list[dict[str, Any]],
                data: dict[str, Any]) -> str:
    """The whole page; ``rows`` are the episode table (``cells``, ``index``, ``viewable``)."""
    esc = html.escape
    head = "".join(f'<th class="{"l" if h in ("source", "flags") else ""}">{esc(h)}</th>' for h in header)
    body = []
    for row in rows:
        cls = ' class="pick"' if row["viewable"] else ""
        cells = "".join(
            f'<td class="{"l" if h in ("source", "flags") else ""}{" flag" if h == "flags" and v else ""}">{esc(str(v))}</td>'
            for h, v in zip(header, row["cells"], strict=True))
        body.append(f'<tr{cls} data-index="{row["index"]}">{cells}</tr>')
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    metas = "".join(f'<div class="meta">{esc(m)}</div>' for m in meta_lines)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{esc(title)}</h1>{metas}
<h2>Episodes (click a highlighted row to play it)</h2>
<div id="episodes"><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>
<h2 id="title">no episode rendered</h2>
<div id="player"><div id="left"><video id="video" controls muted playsinline preload="auto"></video>
<input id="cursor" type="range" min="0" max="0" value="0" step="1"><div id="readout"></div></div>
<div id="plots"></div></div>
<script type="application/json" id="view-data">{payload}</script>
<script>{SCRIPT}</script>
</body></html>
"""
