"""Paths a foreign dataset names for itself, kept inside that dataset's folder.

A donkeycar catalog names its image files, a tub manifest its catalogs, LeRobot's info.json a
``video_path`` pattern and its image cells a ``path``. Those strings come from whoever made the
folder: an absolute path (``/etc/passwd``), a ``../..`` or a symlink would make an importer read
(and, in its error messages, show) files that are not part of the dataset. Every such path goes
through `inside`, which resolves it (following symlinks) and refuses anything that ends up
outside the dataset folder, naming the record that asked for it and never the file's content.
"""

from __future__ import annotations

from pathlib import Path

from drivelab.errors import DrivelabError, clip

#: The longest stretch of a user-supplied value a message repeats (a path could be megabytes).
SHOWN_CHARS = 120
#: Linux's PATH_MAX and NAME_MAX: a longer name is no file's, and `stat` would fail on it.
MAX_PATH, MAX_NAME = 4096, 255


class OutsideDatasetError(DrivelabError):
    """A file named by a dataset's own metadata lies outside the dataset folder."""


def short_repr(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters: a user value fit for a one-line message."""
    return clip(repr(value), limit)


def clipped(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` (a key or a list of names from the dataset) on one line, cut to ``limit``."""
    return clip(text, limit)


def inside(root: Path, name: object, where: str, under: str = "") -> Path:
    """``root / under / name`` resolved, or a one-line refusal naming ``where`` if it leaves ``root``.

    ``name`` must be a relative path string; after resolving symlinks and ``..`` the result must
    still lie under ``root`` resolved (so a dataset reached through a symlink still works).
    ``under`` is the sub-folder the format puts such files in (donkeycar's ``images``).
    ``where`` names the record (``catalog_0.catalog line 7 (_index 6)``) so the user can fix it.
    """
    if (not isinstance(name, str) or not name or "\x00" in name or len(name) > MAX_PATH
            or any(len(part.encode("utf-8", "surrogateescape")) > MAX_NAME for part in Path(name).parts)):
        raise OutsideDatasetError(
            f"{where}: the file name {short_repr(name)} is not a path string: the dataset is damaged"
        )
    try:
        base = root.resolve()
        target = (base / under / name).resolve()
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        raise OutsideDatasetError(
            f"{where}: the file {short_repr(name)} cannot be resolved (a symlink loop?): the dataset is damaged"
        ) from None
    if Path(name).is_absolute() or not target.is_relative_to(base):
        raise OutsideDatasetError(
            f"{where}: the file {short_repr(name)} lies outside the dataset folder {root}; refusing to "
            "read it (a dataset may only name files inside its own folder)"
        )
    return target
