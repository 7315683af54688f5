"""The optional dependencies of the interop verbs (pyarrow, PyAV), imported on first use.

They are an extra (``pip install drivelab[interop]``) because nothing else in drivelab needs
them: a user who never exchanges datasets should not have to install Arrow and FFmpeg builds.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from drivelab.errors import DrivelabError

EXTRA_HINT = "pip install 'drivelab[interop]'"


class MissingExtraError(DrivelabError):
    """An interop verb needs a package of the ``interop`` extra that is not installed."""


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` or fail with one line naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{what} needs the Python package {module.split('.')[0]!r}, which is not installed: "
            f"run `{EXTRA_HINT}`"
        ) from None


def pyarrow_parquet() -> ModuleType:
    """``pyarrow.parquet`` (LeRobot keeps its tables as Parquet)."""
    require("pyarrow", "reading and writing LeRobot datasets")
    return require("pyarrow.parquet", "reading and writing LeRobot datasets")


def pyav() -> ModuleType:
    """PyAV (``av``): LeRobot stores camera frames as MP4 videos."""
    return require("av", "LeRobot video frames")
