"""What a base install of drivelab weighs next to each extra and the full install.

    python benchmarks/install_weight.py

Reads pyproject.toml's dependency lists and walks each requirement's dependency closure through
the metadata of the packages installed in this venv (no network), summing the bytes each
distribution's files take on disk. A package shared by base and an extra counts for the base
only, so an extra's figure is what it adds. Torch's figure depends on the build this venv holds
(a CPU wheel here; a CUDA build pulls several GB of nvidia-* wheels more).
"""

from __future__ import annotations

import contextlib
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def _size(dist: metadata.Distribution) -> int:
    total = 0
    for file in dist.files or []:
        with contextlib.suppress(OSError):
            total += Path(dist.locate_file(file)).stat().st_size
    return total


def closure(requirements: list[str], env: dict[str, str]) -> set[str]:
    """Every installed distribution the requirements pull in (extras followed, markers applied)."""
    seen: set[str] = set()
    todo = [(Requirement(r), ()) for r in requirements]
    while todo:
        req, _ = todo.pop()
        name = _name(req.name)
        if name == "drivelab":
            project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
            for extra in req.extras:
                todo += [(Requirement(r), ()) for r in project["optional-dependencies"][extra]]
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            print(f"  (not installed here: {name})", file=sys.stderr)
            continue
        key = (name, tuple(sorted(req.extras)))
        if key in seen:
            continue
        seen.add(key)
        for text in dist.requires or []:
            sub = Requirement(text)
            for extra in ["", *sorted(req.extras)]:
                if sub.marker is None or sub.marker.evaluate({**env, "extra": extra}):
                    todo.append((sub, ()))
                    break
    return {name for name, _ in seen}


def main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = {"python_version": f"{sys.version_info.major}.{sys.version_info.minor}", "sys_platform": sys.platform,
           "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
           "python_full_version": sys.version.split()[0], "os_name": "posix",
           "platform_python_implementation": "CPython"}
    sizes = {_name(d.metadata["Name"]): _size(d) for d in metadata.distributions()}
    base = closure(project["dependencies"], env)
    mb = lambda names: sum(sizes.get(n, 0) for n in names) / 1e6  # noqa: E731
    print(f"base install: {len(base)} distributions, {mb(base):.0f} MB on disk")
    cuda = {n for n in base if n.startswith(("nvidia-", "triton", "cuda-"))}
    print(f"  of which torch's CUDA libraries (nvidia-*, triton): {mb(cuda):.0f} MB; "
          f"base without them (a CPU torch build): {mb(base - cuda):.0f} MB")
    biggest = sorted(base, key=lambda n: -sizes.get(n, 0))[:6]
    print("  largest: " + ", ".join(f"{n} {sizes.get(n, 0) / 1e6:.0f} MB" for n in biggest))
    everything = set(base)
    for extra in ("ray", "onnx", "interop"):
        added = closure(project["optional-dependencies"][extra], env) - base
        everything |= added
        print(f"[{extra}] adds {len(added)} distributions, {mb(added):.0f} MB: "
              + ", ".join(f"{n} {sizes.get(n, 0) / 1e6:.0f}" for n in sorted(added, key=lambda n: -sizes.get(n, 0))[:5]))
    print(f"full install [all]: {len(everything)} distributions, {mb(everything):.0f} MB on disk "
          f"(base is {mb(base) / mb(everything):.0%} of it; without the CUDA libraries "
          f"{mb(base - cuda) / mb(everything - cuda):.0%})")
    print("extras' distributions: " + " ".join(f"{n}=={metadata.version(n)}" for n in sorted(everything - base)))


if __name__ == "__main__":
    main()
