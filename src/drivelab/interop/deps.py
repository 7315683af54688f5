"""The optional dependencies of the interop verbs (pyarrow, PyAV), imported on first use.

They are an extra (``pip install drivelab[interop]``) because nothing else in drivelab needs
them: a user who never exchanges datasets should not have to install Arrow and FFmpeg builds.
The check itself is `drivelab.extras`', shared with the other extras.
"""

from __future__ import annotations

from types import ModuleType

from drivelab.extras import MissingExtraError, install_hint, require

EXTRA_HINT = install_hint("interop")

__all__ = ["EXTRA_HINT", "MissingExtraError", "pyarrow_parquet", "pyav"]


def pyarrow_parquet() -> ModuleType:
    """``pyarrow.parquet`` (LeRobot keeps its tables as Parquet)."""
    require("pyarrow", "reading and writing LeRobot datasets", "interop")
    return require("pyarrow.parquet", "reading and writing LeRobot datasets", "interop")


def pyav() -> ModuleType:
    """PyAV (``av``): LeRobot stores camera frames as MP4 videos."""
    return require("av", "LeRobot video frames", "interop")
