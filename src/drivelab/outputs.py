"""The one way a verb writes a file the user named: checked up front, never clobbering, atomic.

Every ``--json``, ``--plot``, ``--out``, ``--video``, card and compare output goes through here,
so the promise "nothing lost or overwritten" is kept in one place instead of once per verb:

- `check_output` runs *before* any work (a track driven, a model trained) and refuses a wrong
  suffix, a parent that is a plain file, an existing file (unless ``force``), a directory where a
  file is expected, and any path inside a drivelab dataset or inside a run's own bookkeeping
  (``run.json``, ``config.yaml``, checkpoints, ...). The refusal is one `OutputError` line.
- `write_text` / `write_bytes` / `atomic_output` write to a temporary name in the same folder and
  move it into place at the end, so a crash leaves the old file or the whole new one. Without
  ``force`` the final step is a hard link, which fails if another process created the file in the
  meantime: the check and the write cannot race into an overwrite.

Reports that drivelab regenerates in place (a run's ``card.md`` and its pictures, a line's
``index.md``) use `write_generated`: the folder keeps a small manifest of what drivelab wrote
(``.drivelab-outputs.json``, name -> sha256), so running `drivelab card` again replaces the card
it wrote, but a file the user made or edited there is refused unless ``force``.

This module sits at the bottom of the import graph (it imports only `drivelab.errors`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from drivelab.errors import DrivelabError

DATASET_FORMAT = "drivelab.dataset"
RUN_MARKERS = ("run.json", "config.yaml")
# A run's own files and folders: written by the trainer only, never by a user-named output.
RUN_PROTECTED = (
    "run.json", "config.yaml", "periods.json", "metrics.jsonl", "watch.jsonl", "init_report.json",
    "processor.json", "checkpoints", "tb", ".train.lock",
)


class OutputError(DrivelabError):
    """An output path that would overwrite, damage or not hold what a verb writes."""


def _is_dataset(folder: Path) -> bool:
    try:
        root = json.loads((folder / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(root, dict) and root.get("attributes", {}).get("format") == DATASET_FORMAT


def _is_run(folder: Path) -> bool:
    return all((folder / marker).is_file() for marker in RUN_MARKERS)


def protected_owner(path: Path) -> str | None:
    """Why ``path`` belongs to drivelab's own data (a dataset, a run's bookkeeping), else None."""
    resolved = path.resolve()
    for parent in resolved.parents:
        if _is_dataset(parent):
            return f"it lies inside the drivelab dataset {parent}"
        if _is_run(parent):
            first = resolved.relative_to(parent).parts[0]
            if first in RUN_PROTECTED:
                return f"{first} is part of the run {parent}"
    if resolved.is_dir() and _is_dataset(resolved):
        return f"{resolved} is a drivelab dataset"
    return None


#: ``--json -`` (or any output flag given ``-``): the file is standard output, as Unix tools read it
STDOUT = "-"


def is_stdout(path: str | Path | None) -> bool:
    """Whether an output path names standard output (``-``)."""
    return path is not None and str(path) == STDOUT


def check_output(
    path: str | Path,
    flag: str,
    suffixes: Iterable[str] = (),
    force: bool = False,
) -> Path:
    """Refuse, before any work, an output file that cannot be written without losing something.

    ``flag`` names the option in the message (``--json``); ``suffixes`` (``.png``) are the
    accepted file types, case-insensitive; ``force`` allows replacing an existing plain file
    (never a directory, a dataset or a run's bookkeeping).
    """
    path = Path(path)
    if is_stdout(path):  # nothing to clobber
        return path
    allowed = tuple(s.lower() for s in suffixes)
    if allowed and path.suffix.lower() not in allowed:
        raise OutputError(
            f"{flag} {path}: the file must end in {' or '.join(allowed)} "
            f"(got {path.suffix or 'no suffix'})"
        )
    _check_parent(path, flag)
    owner = protected_owner(path)
    if owner is not None:
        raise OutputError(f"{flag} {path}: refusing to write there, {owner}; choose a path outside it")
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a folder: name a file")
    if path.exists() or path.is_symlink():
        if not force:
            raise OutputError(
                f"{flag} {path} already exists: choose a new name, or add --force to replace it "
                "(nothing was written)"
            )
        if not path.is_file():
            raise OutputError(f"{flag} {path} exists and is not a plain file: choose a new name")
    return path


def check_output_dir(path: str | Path, flag: str) -> Path:
    """A folder a verb fills with new files: it may exist, but must be a folder we may write into."""
    path = Path(path)
    _check_parent(path, flag)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path} is a file, not a folder: name a folder")
    owner = protected_owner(path / "_")
    if owner is not None:
        raise OutputError(f"{flag} {path}: refusing to write there, {owner}; choose a folder outside it")
    return path


def _check_parent(path: Path, flag: str) -> None:
    """Every existing ancestor must be a folder we can write into (a file there is a typo)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{flag} {path}: {parent} is a file, not a folder; choose another path")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise OutputError(f"{flag} {path}: the folder {parent} is not writable")
            return


@contextlib.contextmanager
def atomic_output(path: str | Path, force: bool = False, flag: str = "output") -> Iterator[Path]:
    """Yield a temporary path to write (``savefig``, ``PIL.save``), then move it to ``path``.

    The temporary file keeps ``path``'s suffix, so writers that pick a format by suffix still
    do. Nothing is left behind when the writer fails.
    """
    path = Path(path)
    if not force and (path.exists() or path.is_symlink()):
        check_output(path, flag)  # raises the one-line refusal
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        _commit(tmp, path, force, flag)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {path} ({exc.strerror or exc}): nothing was replaced") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _commit(tmp: Path, path: Path, force: bool, flag: str) -> None:
    if force:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if the file appeared since the check: no silent overwrite
    except FileExistsError as exc:
        raise OutputError(f"{flag} {path} appeared while writing: nothing was replaced") from exc
    except OSError:  # a file system without hard links: the up-front check has to do
        if path.exists():
            raise OutputError(f"{flag} {path} appeared while writing: nothing was replaced") from None
        os.replace(tmp, path)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a power cut after it must not bring the old file back)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: str | Path, payload: bytes, force: bool = False, flag: str = "output") -> Path:
    """Write a whole file atomically (see the module docstring); ``-`` writes to standard output."""
    if is_stdout(path):
        sys.stdout.flush()
        buffer = getattr(sys.stdout, "buffer", None)  # a text-only stdout (captured) takes text
        if buffer is None:
            sys.stdout.write(payload.decode("utf-8"))
        else:
            buffer.write(payload)
            buffer.flush()
        return Path(path)
    with atomic_output(path, force=force, flag=flag) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def write_text(path: str | Path, text: str, force: bool = False, flag: str = "output") -> Path:
    return write_bytes(path, text.encode("utf-8"), force=force, flag=flag)


