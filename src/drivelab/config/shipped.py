"""The example configs shipped inside the package, found by name (``carracing/pilotnet``).

A wheel has no checkout around it, so ``configs/carracing/pilotnet.yaml`` only resolves in the
repository; the same files travel as package data (``drivelab/configs``, a link to the
repository's ``configs/`` that the wheel build copies), so ``drivelab train carracing/pilotnet``
works wherever drivelab is installed. A path that exists always wins over a name.
"""

from __future__ import annotations

from pathlib import Path

from drivelab.config.base import ConfigError
from drivelab.errors import clip

#: The shipped configs' folder: the repository's ``configs/`` in a checkout, package data in a wheel.
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "configs"
_SUFFIXES = (".yaml", ".yml")


def shipped_configs() -> list[str]:
    """Every shipped config's name (``carracing/pilotnet``), sorted."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(str(p.relative_to(SHIPPED_DIR).with_suffix("")) for p in SHIPPED_DIR.rglob("*")
                  if p.suffix in _SUFFIXES and p.is_file())


def shipped_config(name: str) -> Path | None:
    """The shipped file a name stands for (``carracing/pilotnet``, with or without ``.yaml``,
    or a checkout path such as ``configs/carracing/pilotnet.yaml``), else None."""
    text = name.replace("\\", "/").strip("/")
    if text.startswith("configs/"):
        text = text[len("configs/"):]
    if ".." in text.split("/") or not text:
        return None
    candidates = [text] if text.endswith(_SUFFIXES) else [text + s for s in _SUFFIXES]
    for candidate in candidates:
        path = SHIPPED_DIR / candidate
        if path.is_file():
            return path
    return None


def resolve_config_path(path: str | Path) -> Path:
    """``path`` if it is a file, else the shipped config of that name; else one line naming both
    the path that was tried and the shipped names to choose from."""
    given = Path(path)
    if given.is_file():
        return given
    found = shipped_config(str(path))
    if found is not None:
        return found
    names = shipped_configs()
    listed = ", ".join(names[:8]) + (f" (and {len(names) - 8} more)" if len(names) > 8 else "")
    hint = f"; shipped configs: {listed}" if names else ""
    raise ConfigError(f"config file not found: {clip(repr(str(path)), 200)}{hint}")
