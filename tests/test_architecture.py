"""The layering of `docs/architecture.md`, checked on the source: no import reaches upward.

Every module belongs to a layer (the most specific prefix below wins); a module may import
anything in a lower layer, its own entry's modules, and another entry of its own rank only where
`SAME_RANK` lists the pair. Every package is in the table and in the document's picture. Imports inside
functions count too: a lazy import is still a dependency. `evaluate` and `train` share a rank
but must not import each other: the evaluator needs no trainer, and the trainer never imports
the simulator (its watch player is another process).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "drivelab"

LAYERS: dict[str, int] = {
    "drivelab.errors": 0, "drivelab.memory": 0, "drivelab.outputs": 0, "drivelab.seeds": 0,
    "drivelab.precision": 0, "drivelab.machine": 0, "drivelab.backbone_registry": 0, "drivelab.workers": 0, "drivelab.media": 0,
    "drivelab.extras": 0,  # which pip extra a verb needs, checked before it imports one
    "drivelab.api": 10,  # the Python API: collect, train, evaluate, export, load_policy
    "drivelab.config": 1,
    "drivelab.processor": 2,
    "drivelab.sim": 3, "drivelab.data": 3,
    "drivelab.runs": 4,
    "drivelab.order": 4,  # batch orders: balancing, bins, samplers over data facts; train reads them
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
#: The only imports between two different entries of one rank (docs/architecture.md says why):
#: a leaf raises `errors`; `data` records what the simulator contract produces; the watch
#: launcher starts the player its spec describes; `live` reuses sweep's Ray start and thread
#: settings; the `demo` verb calls the demo pipeline. Each pair is (importer, imported).
SAME_RANK = {("drivelab.data", "drivelab.sim"), ("drivelab.watch.launcher", "drivelab.watch.spec"),
             ("drivelab.live", "drivelab.sweep"), ("drivelab.cli", "drivelab.demo")}
SAME_RANK |= {(leaf, "drivelab.errors") for leaf, rank in LAYERS.items() if rank == 0}
ARCHITECTURE_DOC = SRC.parents[1] / "docs" / "architecture.md"


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


def _import_edges() -> set[tuple[str, str, str, str]]:
    """(module, imported module, module's table entry, imported one's entry) for every import."""
    known = modules()
    edges = set()
    for module, path in known.items():
        for target in imports(path, module):
            while target not in known and "." in target:  # `from pkg import name`
                target = target.rsplit(".", 1)[0]
            if target != module:
                edges.add((module, target, layer_of(module)[0], layer_of(target)[0]))
    return edges


def test_every_package_under_src_is_in_the_rank_table() -> None:
    """A new package (or top-level module) gets its rank on purpose, not the catch-all's 10."""
    names = [p.name if p.is_dir() else p.stem for p in SRC.iterdir()
             if (p.is_dir() and (p / "__init__.py").is_file())
             or (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))]
    missing = [n for n in sorted(names)
               if not any(k == f"drivelab.{n}" or k.startswith(f"drivelab.{n}.") for k in LAYERS)]
    assert not missing, f"add these to LAYERS (and to docs/architecture.md): {missing}"


def test_every_ranked_package_is_in_the_architecture_picture() -> None:
    """The document's picture names every package of the rank table."""
    picture = ARCHITECTURE_DOC.read_text(encoding="utf-8").split("```")[1]
    tops = {k.split(".")[1] for k in LAYERS if k != "drivelab"}
    absent = sorted(n for n in tops if not re.search(rf"\b{n}\b", picture))
    assert not absent, f"docs/architecture.md's picture leaves out {absent}"


def test_same_rank_imports_are_only_the_documented_ones() -> None:
    """Same rank is not a free pass: only the pairs in SAME_RANK (and siblings of one entry)."""
    extra = sorted(f"{m} -> {t}" for m, t, a, b in _import_edges()
                   if a != b and LAYERS[a] == LAYERS[b] and (a, b) not in SAME_RANK)
    assert not extra, "same-rank imports not in SAME_RANK (say why in docs/architecture.md):\n" + "\n".join(extra)
