"""Read a donkeycar tub (v2, and the older v1) into plain records, checking everything first.

Tub v2 is what donkeycar 4.x/5.x writes (`donkeycar/parts/tub_v2.py`, `datastore_v2.py`)::

    TUB/manifest.json          five JSON lines: inputs, types, user metadata, manifest metadata
                               (created_at, sessions), catalog metadata (paths, current_index,
                               max_len, deleted_indexes)
    TUB/catalog_N.catalog      one JSON record per line: the inputs plus _index, _session_id,
                               _timestamp_ms; an ``image_array`` input holds a file name
    TUB/catalog_N.catalog_manifest   line lengths (donkeycar's seek index; not needed to read)
    TUB/images/<index>_<key with / as _>_.jpg

Tub v1 (donkeycar <= 3) is ``TUB/meta.json`` (``{"inputs": [...], "types": [...]}``) and one
``record_<index>.json`` per frame with the image files beside it; its records carry a
``milliseconds`` timestamp when the car recorded one.

Unlike donkeycar's own iterator, which prints "Ignoring record" and skips a line that is not
JSON, a bad line here stops the import with the file and line named: silently training on a
tub with holes is worse than being told. Every value the tub supplies is checked for its type
before use (a record must be a JSON object, ``_index`` an integer, a file name a relative path),
and every file it names must lie inside the tub (`drivelab.interop.source_paths.inside`): a
catalog naming ``/etc/passwd`` is refused, never read. Messages name the file and line, never
repeat what the line holds.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivelab.interop.dataset_out import InteropError
from drivelab.interop.source_paths import clipped, inside, short_repr

NUMERIC_TYPES = {"float", "int", "boolean", "nparray", "list", "vector"}
_V1_RECORD = re.compile(r"^record_(\d+)\.json$")


@dataclass(frozen=True)
class TubRecord:
    """One frame of a tub: its index, session, time, image file and JSON values.

    ``where`` names the record for messages (``TUB/catalog_0.catalog line 7 (_index 6)``).
    """

    index: int
    session: str
    timestamp_ms: float | None
    image: Path
    values: dict[str, Any]
    tub: Path
    where: str


@dataclass
class Tub:
    """A tub as read from disk: its inputs and types, live records, and what was skipped."""

    path: Path
    version: int
    inputs: list[str]
    types: list[str]
    image_key: str
    records: list[TubRecord] = field(default_factory=list)
    deleted: int = 0

    def numeric_keys(self) -> list[str]:
        return [k for k, t in zip(self.inputs, self.types, strict=False) if t in NUMERIC_TYPES]


def read_tub(path: Path) -> Tub:
    """The tub at ``path`` (v2 or v1), every record parsed and every image file checked."""
    if not path.is_dir():
        raise InteropError(f"{path} is not a folder: give a donkeycar tub folder")
    if (path / "manifest.json").is_file():
        tub = _read_v2(path)
    elif (path / "meta.json").is_file():
        tub = _read_v1(path)
    else:
        raise InteropError(
            f"{path} is not a donkeycar tub: expected manifest.json + catalog_*.catalog (tub v2) "
            "or meta.json + record_*.json (tub v1)"
        )
    missing = [r for r in tub.records if not r.image.is_file()]
    if missing:
        raise InteropError(
            f"{path}: {len(missing)} image file(s) the catalog names are missing (first: "
            f"{missing[0].image}, {missing[0].where}); restore them or delete those records in donkeycar"
        )
    return tub


def _read_text(file: Path, what: str) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InteropError(f"{what} is not UTF-8 text: the tub is damaged") from None
    except OSError as exc:
        raise InteropError(f"{what} cannot be read ({exc.strerror})") from None


def _json_line(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:  # the message names the place, never the line's text
        raise InteropError(f"{where} is not JSON ({exc.msg} at column {exc.colno}); the tub is damaged") from None
    except RecursionError:
        raise InteropError(f"{where} is not JSON a tub holds (nested too deeply); the tub is damaged") from None


def _string_list(value: Any, where: str, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InteropError(f"{where}: the {what} must be a list of strings, not {type(value).__name__}; "
                           "the tub is damaged")
    return value


def _image_key(path: Path, inputs: list[str], types: list[str]) -> str:
    keys = [k for k, t in zip(inputs, types, strict=False) if t == "image_array"]
    if not keys:
        raise InteropError(f"{path}: the tub records no camera (no input of type image_array)")
    return "cam/image_array" if "cam/image_array" in keys else keys[0]


def _index(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InteropError(f"{where}: _index is {short_repr(value, 40)}, not a record number (an integer >= 0); "
                           "the tub is damaged")
    return value


def _timestamp(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InteropError(f"{where}: the timestamp is {short_repr(value, 40)}, not a finite number of "
                           "milliseconds; the tub is damaged")
    return float(value)


def _record(text: str, where: str) -> dict[str, Any]:
    rec = _json_line(text, where)
    if not isinstance(rec, dict):
        raise InteropError(f"{where}: a record must be a JSON object, not a JSON {_json_kind(rec)}; "
                           "the tub is damaged")
    return rec


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _read_v2(path: Path) -> Tub:
    manifest = path / "manifest.json"
    lines = _read_text(inside(path, manifest.name, str(path)), str(manifest)).splitlines()
    if len(lines) < 5:
        raise InteropError(
            f"{manifest} has {len(lines)} line(s), a tub v2 manifest has 5 "
            "(inputs, types, metadata, manifest metadata, catalogs): the tub is damaged"
        )
    inputs, types, _meta, _manifest_meta, catalogs = (
        _json_line(line, f"{manifest} line {i}") for i, line in enumerate(lines[:5], 1)
    )
    inputs = _string_list(inputs, f"{manifest} line 1", "inputs")
    types = _string_list(types, f"{manifest} line 2", "types")
    if len(inputs) != len(types):
        raise InteropError(f"{manifest}: {len(inputs)} inputs but {len(types)} types; the tub is damaged")
    if not isinstance(catalogs, dict) or not isinstance(catalogs.get("paths"), list):
        raise InteropError(f"{manifest} line 5 lacks the catalog list (paths): the tub is damaged")
    deleted_raw = catalogs.get("deleted_indexes", [])
    if not isinstance(deleted_raw, list) or not all(isinstance(i, int) for i in deleted_raw):
        raise InteropError(f"{manifest} line 5: deleted_indexes must be a list of integers; the tub is damaged")
    key = _image_key(path, inputs, types)
    deleted = set(deleted_raw)
    tub = Tub(path, 2, list(inputs), list(types), key)
    for name in catalogs["paths"]:
        catalog = inside(path, name, f"{manifest} line 5 (catalog paths)")
        if not catalog.is_file():
            raise InteropError(f"{path / name} is missing (manifest.json lists it): the tub is damaged")
        shown_catalog = path / name
        for lineno, line in enumerate(_read_text(catalog, str(shown_catalog)).splitlines(), 1):
            if not line.strip():
                continue
            where = f"{shown_catalog} line {lineno}"
            rec = _record(line, where)
            index = _index(rec.get("_index"), where)
            if index in deleted:
                tub.deleted += 1
                continue
            where = f"{where} (_index {index})"
            if key not in rec:
                raise InteropError(f"{where}: the record has no {clipped(key)} image")
            tub.records.append(TubRecord(
                index, str(rec.get("_session_id", "")), _timestamp(rec.get("_timestamp_ms"), where),
                inside(path, rec[key], where, under="images"), rec, path, where,
            ))
    return tub


def _read_v1(path: Path) -> Tub:
    meta = _json_line(_read_text(inside(path, "meta.json", str(path)), f"{path}/meta.json"), f"{path}/meta.json")
    if not isinstance(meta, dict):
        raise InteropError(f"{path}/meta.json must be a JSON object with inputs and types; the tub is damaged")
    inputs = _string_list(meta.get("inputs", []), f"{path}/meta.json", "inputs")
    types = _string_list(meta.get("types", []), f"{path}/meta.json", "types")
    key = _image_key(path, inputs, types)
    files = sorted((int(m.group(1)), p) for p in path.iterdir() if (m := _V1_RECORD.match(p.name)))
    if not files:
        raise InteropError(f"{path}: a tub v1 with no record_*.json files")
    tub = Tub(path, 1, inputs, types, key)
    for index, file in files:
        where = str(file)
        rec = _record(_read_text(inside(path, file.name, where), where), where)
        if key not in rec:
            raise InteropError(f"{file}: the record has no {clipped(key)} image")
        tub.records.append(TubRecord(index, "", _timestamp(rec.get("milliseconds"), where),
                                     inside(path, rec[key], where), rec, path, where))
    return tub
