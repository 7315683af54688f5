"""The installed package: its version, and its optional parts (pip extras) checked where a verb
first needs them.

A base ``pip install drivelab`` collects, trains, evaluates and reports; Ray (``sweep``,
``live``), the ONNX stack (``export``, ``eval --engine onnx``) and the interop readers/writers
(pyarrow) are extras, because each weighs tens to hundreds of megabytes a user who never
runs that verb should not have to download. A verb whose extra is missing ends with one line
naming the ``pip install`` that fixes it, never an ImportError traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from types import ModuleType

from drivelab.errors import DrivelabError

#: Each extra's import names (pyproject's ``[project.optional-dependencies]`` lists the packages).
EXTRAS: dict[str, tuple[str, ...]] = {
    "ray": ("ray",),
    "onnx": ("onnx", "onnxruntime", "onnxscript"),
    "interop": ("pyarrow",),
}


def package_version() -> str:
    """drivelab's version from the installed package's metadata (``drivelab --version``,
    ``drivelab.__version__``); ``0+unknown`` for a source tree that was never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("drivelab")
    except PackageNotFoundError:
        return "0+unknown"


class MissingExtraError(DrivelabError):
    """A verb needs a package of an extra that is not installed."""


def install_hint(extra: str) -> str:
    """The command that installs ``extra``."""
    return f"pip install 'drivelab[{extra}]'"


def _missing(module: str, what: str, extra: str) -> MissingExtraError:
    return MissingExtraError(
        f"{what} needs the Python package {module.split('.')[0]!r}, which is not installed: "
        f"run `{install_hint(extra)}`"
    )


def require(module: str, what: str, extra: str) -> ModuleType:
    """Import ``module`` or fail with one line naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise _missing(module, what, extra) from None


def require_extra(extra: str, what: str, modules: Iterable[str] | None = None) -> None:
    """Check that ``extra``'s packages are installed without importing them (``find_spec`` is
    cheap; importing Ray or onnxruntime is not), so the check can come before any work."""
    for module in EXTRAS[extra] if modules is None else modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a blocked or half-installed package
            found = False
        if not found:
            raise _missing(module, what, extra)
