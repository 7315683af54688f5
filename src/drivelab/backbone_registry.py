"""The backbone names drivelab knows, answerable without building (or importing) any model.

A leaf at the bottom of the import graph, like timm's ``_registry``: the config schema asks it
whether ``model.backbone.name`` exists, whether it has downloadable weights and which pool it
uses by default, without importing `drivelab.models` (and so without torch modules being built
or the config layer depending on the model layer). timm is imported lazily, only when a name is
not one of the built-ins.
"""

from __future__ import annotations

#: Built-in backbones (their factories live in `drivelab.models.backbones`): kkelchte's
#: tiny_net, NVIDIA's PilotNet, and ``none`` for policies that see no frames.
BUILTIN_BACKBONE_NAMES: tuple[str, ...] = ("tiny", "pilotnet", "none")


def is_builtin(name: str) -> bool:
    """Whether ``name`` is one of drivelab's own backbones (not a timm model)."""
    return name in BUILTIN_BACKBONE_NAMES


def backbone_names(name: str = "") -> list[str]:
    """Names ``model.backbone.name`` accepts: the built-ins and timm's architectures.

    For a ``arch.tag`` name the candidates are that architecture's pretrained tags, which is
    what a close-name suggestion should be drawn from.
    """
    import timm

    arch, _, tag = name.partition(".")
    if tag and timm.is_model(arch):
        return list(timm.list_pretrained(f"{arch}.*"))
    return [*BUILTIN_BACKBONE_NAMES, *timm.list_models()]


def is_known_backbone(name: str) -> bool:
    """Whether ``name`` is a built-in, a timm architecture or a timm ``arch.pretrained_tag``."""
    if is_builtin(name):
        return True
    import timm

    if "." in name:
        return bool(timm.is_model_pretrained(name))
    return bool(timm.is_model(name))


def timm_has_pretrained(name: str) -> bool:
    """Whether timm lists downloadable weights for ``name`` (checked without network)."""
    import timm

    return bool(timm.is_model_pretrained(name))


def default_pool(name: str) -> str:
    """The pool a backbone uses unless told otherwise: timm's global average, built-ins flatten."""
    return "flatten" if is_builtin(name) else "avg"
