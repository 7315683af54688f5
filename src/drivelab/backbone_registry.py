"""The backbone names drivelab knows, answerable without building (or importing) any model.

A leaf at the bottom of the import graph, like timm's ``_registry``: the config schema asks it
whether ``model.backbone.name`` exists, whether it has downloadable weights and which pool it
uses by default, without importing `drivelab.models` (and so without torch modules being built
or the config layer depending on the model layer). timm (and torchvision, for
``torchvision:<name>``) is imported lazily, only when a name is not one of the built-ins.

Three kinds of name: the built-ins (``tiny``, ``pilotnet``, ``none``), timm architectures
(``resnet18``, ``resnet18.a1_in1k``) and torchvision classification models behind a prefix
(``torchvision:alexnet``): timm has no AlexNet or SqueezeNet, which kkelchte's spec table
compares. `SEED_ZOO` maps that table's short names (and Charles's and the seed-003 log's
networks) to registry names.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from types import MappingProxyType

#: Built-in backbones (their factories live in `drivelab.models.backbones`): kkelchte's
#: tiny_net, NVIDIA's PilotNet, and ``none`` for policies that see no frames.
BUILTIN_BACKBONE_NAMES: tuple[str, ...] = ("tiny", "pilotnet", "none")

#: Prefix of torchvision classification models (``torchvision:squeezenet1_1``).
TORCHVISION_PREFIX = "torchvision:"

#: The networks the seeds compare, by their short names: kkelchte's spec table (alex ... tiny,
#: all torchvision models there), Charles's two backbones and the seed-003 log's MobileNetV2.
#: timm where it has the architecture (the same weights layout), torchvision where it has not;
#: vgg16 from torchvision because its fully connected layers are ``nn.Linear`` there (timm writes
#: them as convolutions; the parameters are the same 134,260,544).
SEED_ZOO: Mapping[str, str] = MappingProxyType({
    "alex": "torchvision:alexnet",
    "vgg16": "torchvision:vgg16",
    "inception": "inception_v3",
    "res18": "resnet18",
    "dense": "densenet121",
    "squeeze": "torchvision:squeezenet1_0",
    "tiny": "tiny",
    "xception": "legacy_xception",
    "inception_resnet_v2": "inception_resnet_v2",
    "mobilenetv2": "mobilenetv2_100",
})


def is_builtin(name: str) -> bool:
    """Whether ``name`` is one of drivelab's own backbones (not a timm model)."""
    return name in BUILTIN_BACKBONE_NAMES


def is_torchvision(name: str) -> bool:
    """Whether ``name`` asks for a torchvision model (``torchvision:<name>``)."""
    return name.startswith(TORCHVISION_PREFIX)


def torchvision_arch(name: str) -> str:
    """``torchvision:alexnet`` -> ``alexnet``."""
    return name[len(TORCHVISION_PREFIX):] if is_torchvision(name) else name


def torchvision_names() -> list[str]:
    """torchvision's image classification models (no detection, video or quantized ones)."""
    import torchvision.models

    return list(torchvision.models.list_models(module=torchvision.models))


def backbone_names(name: str = "") -> list[str]:
    """Names ``model.backbone.name`` accepts: the built-ins, timm's and torchvision's models.

    For a ``arch.tag`` name the candidates are that architecture's pretrained tags, which is
    what a close-name suggestion should be drawn from.
    """
    import timm

    arch, _, tag = name.partition(".")
    if tag and not is_torchvision(name) and timm.is_model(arch):
        return list(timm.list_pretrained(f"{arch}.*"))
    torchvision = [TORCHVISION_PREFIX + n for n in torchvision_names()]
    return [*BUILTIN_BACKBONE_NAMES, *timm.list_models(), *torchvision]


def close_backbone_names(name: str, extra: tuple[str, ...] = (), n: int = 3) -> list[str]:
    """Registry names (and ``extra`` ones, e.g. `SEED_ZOO`'s) closest to a mistyped ``name``.

    Compared without the ``torchvision:`` prefix, so ``alexnet`` (timm has none) suggests
    ``torchvision:alexnet``.
    """
    by_bare: dict[str, list[str]] = {}
    for candidate in [*extra, *backbone_names(name)]:
        by_bare.setdefault(torchvision_arch(candidate), []).append(candidate)
    close = difflib.get_close_matches(torchvision_arch(name), list(by_bare), n=n, cutoff=0.6)
    found = [full for bare in close for full in by_bare[bare]]
    return list(dict.fromkeys(found))[:n]


def is_known_backbone(name: str) -> bool:
    """Whether ``name`` is a built-in, a timm architecture or ``arch.pretrained_tag``, or a
    ``torchvision:<name>`` classification model."""
    if is_builtin(name):
        return True
    if is_torchvision(name):
        return torchvision_arch(name) in torchvision_names()
    import timm

    if "." in name:
        return bool(timm.is_model_pretrained(name))
    return bool(timm.is_model(name))


def timm_has_pretrained(name: str) -> bool:
    """Whether timm lists downloadable weights for ``name`` (checked without network)."""
    import timm

    return bool(timm.is_model_pretrained(name))


def default_pool(name: str) -> str:
    """The pool a backbone uses unless told otherwise: global average, built-ins flatten.

    For a torchvision model ``avg`` means the model's own pooling (and any layers between it
    and the classifier), which is all it offers.
    """
    return "flatten" if is_builtin(name) else "avg"
