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
tub with holes is worse than being told.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivelab.interop.dataset_out import InteropError

NUMERIC_TYPES = {"float", "int", "boolean", "nparray", "list", "vector"}
_V1_RECORD = re.compile(r"^record_(\d+)\.json$")


@dataclass(frozen=True)
class TubRecord:
    """One frame of a tub: its index, session, time, image file and JSON values."""

    index: int
    session: str
    timestamp_ms: float | None
    image: Path
    values: dict[str, Any]


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
    missing = [r.image for r in tub.records if not r.image.is_file()]
    if missing:
        raise InteropError(
            f"{path}: {len(missing)} image file(s) the catalog names are missing (first: "
            f"{missing[0]}); restore them or delete those records in donkeycar"
        )
    return tub


def _json_line(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InteropError(f"{where} is not JSON ({exc.msg}: {text[:60]!r}); the tub is damaged") from None


def _image_key(path: Path, inputs: list[str], types: list[str]) -> str:
    keys = [k for k, t in zip(inputs, types, strict=False) if t == "image_array"]
    if not keys:
        raise InteropError(f"{path}: the tub records no camera (no input of type image_array)")
    return "cam/image_array" if "cam/image_array" in keys else keys[0]


def _read_v2(path: Path) -> Tub:
    lines = (path / "manifest.json").read_text(encoding="utf-8").splitlines()
    if len(lines) < 5:
        raise InteropError(
            f"{path}/manifest.json has {len(lines)} line(s), a tub v2 manifest has 5 "
            "(inputs, types, metadata, manifest metadata, catalogs): the tub is damaged"
        )
    inputs, types, _meta, _manifest_meta, catalogs = (
        _json_line(line, f"{path}/manifest.json line {i}") for i, line in enumerate(lines[:5], 1)
    )
    if not isinstance(catalogs, dict) or "paths" not in catalogs:
        raise InteropError(f"{path}/manifest.json line 5 lacks the catalog list (paths): the tub is damaged")
    key = _image_key(path, inputs, types)
    deleted = set(catalogs.get("deleted_indexes", []))
    tub = Tub(path, 2, list(inputs), list(types), key)
    for name in catalogs["paths"]:
        catalog = path / name
        if not catalog.is_file():
            raise InteropError(f"{catalog} is missing (manifest.json lists it): the tub is damaged")
        for lineno, line in enumerate(catalog.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            rec = _json_line(line, f"{catalog} line {lineno}")
            index = int(rec.get("_index", -1))
            if index in deleted:
                tub.deleted += 1
                continue
            if key not in rec:
                raise InteropError(f"{catalog} line {lineno}: record {index} has no {key} image")
            tub.records.append(TubRecord(
                index, str(rec.get("_session_id", "")), _float_or_none(rec.get("_timestamp_ms")),
                path / "images" / rec[key], rec,
            ))
    return tub


def _read_v1(path: Path) -> Tub:
    meta = _json_line((path / "meta.json").read_text(encoding="utf-8"), f"{path}/meta.json")
    inputs, types = list(meta.get("inputs", [])), list(meta.get("types", []))
    key = _image_key(path, inputs, types)
    files = sorted((int(m.group(1)), p) for p in path.iterdir() if (m := _V1_RECORD.match(p.name)))
    if not files:
        raise InteropError(f"{path}: a tub v1 with no record_*.json files")
    tub = Tub(path, 1, inputs, types, key)
    for index, file in files:
        rec = _json_line(file.read_text(encoding="utf-8"), str(file))
        if key not in rec:
            raise InteropError(f"{file}: the record has no {key} image")
        tub.records.append(TubRecord(index, "", _float_or_none(rec.get("milliseconds")), path / rec[key], rec))
    return tub


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)
