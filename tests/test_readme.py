"""The README stays short and true: its runnable commands run, its flags exist, its links resolve.

A README drifts the moment a flag is renamed or a doc is moved, and nobody notices until a new
user pastes a command. So the README's command blocks marked ``<!-- runnable -->`` (the line
before the fence) are run in order, through the real `drivelab` command line, in a fresh folder,
on data they make themselves (tiny by design: a few short episodes, five batches); every
``drivelab ...`` command written anywhere in README.md or docs/cli.md must name a verb and flags
that ``--help`` knows; and every relative link of README.md and docs/ must point at a file
(and, for a ``#fragment`` into a Markdown file, at one of its headings).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").rglob("*.md"))
MARKER = "<!-- runnable -->"
#: the README is a first screen and a map; long text belongs under docs/
README_MAX_CHARS = 15_000

FENCE = re.compile(r"^```[^\n]*\n.*?^```[ \t]*$", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_REF = re.compile(r"""<(?:img|a)\b[^>]*?\b(?:src|href)=["']([^"']+)["']""", re.I)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def runnable_blocks(text: str) -> list[list[str]]:
    """The command lines of each fenced block whose fence follows a ``<!-- runnable -->`` line.

    A trailing backslash joins a line to the next; blank lines and ``#`` comments are dropped.
    """
    blocks: list[list[str]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        assert i + 1 < len(lines) and lines[i + 1].startswith("```"), f"{MARKER} on line {i + 1} is not before a fence"
        commands, pending = [], ""
        for body in lines[i + 2:]:
            if body.startswith("```"):
                break
            if body.rstrip().endswith("\\"):
                pending += body.rstrip()[:-1] + " "
                continue
            command = (pending + body).strip()
            pending = ""
            if command and not command.startswith("#"):
                commands.append(command)
        blocks.append(commands)
    return blocks


def drivelab_args(command: str) -> list[str]:
    """``drivelab VERB ...`` as the argument list after ``drivelab`` (comments dropped)."""
    words = shlex.split(command, comments=True)
    assert words and words[0] == "drivelab", f"a runnable line must be a drivelab command: {command!r}"
    return words[1:]


def without_code(text: str) -> str:
    """Markdown with fenced blocks and inline code removed (a link inside code is not a link)."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: Path) -> set[str]:
    text = FENCE.sub("", markdown.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def test_readme_is_short() -> None:
    size = len(README.read_text(encoding="utf-8"))
    assert size < README_MAX_CHARS, f"README.md has {size} characters; move long text under docs/"


def test_every_relative_link_resolves() -> None:
    broken = []
    for page in [README, *DOCS]:
        text = without_code(page.read_text(encoding="utf-8"))
        for target in [*LINK.findall(text), *HTML_REF.findall(text)]:
            if SCHEME.match(target):
                continue
            path_part, _, fragment = target.partition("#")
            where = page if not path_part else (page.parent / path_part).resolve()
            if not where.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif fragment and where.suffix == ".md" and fragment not in anchors(where):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no heading #{fragment})")
            elif ROOT not in where.parents and where != ROOT:
                broken.append(f"{page.relative_to(ROOT)}: {target} (outside the repository)")
    assert not broken, "\n".join(broken)


def _command_tree() -> Any:
    """The verbs as Click sees them (typer vendors its own Click: groups are told by ``commands``)."""
    from drivelab.cli import app

    return typer.main.get_command(app)


def _written_commands(text: str) -> list[str]:
    """Every ``drivelab ...`` command in code: lines of fenced blocks and inline code spans."""
    found = []
    for block in FENCE.findall(text):
        joined = block.replace("\\\n", " ")
        found += [line.strip() for line in joined.splitlines() if line.strip().startswith("drivelab ")]
    found += [span for span in re.findall(r"`(drivelab [^`\n]+)`", FENCE.sub("", text))]
    return found


@pytest.mark.parametrize("page", [README, ROOT / "docs" / "cli.md"], ids=lambda p: p.name)
def test_written_commands_name_real_verbs_and_flags(page: Path) -> None:
    """A command written in the README or docs/cli.md names a verb and flags `--help` lists."""
    tree = _command_tree()
    wrong = []
    for command in _written_commands(page.read_text(encoding="utf-8")):
        words = command.split("#", 1)[0].split()[1:]
        node, path = tree, ["drivelab"]
        while hasattr(node, "commands") and words and words[0] in node.commands:
            node = node.commands[words[0]]
            path.append(words.pop(0))
        if words and words[0].isupper():  # a placeholder: `drivelab VERB --help`
            continue
        if hasattr(node, "commands") and words and re.fullmatch(r"[a-z][a-z|-]*", words[0]):
            # `drivelab data import gtsrb|imagefolder` names alternatives: each must exist
            for alternative in words[0].split("|"):
                if alternative not in node.commands:
                    wrong.append(f"{command!r}: no verb {' '.join(path)} {alternative}")
            continue
        if node is tree and words:
            wrong.append(f"{command!r}: no verb {words[0]!r}")
            continue
        known = {name for param in node.params for name in [*param.opts, *param.secondary_opts]} | {"--help"}
        for word in words:
            for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", word):
                if flag not in known:
                    wrong.append(f"{command!r}: {' '.join(path)} has no {flag}")
    assert not wrong, "\n".join(wrong)


def test_a_shipped_config_has_a_live_section() -> None:
    """`drivelab live` has a runnable example: the shipped config the README names."""
    from drivelab.config import load_config

    config = load_config("carracing/live_pilotnet", ["data.path=unused.zarr"])
    # what `drivelab live` demands before Ray starts: a live: section with a stop, no fixed val split
    assert config.live is not None and config.live.stop.seconds, config.live
    assert config.data.val_split is None
    assert "carracing/live_pilotnet" in README.read_text(encoding="utf-8")


def test_runnable_readme_blocks_run(tmp_path: Path) -> None:
    """The README's runnable blocks, in order, in one fresh folder, through the real CLI."""
    blocks = runnable_blocks(README.read_text(encoding="utf-8"))
    assert blocks and all(blocks), f"README.md has no {MARKER} block with commands"
    for block in blocks:
        for command in block:
            result = run_cli(*drivelab_args(command), cwd=tmp_path, timeout=240)
            assert result.returncode == 0, f"{command}\nexit {result.returncode}\n{result.stderr[-3000:]}"


def test_every_verb_has_a_readme_section_and_a_cli_md_section() -> None:
    """A new verb gets its few README lines (a bold label) and its full text in docs/cli.md."""
    tree = _command_tree()
    verbs = {name for name in tree.commands if name != "data"}
    verbs |= set(tree.commands["data"].commands)
    labels = re.findall(r"^\*\*([^*]+)\*\*:", README.read_text(encoding="utf-8"), re.M)
    in_readme = {word for label in labels for word in re.split(r"[\s/]+", label)}
    headings = re.findall(r"^## (.+)$", (ROOT / "docs" / "cli.md").read_text(encoding="utf-8"), re.M)
    in_cli_md = {word.strip(",") for heading in headings for word in heading.split()}
    assert not verbs - in_readme, f"verbs without a README section: {sorted(verbs - in_readme)}"
    assert not verbs - in_cli_md, f"verbs without a docs/cli.md section: {sorted(verbs - in_cli_md)}"
