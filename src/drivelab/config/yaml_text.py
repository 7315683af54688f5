"""The one way drivelab reads YAML a user wrote: bounded alias expansion, one-line errors.

YAML aliases let a 400-byte file stand for gigabytes ("billion laughs": each level lists the
previous one nine times). PyYAML builds such a document as shared references, cheaply, but
whatever walks it afterwards (pydantic validation, an error message, ``yaml.safe_dump`` of a
grid value) expands it and hangs. So every YAML text drivelab reads from a user (configs,
overrides' values, sweep specs, a sweep folder's stored spec) goes through `parse_yaml`, which
counts the values the document stands for once expanded and refuses it when aliases add more
than `ALIAS_BUDGET` of them (no real config comes near: the shipped ones use no aliases), or
when an alias refers to the value that contains it (an infinite document).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from drivelab.config.base import ConfigError

#: How many values aliases may add to a document, once expanded (anchoring a head's settings
#: and reusing it a few times adds tens).
ALIAS_BUDGET = 10_000


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _expanded_size(root: Node, source: str) -> tuple[int, int]:
    """(values once every alias is expanded, distinct values), without expanding anything.

    Iterative (a deeply nested document must not exhaust the stack here) and memoised by node,
    so the cost is the size of the file, not of its expansion.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            line = node.start_mark.line + 1 if node.start_mark is not None else "?"
            raise ConfigError(f"{source}: line {line}: a YAML alias refers to the value that "
                              "contains it (an endless value); write the value out instead")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)], len(sizes)


def _first_line(exc: BaseException) -> str:
    """An exception's message, first line, at most 80 characters (it may quote the value)."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= 80 else text[:77] + "..."


def parse_yaml(text: str, source: str) -> Any:
    """The value a YAML text stands for; a `ConfigError` (one line naming ``source``) if it is
    not YAML, nests too deeply, or its aliases expand beyond `ALIAS_BUDGET` values."""
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # its reader refuses control characters at once
        node = loader.get_single_node()
        if node is None:
            return None
        expanded, distinct = _expanded_size(node, source)
        if expanded - distinct > ALIAS_BUDGET:
            raise ConfigError(
                f"{source}: YAML aliases (*name) expand it to more than {ALIAS_BUDGET:,} extra values "
                f"({expanded:.3g} in all), so it is refused; write the values out instead of aliasing them"
            )
        try:
            return loader.construct_document(node)
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. `2001-02-30`, `!!int x`
            raise ConfigError(f"{source}: a value YAML cannot read ({_first_line(exc)}); quote "
                              "it to keep it as text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{source}:{where} {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be a config (thousands of levels of "
                          "[ or {)") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml_file(path: Path) -> Any:
    """`parse_yaml` of a file, with one line for a file that is not UTF-8 text or not readable."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded): YAML files here are "
            "UTF-8 text; save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror or exc})") from None
    if "\x00" in text:
        raise ConfigError(f"{path} holds NUL bytes, so it is not a YAML text file")
    return parse_yaml(text, str(path))
