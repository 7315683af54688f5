"""A small document model that renders to Markdown and to one self-contained HTML page.

A model card is read in two places: as ``card.md`` next to the run (in a repository or on
GitHub, like the seeds' pages) and as an HTML page that must survive being mailed or copied
alone. Building the content once as blocks and rendering it twice keeps the two identical; the
HTML embeds every image as a base64 ``data:`` URI so it has no files beside it.

Inline text uses a Markdown subset: ``code``, *emphasis*, **strong** and [text](link).
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

MIME = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}


@dataclass
class Document:
    """An ordered list of blocks; image paths are relative to the folder the page lives in."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", level, text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", list(header), [list(r) for r in rows]))

    def image(self, path: str, alt: str, width: str | None = None) -> None:
        self.blocks.append(("img", path, alt, width))

    def pre(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def rule(self) -> None:
        self.blocks.append(("hr",))


# ------------------------------------------------------------------------------ Markdown
def to_markdown(doc: Document) -> str:
    lines = [f"# {doc.title}", ""]
    for block in doc.blocks:
        kind = block[0]
        if kind == "h":
            lines += [f"{'#' * block[1]} {block[2]}", ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "table":
            header, rows = block[1], block[2]
            lines.append("| " + " | ".join(_cell(h) for h in header) + " |")
            lines.append("|" + "|".join("---" for _ in header) + "|")
            lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
            lines.append("")
        elif kind == "img":
            _, path, alt, width = block
            if width:
                lines += [f'<img src="{path}" alt="{html.escape(alt)}" width="{width}">', ""]
            else:
                lines += [f"![{alt}]({path})", ""]
        elif kind == "pre":
            lines += ["```", block[1].rstrip("\n"), "```", ""]
        elif kind == "hr":
            lines += ["<br/>", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# ------------------------------------------------------------------------------ HTML
STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 980px;
       margin: 2em auto; padding: 0 1em; color: #1f2328; line-height: 1.5; }
h1 { border-bottom: 1px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 1.6em; }
code { background: #eff1f3; padding: .1em .35em; border-radius: 4px; font-size: 90%; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; border-radius: 6px; font-size: 85%; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border: 1px solid #d0d7de; padding: .3em .7em; text-align: left; }
td.num { text-align: right; white-space: nowrap; }
th { background: #f6f8fa; }
img { max-width: 100%; }
"""


def to_html(doc: Document, base: Path) -> str:
    """The page with every image read from ``base / path`` and embedded as a data URI."""
    body = [f"<h1>{html.escape(doc.title)}</h1>"]
    for block in doc.blocks:
        kind = block[0]
        if kind == "h":
            body.append(f"<h{block[1]}>{inline_html(block[2])}</h{block[1]}>")
        elif kind == "p":
            body.append(f"<p>{inline_html(block[1])}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            header, rows = block[1], block[2]
            head = "".join(f"<th>{inline_html(h)}</th>" for h in header)
            cells = "".join(
                "<tr>" + "".join(f"<td{_num(c)}>{inline_html(c)}</td>" for c in row) + "</tr>" for row in rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        elif kind == "img":
            _, path, alt, width = block
            size = f' width="{html.escape(width)}"' if width else ""
            body.append(f'<p><img src="{data_uri(base / path)}" alt="{html.escape(alt)}"{size}></p>')
        elif kind == "pre":
            body.append(f"<pre>{html.escape(block[1])}</pre>")
        elif kind == "hr":
            body.append("<hr>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(doc.title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


_NUMBER = re.compile(r"^(-|[-+]?\d[\d.,]*(e[-+]?\d+)?([±/@ ].*)?)$")


def _num(cell: str) -> str:
    """Numbers (``0.655±0.353``, ``5/10``, ``0.1255 (batch 350)``) line up on the right."""
    return ' class="num"' if _NUMBER.match(str(cell).strip()) else ""


def data_uri(path: Path) -> str:
    mime = MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


_CODE = re.compile(r"`([^`]+)`")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_STRONG = re.compile(r"\*\*([^*]+)\*\*")
_EM = re.compile(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])")


def inline_html(text: str) -> str:
    """The Markdown inline subset as HTML; code spans are protected from the other rules."""
    codes: list[str] = []

    def stash(match: re.Match[str]) -> str:
        codes.append(f"<code>{html.escape(match.group(1))}</code>")
        return f"\x00{len(codes) - 1}\x00"

    text = _CODE.sub(stash, str(text))
    text = html.escape(text, quote=False)
    text = _LINK.sub(lambda m: f'<a href="{_link(m.group(2))}">{m.group(1)}</a>', text)
    text = _STRONG.sub(r"<strong>\1</strong>", text)
    text = _EM.sub(r"<em>\1</em>", text)
    text = text.replace("  \n", "<br>\n")  # Markdown's hard line break
    return re.sub("\x00(\\d+)\x00", lambda m: codes[int(m.group(1))], text)


def _link(target: str) -> str:
    """Links between cards point at the HTML twin in the HTML page."""
    if target.endswith(".md"):
        target = target[: -len(".md")] + ".html"
    elif ".md#" in target:
        target = target.replace(".md#", ".html#")
    return html.escape(target, quote=True)
