"""Backbone specifications: the table people choose a backbone by (kkelchte's "Gather
specifications": layers, parameters, memory, frames per second on GPU and CPU).

Every figure is measured on the backbone drivelab would train (`build_backbone`, random init,
``frames`` stacked RGB frames of ``input_size``), here, on this machine:

- layers: ``nn.Conv2d`` modules (the feature layers) and ``nn.Linear`` modules (the decision
  layers the backbone keeps, e.g. AlexNet's two 4096-unit layers); the policy's neck and heads
  come on top.
- parameters: PyTorch's count (``numel`` of every parameter; trainable = ``requires_grad``), and
  the Keras count (BatchNorm statistics included) that Charles's pages quote.
- FLOPs per sample: PyTorch's own ``FlopCounterMode`` over one forward at batch 1 (a
  multiply-add counts 2).
- memory: weights (parameters + buffers, bytes as stored) and activations: the bytes of every
  leaf module's output in one forward at batch B (in-place results counted once), roughly what
  training keeps for backward. On a GPU, also the peak allocated during an inference forward.
- frames/s: forward passes in eval mode under ``inference_mode``, warm-up calls first, then the
  median of ``repeats`` timed calls (``perf_counter`` on the CPU, CUDA events on the GPU), at
  batch 1 and batch B; on the CPU with 1 thread and with all of them (``torch.set_num_threads``,
  restored afterwards). A sample of K stacked frames is one decision: frames/s counts samples.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from drivelab.backbone_registry import SEED_ZOO, close_backbone_names, is_known_backbone
from drivelab.config import BackboneConfig
from drivelab.errors import DrivelabError
from drivelab.memory import available_bytes, format_bytes
from drivelab.models.backbones import build_backbone
from drivelab.models.budget import ACTIVATION_FACTOR, meta_parameter_count
from drivelab.models.summary import count_parameters

__all__ = ["BackboneSpecs", "SpecsPlan", "check_specs_memory", "measure_backbone", "resolve_networks"]


@dataclass(frozen=True)
class SpecsPlan:
    """What to measure: frame size [H, W], stacked frames per sample, batch B, timing repeats."""

    input_size: tuple[int, int] = (112, 112)
    frames: int = 1
    batch: int = 16
    repeats: int = 5
    warmup: int = 1
    gpu_warmup: int = 5

    def __post_init__(self) -> None:
        for name in ("frames", "batch", "repeats"):
            if getattr(self, name) < 1:
                raise DrivelabError(f"--{name} must be at least 1 (got {getattr(self, name)})")
        if min(self.input_size) < 1:
            raise DrivelabError(f"--input-size must be two positive sides H W (got {list(self.input_size)})")


@dataclass(frozen=True)
class BackboneSpecs:
    """One row of the table: a network as measured here (rates in samples per second)."""

    network: str
    model: str
    feature_layers: int
    decision_layers: int
    params: int
    trainable: int
    keras_params: int
    num_features: int
    flops: int
    weight_bytes: int
    activation_bytes: int
    cpu_threads: int
    rates: dict[str, float | None] = field(default_factory=dict)
    gpu_peak_bytes: int | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def resolve_networks(names: Sequence[str]) -> list[tuple[str, str]]:
    """(shown name, registry name) per network: the seeds' zoo when ``names`` is empty.

    A zoo short name (``alex``) maps through `SEED_ZOO`; any other registry name is taken as is.
    An unknown name is one error line with the closest names.
    """
    if not names:
        return list(SEED_ZOO.items())
    resolved = []
    for name in names:
        if name in SEED_ZOO:
            resolved.append((name, SEED_ZOO[name]))
        elif name == "none":
            raise DrivelabError("backbone 'none' reads no frames: there is nothing to measure")
        elif is_known_backbone(name):
            resolved.append((name, name))
        else:
            close = close_backbone_names(name, extra=tuple(SEED_ZOO))
            hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
            raise DrivelabError(
                f"unknown backbone {name!r}: {hint}name a seed network "
                f"({', '.join(SEED_ZOO)}), a timm model or torchvision:<name>"
            )
    return resolved


def check_specs_memory(networks: Sequence[tuple[str, str]], plan: SpecsPlan,
                       available: int | None = None) -> None:
    """Refuse, with the figures, a plan whose measurement would not fit in available memory.

    Checked for every network before the first is measured, as `summary` and `train` do: a
    typo such as ``--input-size 100000 100000`` would otherwise allocate terabytes of frames
    (and a flattening backbone's dense layer grows with the pixel count). Weights are counted
    on the meta device; frames (batch 1 and B) exactly; activations with training's coarse
    per-value factor (one inference forward keeps fewer, so this errs on the safe side).
    """
    height, width = plan.input_size
    values = 3 * plan.frames * height * width  # per sample
    frames = 4 * (1 + plan.batch) * values
    activations = 4 * ACTIVATION_FACTOR * plan.batch * values
    have = available_bytes() if available is None else available
    for network, name in networks:
        weights = None
        if frames + activations <= have:  # else no need to build anything to know
            count = meta_parameter_count(
                lambda name=name: build_backbone(BackboneConfig(name=name), plan.frames, plan.input_size)
            )
            weights = 4 * (count or 0)
        need = (weights or 0) + frames + activations
        if need > have:
            shown = "" if weights is None else f", weights {format_bytes(weights)}"
            raise DrivelabError(
                f"measuring {network} at --input-size {height} {width} with --batch {plan.batch} "
                f"needs about {format_bytes(need)} (frames {format_bytes(frames)}, activations "
                f"~{format_bytes(activations)}{shown}), but {format_bytes(have)} is available: "
                "use a smaller --input-size or --batch"
            )


def _count_layers(module: nn.Module) -> tuple[int, int]:
    """(convolutions, fully connected layers) in ``module``."""
    convs = sum(isinstance(m, nn.Conv2d) for m in module.modules())
    linears = sum(isinstance(m, nn.Linear) for m in module.modules())
    return convs, linears


def _weight_bytes(module: nn.Module) -> int:
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def _output_bytes(output: object) -> int:
    if isinstance(output, torch.Tensor):
        return output.numel() * output.element_size()
    if isinstance(output, tuple | list):
        return sum(_output_bytes(item) for item in output)
    return 0


@contextmanager
def _activation_counter(module: nn.Module) -> Iterator[list[int]]:
    """Sum the bytes every leaf module outputs while active (an in-place result is its input)."""
    total = [0]

    def hook(_module: nn.Module, inputs: tuple[object, ...], output: object) -> None:
        if not any(output is item for item in inputs):
            total[0] += _output_bytes(output)

    leaves = [m for m in module.modules() if not any(True for _ in m.children())]
    handles = [leaf.register_forward_hook(hook) for leaf in leaves]
    try:
        yield total
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _threads(count: int) -> Iterator[None]:
    """Run with ``count`` intra-op CPU threads, then put the previous setting back."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _median_rate(call: Callable[[], float], batch: int, warmup: int, repeats: int) -> float:
    """Samples per second from the median of ``repeats`` timed calls after ``warmup`` untimed."""
    for _ in range(warmup):
        call()
    return batch / statistics.median(call() for _ in range(repeats))


def _cpu_call(model: nn.Module, frames: torch.Tensor) -> Callable[[], float]:
    def call() -> float:
        start = time.perf_counter()
        model(frames)
        return time.perf_counter() - start

    return call


def _gpu_call(model: nn.Module, frames: torch.Tensor) -> Callable[[], float]:
    def call() -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        model(frames)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000.0

    return call


def _forward_or_explain(network: str, model: nn.Module, frames: torch.Tensor) -> None:
    """One forward, turning a frame size the network cannot take into one error line."""
    try:
        model(frames)
    except (RuntimeError, ValueError, AssertionError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DrivelabError(
            f"{network}: cannot take {list(frames.shape[2:])} frames ({reason[:100]}); "
            "use a larger --input-size"
        ) from None


def _flops_per_sample(model: nn.Module, frame: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model(frame)
    return int(counter.get_total_flops())


def _cpu_rates(model: nn.Module, plan: SpecsPlan, one: torch.Tensor, batch: torch.Tensor,
               all_threads: int) -> dict[str, float | None]:
    rates: dict[str, float | None] = {}
    for label, threads in (("cpu1", 1), ("cpu_all", all_threads)):
        with _threads(threads):
            rates[f"{label}_b1"] = _median_rate(_cpu_call(model, one), 1, plan.warmup, plan.repeats)
            rates[f"{label}_bB"] = _median_rate(
                _cpu_call(model, batch), plan.batch, plan.warmup, plan.repeats
            )
    return rates


def _gpu_rates(model: nn.Module, plan: SpecsPlan, one: torch.Tensor,
               batch: torch.Tensor) -> tuple[dict[str, float | None], int]:
    """GPU rates at batch 1 and B (cuDNN autotuning on, as training runs) and the peak bytes."""
    model, one, batch = model.cuda(), one.cuda(), batch.cuda()
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        rates: dict[str, float | None] = {
            "gpu_b1": _median_rate(_gpu_call(model, one), 1, plan.gpu_warmup, plan.repeats),
            "gpu_bB": _median_rate(_gpu_call(model, batch), plan.batch, plan.gpu_warmup, plan.repeats),
        }
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        model(batch)
        torch.cuda.synchronize()
        peak = int(torch.cuda.max_memory_allocated())
    finally:
        torch.backends.cudnn.benchmark = benchmark
        model.cpu()
    return rates, peak


def measure_backbone(network: str, name: str, plan: SpecsPlan, gpu: bool | None = None) -> BackboneSpecs:
    """Build backbone ``name`` (random init) for ``plan`` and measure one table row.

    ``gpu`` defaults to whether CUDA is available; without a GPU those columns stay empty.
    """
    model = build_backbone(BackboneConfig(name=name), plan.frames, plan.input_size).eval()
    channels = 3 * plan.frames
    one = torch.rand(1, channels, *plan.input_size)
    batch = torch.rand(plan.batch, channels, *plan.input_size)
    all_threads = torch.get_num_threads()
    with torch.inference_mode():
        _forward_or_explain(network, model, one)
        flops = _flops_per_sample(model, one)
        with _activation_counter(model) as activations:
            model(batch)
        rates = _cpu_rates(model, plan, one, batch, all_threads)
        use_gpu = torch.cuda.is_available() if gpu is None else gpu
        peak = None
        if use_gpu:
            gpu_rates, peak = _gpu_rates(model, plan, one, batch)
            rates.update(gpu_rates)
        else:
            rates.update({"gpu_b1": None, "gpu_bB": None})
    convs, linears = _count_layers(model)
    return BackboneSpecs(
        network=network, model=name, feature_layers=convs, decision_layers=linears,
        params=sum(p.numel() for p in model.parameters()),
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        keras_params=count_parameters(model).total, num_features=int(model.num_features),
        flops=flops, weight_bytes=_weight_bytes(model), activation_bytes=activations[0],
        cpu_threads=all_threads, rates=rates, gpu_peak_bytes=peak,
    )
