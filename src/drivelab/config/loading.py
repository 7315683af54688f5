"""Reading configs: YAML files, ``key.sub=value`` overrides, and one-line errors.

Pydantic reports a list of nested locations; a person at a terminal needs one sentence naming
the key and what it accepts. This module turns validation errors into that sentence, applies
dotted overrides (including list items addressed by index or by output name) and round-trips the
fully resolved config that a run folder stores.
"""

from __future__ import annotations

import copy
import reprlib
import types
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from drivelab.config.base import ConfigError
from drivelab.config.schema import ExperimentConfig
from drivelab.config.shipped import resolve_config_path
from drivelab.config.yaml_text import parse_yaml, read_yaml_file
from drivelab.errors import clip

# ----------------------------------------------------------------------------- errors, loading


def _format_loc(parts: Iterable[str | int]) -> str:
    return ".".join(clip(str(p), 80) for p in parts) or "<root>"


def _strip_union_tags(loc: Sequence[str | int]) -> list[str | int]:
    """Drop the tag pydantic inserts after a discriminated-union field (``optimizer.sgd.x``).

    The user wrote ``train.optimizer.x``; the tag is an internal detail of the schema.
    """
    cleaned: list[str | int] = []
    model: Any = ExperimentConfig
    index = 0
    while index < len(loc):
        part = loc[index]
        cleaned.append(part)
        index += 1
        annotation = _field_annotation(model, part)
        if annotation is None:
            model = None
            continue
        field = model.model_fields[part] if isinstance(part, str) else None
        if field is not None and field.discriminator and index < len(loc):
            tag = loc[index]
            index += 1
            model = _union_member(annotation, tag)
            continue
        model = _inner_model(annotation)
        if model is not None and _is_list(annotation) and index < len(loc):
            cleaned.append(loc[index])
            index += 1
    return cleaned


def _field_annotation(model: Any, part: str | int) -> Any:
    if model is None or not isinstance(part, str):
        return None
    field = getattr(model, "model_fields", {}).get(part)
    return None if field is None else field.annotation


def _unwrap(annotation: Any) -> list[Any]:
    """The leaf types of an annotation (through Annotated, unions, Optional)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [leaf for arg in get_args(annotation) for leaf in _unwrap(arg)]
    return [annotation]


def _discriminator(model: Any, part: str | int) -> str | None:
    if model is None or not isinstance(part, str):
        return None
    field = getattr(model, "model_fields", {}).get(part)
    discriminator = None if field is None else field.discriminator
    return discriminator if isinstance(discriminator, str) else None


def _is_list(annotation: Any) -> bool:
    return any(get_origin(leaf) is list for leaf in _unwrap(annotation))


def _inner_model(annotation: Any) -> Any:
    for leaf in _unwrap(annotation):
        candidates = [leaf, *get_args(leaf)] if get_origin(leaf) is list else [leaf]
        for candidate in candidates:
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                return candidate
    return None


def _union_member(annotation: Any, tag: Any) -> Any:
    for leaf in _unwrap(annotation):
        if isinstance(leaf, type) and issubclass(leaf, BaseModel):
            name_field = leaf.model_fields.get("name")
            if name_field is not None and name_field.default == tag:
                return leaf
    return None


def _value_repr() -> reprlib.Repr:
    """How much of a user's value a message shows: ``repr`` of a huge value would build the
    whole text first, so reprlib stops early (depth 3, 6 items, 80 characters)."""
    shown = reprlib.Repr()  # keyword arguments need Python 3.12
    shown.maxlevel, shown.maxstring, shown.maxother, shown.maxlong = 3, 80, 80, 40
    shown.maxlist = shown.maxtuple = shown.maxdict = shown.maxset = 6
    return shown


#: A validator's own sentence may quote the value; longer than this, it is cut.
_MESSAGE_LIMIT = 300




def _short(value: Any) -> str:
    """A user's value as a message shows it: its repr, at most 80 characters."""
    return clip(_value_repr().repr(value), 80)


