"""The layering of `docs/architecture.md`, checked on the source: no import reaches upward.

Every module belongs to a layer (the most specific prefix below wins); a module may import its
own layer's siblings only where the table allows and anything in a lower layer. Imports inside
functions count too: a lazy import is still a dependency. `evaluate` and `train` share a rank
but must not import each other: the evaluator needs no trainer, and the trainer never imports
the simulator (its watch player is another process).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "drivelab"

LAYERS: dict[str, int] = {
    "drivelab.errors": 0, "drivelab.memory": 0, "drivelab.outputs": 0, "drivelab.seeds": 0,
    "drivelab.precision": 0, "drivelab.backbone_registry": 0, "drivelab.workers": 0,
    "drivelab.config": 1,
    "drivelab.processor": 2,
    "drivelab.sim": 3, "drivelab.data": 3,
    "drivelab.runs": 4,
    "drivelab.interop": 4,  # datasets from/to donkeycar and LeRobot: data, config, leaves
    "drivelab.models": 5,
    "drivelab.watch.spec": 6, "drivelab.watch.launcher": 6,
    "drivelab.export": 6,  # policy + pipeline -> ONNX; its engine is driven by evaluate
    "drivelab.train": 7, "drivelab.evaluate": 7,
    "drivelab.watch": 8,  # the player process drives through the evaluator
    "drivelab.diagnose": 8,  # copycat/inertia tests over evaluate; the card reads its saved files
    "drivelab.reports": 9,
    "drivelab.sweep": 9,  # trials train and evaluate runs; results read the run folders
    "drivelab.live": 9,  # collectors, trainer and player actors; Ray start-up and threads from sweep
    "drivelab.demo": 10, "drivelab.cli": 10, "drivelab": 10,
}
#: Same-rank packages that must stay apart.
APART = {("drivelab.train", "drivelab.evaluate"), ("drivelab.evaluate", "drivelab.train"),
         ("drivelab.sim", "drivelab.data")}


def layer_of(module: str) -> tuple[str, int]:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return best, LAYERS[best]


def imports(path: Path, module: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("drivelab")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("drivelab"):
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if not module.startswith(m)}


def modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def test_no_import_reaches_a_higher_layer_or_a_kept_apart_sibling() -> None:
    known = modules()
    problems = []
    for module, path in sorted(known.items()):
        src_prefix, src_rank = layer_of(module)
        targets = set()
        for target in imports(path, module):
            while target not in known and "." in target:  # `from pkg import name`
                target = target.rsplit(".", 1)[0]
            targets.add(target)
        for target in sorted(targets - {module}):
            dst_prefix, dst_rank = layer_of(target)
            if dst_rank > src_rank:
                problems.append(f"{module} -> {target} (layer {src_rank} imports layer {dst_rank})")
            elif (src_prefix.rsplit(".", 1)[0] if src_prefix.count(".") > 1 else src_prefix,
                  dst_prefix.rsplit(".", 1)[0] if dst_prefix.count(".") > 1 else dst_prefix) in APART:
                problems.append(f"{module} -> {target} ({src_prefix} and {dst_prefix} are kept apart)")
    assert not problems, "\n".join(problems)


def test_every_module_has_a_layer() -> None:
    assert all(layer_of(m)[0] != "drivelab" or m in ("drivelab", "drivelab.demo") for m in modules()
               if not m.startswith("drivelab.cli")), [m for m in modules() if layer_of(m)[0] == "drivelab"]