def write_json(path: str | Path, data: object, force: bool = False, flag: str = "output") -> Path:
    return write_text(path, json.dumps(data, indent=2) + "\n", force=force, flag=flag)


MANIFEST = ".drivelab-outputs.json"


def _digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _read_manifest(folder: Path) -> dict[str, str]:
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def is_generated(path: Path) -> bool:
    """True when ``path`` is exactly the file drivelab last wrote there (unmodified since)."""
    recorded = _read_manifest(path.parent).get(path.name)
    try:
        return recorded is not None and recorded == _digest(path.read_bytes())
    except OSError:
        return False


def check_generated(path: str | Path, flag: str, force: bool = False) -> Path:
    """Like `check_output`, but a file drivelab generated there before may be regenerated."""
    path = Path(path)
    if path.is_file() and (force or is_generated(path)):
        return path
    return check_output(path, flag, force=force)


def write_generated(path: str | Path, payload: bytes | str, force: bool = False, flag: str = "output") -> Path:
    """Write a regenerable report file and record its digest in the folder's manifest."""
    path = check_generated(path, flag, force)
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    write_bytes(path, data, force=True, flag=flag)  # checked just above: ours, or forced
    _record(path, data, flag)
    return path


@contextlib.contextmanager
def generated_output(path: str | Path, force: bool = False, flag: str = "output") -> Iterator[Path]:
    """`write_generated` for writers that need a file name (``savefig``, ``PIL.save``)."""
    path = check_generated(path, flag, force)
    with atomic_output(path, force=True, flag=flag) as tmp:
        yield tmp
        staged = tmp.read_bytes()
    _record(path, staged, flag)


def _record(path: Path, data: bytes, flag: str) -> None:
    """Note ``path``'s digest in its folder's manifest: the proof that drivelab wrote it."""
    manifest = _read_manifest(path.parent)
    manifest[path.name] = _digest(data)
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    write_bytes(path.parent / MANIFEST, text.encode("utf-8"), force=True, flag=flag)


def check_regenerable(paths: Iterable[Path], flag: str, force: bool = False) -> None:
    """Before regenerating a report: every existing file among ``paths`` must be drivelab's own.

    One line lists the files the user made or edited, so nothing is replaced unless ``force``.
    """
    foreign = [p for p in paths if (p.exists() or p.is_symlink()) and not (force or is_generated(p))]
    if foreign:
        shown = ", ".join(str(p) for p in foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputError(
            f"{flag}: {shown} was not written by drivelab (or was edited since): add --force to "
            "replace it, or move it away (nothing was written)"
        )