def _describe(error: ErrorDetails) -> str:
    """One line for one pydantic error: the user's key, what is wrong, what is allowed."""
    loc = _strip_union_tags(list(error["loc"]))
    kind = error["type"]
    ctx = error.get("ctx", {})
    where = _format_loc(loc)
    if kind == "unknown_key":
        key = _format_loc([*loc, clip(str(ctx["key"]), 80)])
        hint = f"did you mean {ctx['suggestion']!r}? " if ctx.get("suggestion") else ""
        return f"{key}: unknown key; {hint}allowed keys: {', '.join(ctx['allowed'])}"
    if kind == "located":
        return f"{_format_loc([*loc, *ctx['path']])}: {clip(str(ctx['message']), _MESSAGE_LIMIT)}"
    if kind == "missing":
        return f"{where}: required, but missing"
    if kind == "literal_error":
        return f"{where}: {_short(error['input'])} is not allowed; expected {ctx['expected']}"
    if kind == "union_tag_invalid":
        return (
            f"{where}.name: {_short(ctx['tag'])} is not allowed; expected one of "
            f"{ctx['expected_tags']}"
        )
    if kind == "union_tag_not_found":
        return f"{where}: missing 'name' (which kind to use)"
    if kind == "value_error":
        return f"{where}: {clip(str(ctx['error']), _MESSAGE_LIMIT)}"
    if kind == "model_type" or kind == "dict_type":
        return f"{where}: expected a mapping of keys, got {_short(error['input'])}"
    message = clip(error["msg"], _MESSAGE_LIMIT)
    message = message[0].lower() + message[1:]
    return f"{where}: {message}, got {_short(error['input'])}"


def _config_error(exc: ValidationError) -> ConfigError:
    errors = exc.errors(include_url=False)
    line = _describe(errors[0])
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return ConfigError(line)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.0.c`` in nested dicts/lists; a list item may also be named by its ``output``.

    The schema is followed alongside so that addressing an item of a list the file does not
    set (the default heads, say) fails with a hint instead of inventing a mapping.
    """
    parts = key.split(".")
    node: Any = data
    schema: Any = ExperimentConfig
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        here = ".".join(parts[: depth + 1])
        if isinstance(node, dict):
            if last:
                node[part] = value
                return
            annotation = _field_annotation(schema, part)
            existing = node.get(part)
            discriminator = _discriminator(schema, part)
            if isinstance(existing, str) and discriminator:
                node[part] = {discriminator: existing}  # ``optimizer: sgd`` shorthand
            elif existing is not None and not isinstance(existing, dict | list):
                raise ConfigError(f"{key}: {here} is a value ({_short(existing)}), not a section")
            elif existing is None:
                if annotation is not None and _is_list(annotation):
                    raise ConfigError(
                        f"{key}: {here} is not set in the config, so it has no item to change; "
                        f"give the whole list, e.g. {here}=[...]"
                    )
                node[part] = {}
            node = node[part]
            schema = _inner_model(annotation) if annotation is not None else None
        elif isinstance(node, list):
            position = _list_position(node, part, here)
            if last:
                node[position] = value
                return
            node = node[position]
        else:
            parent = ".".join(parts[:depth])
            raise ConfigError(f"{key}: {parent} is a value ({_short(node)}), not a section")


def _list_position(items: list[Any], part: str, here: str) -> int:
    if part.isdigit() and int(part) < len(items):
        return int(part)
    for position, item in enumerate(items):
        if isinstance(item, dict) and item.get("output") == part:
            return position
    names = [str(item["output"]) for item in items if isinstance(item, dict) and "output" in item]
    allowed = f"0..{len(items) - 1}" + (f" or {', '.join(names)}" if names else "")
    raise ConfigError(f"{here}: no list item {part!r}; expected an index {allowed}")


def dotted_keys(model: Any = ExperimentConfig, prefix: str = "") -> list[str]:
    """Every settable key of the schema as an override spells it (``train.max_batches``); a
    command line's ``--max-batches`` is matched against these for its hint."""
    keys = []
    for name, field in model.model_fields.items():
        inner = _inner_model(field.annotation)
        if inner is not None and not _is_list(field.annotation) and not field.discriminator:
            keys += dotted_keys(inner, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides to raw config data; values are parsed as YAML.

    So ``train.lr=0.01``, ``model.neck=[512,256]``, ``model.history=null`` and
    ``model.heads.steering.weight=2`` (a head addressed by its output name) all work.
    """
    result = copy.deepcopy(dict(data))
    for text in overrides:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.lr=0.01")
        value = parse_yaml(raw, f"override {key}={_short(raw)}")
        _set_dotted(result, key, value)
    return result


def parse_config(data: Mapping[str, Any], overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Validate raw config data (plus overrides) into an :class:`ExperimentConfig`."""
    try:
        return ExperimentConfig.model_validate(apply_overrides(data, overrides))
    except ValidationError as exc:
        raise _config_error(exc) from None


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read a YAML config file (or a shipped one by name, `drivelab.config.shipped`), apply
    ``key.sub=value`` overrides, and validate it."""
    path = resolve_config_path(path)
    data = read_yaml_file(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top, got {_short(data)}")
    return parse_config(data, overrides)


def dump_config(config: ExperimentConfig) -> str:
    """The fully resolved config as YAML (every default written out), readable by load_config."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
