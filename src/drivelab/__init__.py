"""drivelab: end-to-end driving policies learned from demonstrations.

The Python API is five calls (`drivelab.api`), resolved on first use so that ``import drivelab``
imports neither torch nor anything else heavy::

    import drivelab
    drivelab.collect("data.zarr", episodes=6, val_episodes=1)
    run = drivelab.train("carracing/pilotnet", "data.path=data.zarr", "train.max_batches=200")
    drivelab.evaluate(run, episodes=3, baseline=["expert"])

``train``, ``evaluate`` and ``export`` are also the names of subpackages (``drivelab.train.trainer``
...). Python binds a subpackage to its parent's attribute when it is imported, so those three are
the subpackages themselves, made callable: ``drivelab.train(...)`` is ``drivelab.api.train(...)``
and ``drivelab.train.trainer`` is still the module. ``__version__`` comes from the installed
package's metadata.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

#: The API's calls, by the name ``drivelab.<name>`` answers to.
_API = ("collect", "train", "evaluate", "export", "load_policy")
#: API names that are also subpackages: the subpackage module is made callable.
_SUBPACKAGES = frozenset({"train", "evaluate", "export"})

__all__ = ["__version__", *_API]


class _CallablePackage(types.ModuleType):
    """A subpackage that is also its API call (``drivelab.train(config)``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        short = self.__name__.rsplit(".", 1)[-1]
        return getattr(importlib.import_module("drivelab.api"), short)(*args, **kwargs)


class _Drivelab(types.ModuleType):
    """The top package: when the import system binds ``train``/``evaluate``/``export`` here,
    the subpackage becomes callable, so both spellings keep working whichever comes first."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SUBPACKAGES and type(value) is types.ModuleType:
            value.__class__ = _CallablePackage
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Drivelab


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from drivelab.extras import package_version

        return package_version()
    if name in _SUBPACKAGES:
        return importlib.import_module(f"drivelab.{name}")  # binds it (callable) as an attribute
    if name in _API:
        return getattr(importlib.import_module("drivelab.api"), name)
    raise AttributeError(f"module 'drivelab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API, "__version__"})
