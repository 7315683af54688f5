"""Ray Tune's state in a sweep folder is pickles: drivelab restores only the ones it recorded.

The trust boundary: `Tuner.restore` unpickles ``tune/tune/tuner.pkl``, the newest
``experiment_state-*.json`` (JSON holding hex-encoded cloudpickles), ``basic-variant-state-*.json``
and ``callback-states-*.pkl`` (pickles despite some names), and per-trial ``*.pkl``. Unpickling
runs any code the file names, so a crafted sweep folder (downloaded, shared, or edited by someone
else) would run code as the user on ``drivelab sweep --resume``. drivelab therefore keeps the
sha256 of every such file in its own JSON (`CHECKSUMS`, plain data, never unpickled), sealed with
an HMAC under a key only this user can read (`key_path`, made on first use): a bare checksum next
to the pickle would simply be rewritten by whoever crafts the pickle. The record is written:

- right after Tune writes ``tuner.pkl`` (before any trial runs), with ``closed: false``;
- when `Tuner.fit` returns, with ``closed: true``; when it raises (a second Ctrl-C, a bug), with
  ``closed: false`` (Tune's background upload may not have finished).

A resume refuses, in one line naming the file, a ``tuner.pkl`` that is not recorded or differs,
and, after a driver that closed, any other state file that is not recorded or differs. After a
driver that died (kill -9, power loss: ``closed: false``) the state Tune wrote since the first
record cannot be told from a crafted one, so none of it is loaded: Tune's experiment folder is
removed and the resume starts Tune afresh on the trials drivelab's own ledger says are open
(`sweep.folder`), which is all a resume needs. A folder the user trusts but drivelab cannot
verify (made by an older drivelab, or on another machine or account) continues the same way once
its ``tune/`` is removed by hand.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from drivelab.outputs import write_json
from drivelab.sweep.spec import SweepError

#: drivelab's record of Tune's state files, in the sweep folder (outside Tune's own folder).
CHECKSUMS = "tune-checksums.json"
TUNER_PKL = "tuner.pkl"
KEY_BYTES = 32


def key_path() -> Path:
    """This user's sealing key: ``$XDG_CONFIG_HOME/drivelab/sweep-trust.key`` (``~/.config``)."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "drivelab" / "sweep-trust.key"


def _key(create: bool) -> bytes | None:
    """The sealing key (made, readable by this user only, when ``create``); None if there is none.

    Made with O_EXCL, so two drivers starting at once end up with one key.
    """
    path = key_path()
    for _ in range(2):
        try:
            key = path.read_bytes()
            return key if len(key) == KEY_BYTES else None
        except FileNotFoundError:
            if not create:
                return None
        except OSError:
            return None
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue  # another driver made it a moment ago: read theirs
        except OSError as exc:
            raise SweepError(f"cannot make drivelab's sweep key {path} ({exc.strerror}): set "
                             "XDG_CONFIG_HOME to a writable folder") from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES))
    return None


def _seal(key: bytes, closed: bool, files: dict[str, str]) -> str:
    body = json.dumps({"closed": closed, "files": files}, sort_keys=True).encode("utf-8")
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def state_files(experiment: Path) -> list[Path]:
    """Every file of Tune's experiment folder that Tune may deserialize on restore.

    All files at its top (tuner.pkl, experiment/searcher/callback states, whatever a later Ray
    adds) and every ``*.pkl`` below (a trial's pickled error); the empty marker Tune touches is
    data, not state, but hashing it costs nothing and keeps the rule simple.
    """
    if not experiment.is_dir():
        return []
    top = [p for p in experiment.iterdir() if p.is_symlink() or not p.is_dir()]  # FIFOs too
    below = [p for p in experiment.rglob("*.pkl") if p.parent != experiment]
    return sorted(top + below)


def _sha256(path: Path) -> str | None:
    """The file's sha256; None for what is no plain readable file (a dangling link, a FIFO)."""
    try:
        if not path.is_file():
            return None
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None


def _read(folder: Path) -> dict[str, Any]:
    """The record as this user's drivelab sealed it, or an empty one (missing, damaged, forged)."""
    empty: dict[str, Any] = {"closed": False, "files": {}}
    try:
        data = json.loads((folder / CHECKSUMS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return empty
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        return empty
    closed, key, seal = data.get("closed") is True, _key(create=False), data.get("hmac")
    if key is None or not isinstance(seal, str) or not hmac.compare_digest(
        seal, _seal(key, closed, files)
    ):
        return empty
    return {"closed": closed, "files": files}


def record(folder: Path, experiment: Path, closed: bool) -> None:
    """Record and seal the sha256 of every state file now in ``experiment`` (this driver's)."""
    files = {}
    for path in state_files(experiment):
        digest = _sha256(path)
        if digest is not None:
            files[path.relative_to(folder).as_posix()] = digest
    key = _key(create=True)
    if key is None:
        raise SweepError(f"drivelab's sweep key {key_path()} is damaged (not {KEY_BYTES} bytes): "
                         "remove it (sweeps sealed with it then resume from their ledger)")
    note = ("sha256 of Ray Tune's state files as drivelab last wrote them, sealed with this "
            "user's key; `sweep --resume` unpickles only files that match")
    write_json(folder / CHECKSUMS, {"note": note, "closed": closed, "files": files,
                                    "hmac": _seal(key, closed, files)},
               force=True, flag="tune checksums")


def check_restorable(folder: Path, experiment: Path) -> bool:
    """Whether Tune may restore ``experiment``; False: start Tune afresh (its folder is gone).

    Raises `SweepError` (one line naming the file) for a state file drivelab did not write.
    Reads and hashes files; nothing is unpickled here.
    """
    _check_inside(folder, experiment)
    if not (experiment / TUNER_PKL).exists() and not (experiment / TUNER_PKL).is_symlink():
        _discard(folder, experiment)  # nothing Tune could restore (killed before tuner.pkl)
        return False
    recorded = _read(folder)
    unverified = []
    for path in state_files(experiment):
        name = path.relative_to(folder).as_posix()
        digest = _sha256(path)
        if digest is None or recorded["files"].get(name) != digest:
            if path.name == TUNER_PKL or recorded["closed"]:
                raise SweepError(_refusal(folder, name, name in recorded["files"]))
            unverified.append(name)
    if unverified:  # the last driver died after its first record: its later state is unknown
        _discard(folder, experiment)
        return False
    return True


def _refusal(folder: Path, name: str, known: bool) -> str:
    why = ("differs from the copy drivelab recorded" if known
           else "was not recorded by drivelab (on this machine and account)")
    return (f"{folder / name} {why} in {CHECKSUMS}: Ray Tune would unpickle it and run any code "
            f"in it, so the resume is refused; if you trust this sweep folder, remove "
            f"{folder / 'tune'} and resume again (drivelab's own ledger says what is left to run)")


def _check_inside(folder: Path, experiment: Path) -> None:
    """Tune's folders must be real folders inside the sweep folder (drivelab makes no links)."""
    for path in (experiment.parent, experiment):
        if path.is_symlink() or not path.resolve().is_relative_to(folder.resolve()):
            raise SweepError(f"{path} is a link or lies outside {folder}: drivelab never makes "
                             "one there, so the resume is refused; remove it and resume again")


def _discard(folder: Path, experiment: Path) -> None:
    """Remove the state Tune left without drivelab's seal: neither restored nor sealed later."""
    if experiment.is_dir():
        shutil.rmtree(experiment)
    elif experiment.exists():
        experiment.unlink()
    (folder / CHECKSUMS).unlink(missing_ok=True)
