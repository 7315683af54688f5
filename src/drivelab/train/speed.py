"""How fast a run trains: its precision, memory format and compilation, decided once per run.

``train.precision: auto`` asks for the fastest arithmetic the device computes natively: bf16
autocast on CPUs with AMX or AVX-512 BF16 and on bf16-capable GPUs, fp32 elsewhere. A CPU
without bf16 units emulates it (measured ~10x *slower* than fp32 on an AVX2-only EPYC), so an
explicit ``bf16-mixed`` there falls back to fp32 with one line saying why. The resolved plan is
recorded in ``run.json`` and per period; a resume reuses the recorded precision where the
device supports it, so a continued run computes exactly what an uninterrupted one would.
``channels_last: auto`` is timed on this machine (`layout_probe`) and a resume keeps the
recorded layout for the same reason; ``compile: auto`` follows the measured break-even.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from drivelab.config import TrainConfig
from drivelab.precision import bf16_support
from drivelab.train.layout_probe import probe_channels_last

#: precisions that autocast to bf16 (they need bf16 arithmetic to be fast)
BF16 = ("bf16-mixed", "bf16-true")
#: precisions that compute in fp16 (GPU only: CPUs have no fp16 matmul units worth using)
FP16 = ("16-mixed", "16-true")


@dataclass(frozen=True)
class SpeedPlan:
    """What the trainer applies to the policy; ``notes`` say where a request was changed."""

    precision: str
    channels_last: bool
    compile: bool
    device: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    requested: str = "auto"  # train.precision as configured

    @property
    def fallback(self) -> bool:
        """A precision the config asked for by name was changed (said at once, not just recorded)."""
        return self.requested != "auto" and self.precision != self.requested

    def describe(self) -> dict[str, Any]:
        """The record kept in ``run.json`` (and shown on the model card)."""
        return {"precision": self.precision, "channels_last": self.channels_last,
                "compile": self.compile, "device": self.device, "notes": list(self.notes)}


def device_type(train: TrainConfig) -> str:
    """The device Fabric will pick for ``train.accelerator`` (before any Fabric exists)."""
    if train.accelerator == "cpu":
        return "cpu"
    if train.accelerator in ("cuda", "gpu"):
        return "cuda"
    if train.accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return train.accelerator


def resolve_precision(requested: str, device: str, recorded: str | None = None) -> tuple[str, list[str]]:
    """``requested`` (maybe ``auto``) -> the precision to run, plus notes on any change.

    ``recorded`` is the precision a resumed run trained in: kept where the device supports it.
    """
    notes: list[str] = []
    if requested == "auto" and recorded is not None:
        usable = (recorded not in BF16 or bf16_support(device)[0]) and (recorded not in FP16 or device == "cuda")
        if usable:
            return recorded, [f"precision: resuming in the run's recorded {recorded}"]
    if requested == "auto":
        ok, why = bf16_support(device)
        chosen = "bf16-mixed" if ok else "32-true"
        return chosen, [f"precision: auto -> {chosen} ({why})"]
    if requested in BF16:
        ok, why = bf16_support(device)
        if not ok:
            notes.append(f"precision: {requested} requested but {why}; training in 32-true")
            return "32-true", notes
    if requested in FP16 and device != "cuda":
        notes.append(f"precision: {requested} needs a GPU (fp16 on a CPU is emulated); training in 32-true")
        return "32-true", notes
    return requested, notes


def has_conv2d(policy: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in policy.modules())


def auto_channels_last(convolutions: bool, precision: str, device: str) -> bool:
    """The rule ``channels_last: auto`` falls back on where it does not probe (several
    processes, a policy without a backbone) and within the probe's margin: NHWC for any policy
    with 2-D convolutions.

    Measured (docs/results.md, `benchmarks/layout.py`, Zen 4 EPYC with AVX-512 BF16): NHWC
    trained 1.10-1.42x faster than NCHW in fp32 and 1.38-3.0x in bf16-mixed at 64-128 px; on
    CUDA, tensor-core convolutions want NHWC too. It is also what every run trained in before
    NCHW was made real (the loader's frames are NHWC in memory). ``precision`` and ``device``
    are kept for a kind where NCHW wins: the probe finds that, this rule has no measurement of it.
    """
    del precision, device
    return convolutions


#: ``compile: auto`` compiles a run whose work (batches x batch size x input pixels) is at least
#: this: the larger break-even `benchmarks/trainer.py` measured (PilotNet, batch 64 at 96x96):
#: ~940 batches on an AVX2-only EPYC in fp32 (compile 24.9 s, then 1.24x) and ~3,100 on a Zen 4
#: EPYC in bf16-mixed (26.3 s, then 1.11x over the best eager setting): 3,100 x 64 x 96 x 96.
#: Below it the compile costs more than it saves. No GPU was measured; the rule is the same there.
COMPILE_PAYS_AFTER = 3_100 * 64 * 96 * 96


def auto_compile(max_batches: int | None, batch_size: int, input_size: tuple[int, int] | list[int]) -> bool:
    """``compile: auto``: on for a run long enough to pay its compilation (`COMPILE_PAYS_AFTER`).

    A run measured in epochs (``max_batches`` None) is not sized before its data: left eager."""
    if max_batches is None:
        return False
    return max_batches * batch_size * int(input_size[0]) * int(input_size[1]) >= COMPILE_PAYS_AFTER


def single_process(train: TrainConfig) -> bool:
    """One training process on one device: where a probe's verdict cannot differ across ranks."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return False
    devices = train.devices
    return devices == 1 or (isinstance(devices, list) and len(devices) == 1)


def choose_channels_last(
    train: TrainConfig, policy: torch.nn.Module, precision: str, device: str,
    recorded: dict[str, Any] | None,
) -> tuple[bool, list[str]]:
    """``channels_last: auto`` -> on/off: a resume keeps its recorded layout, a single-process
    run with a conv backbone asks the probe (`layout_probe`), anything else takes the rule."""
    if isinstance((recorded or {}).get("channels_last"), bool):
        layout = bool(recorded["channels_last"])  # type: ignore[index]
        return layout, [f"channels_last: resuming with the run's recorded {'on' if layout else 'off'}"]
    convolutions = has_conv2d(policy)
    rule = auto_channels_last(convolutions, precision, device)
    backbone = getattr(policy, "backbone", None)
    shape = getattr(policy, "frame_shape", None)
    if not convolutions or backbone is None or shape is None or not single_process(train):
        return rule, []
    full_shape = (train.batch_size, *(int(x) for x in shape))
    verdict = probe_channels_last(backbone, full_shape, precision, device, default=rule)
    return verdict.channels_last, [verdict.note(precision, full_shape)]


def plan_speed(
    train: TrainConfig, policy: torch.nn.Module, recorded: dict[str, Any] | None = None,
    input_size: tuple[int, int] | list[int] = (96, 96),
) -> SpeedPlan:
    """Resolve precision, channels_last and compile for this run on this machine."""
    device = device_type(train)
    precision, notes = resolve_precision(
        train.precision, device, (recorded or {}).get("precision")
    )
    if train.channels_last == "auto":
        channels_last, layout_notes = choose_channels_last(train, policy, precision, device, recorded)
        notes.extend(layout_notes)
    else:
        channels_last = bool(train.channels_last)
    if train.compile == "auto":  # recorded in run.json as the plan's ``compile``
        compiled = auto_compile(train.max_batches, train.batch_size, input_size)
    else:
        compiled = bool(train.compile)
    return SpeedPlan(precision, channels_last, compiled, device, tuple(notes), train.precision)


def prepare_policy(policy: torch.nn.Module, plan: SpeedPlan) -> torch.nn.Module:
    """Apply the plan: NHWC weights in place; returns the module to hand to Fabric.

    With ``compile`` the returned module is ``torch.compile(policy)``; ``policy`` itself stays
    the plain module whose ``state_dict`` the checkpoints hold.
    """
    if plan.channels_last:
        policy.to(memory_format=torch.channels_last)
    return torch.compile(policy) if plan.compile else policy
