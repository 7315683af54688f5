"""Whether a device computes bf16 natively: asked by the trainer and by the runtime.

A leaf below both `drivelab.train` (``train.precision: auto``) and `drivelab.evaluate`
(``eval --precision``), so neither imports the other to decide the arithmetic.
"""

from __future__ import annotations

import torch


def bf16_support(device: str) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 natively, and a few words on why (for the notes)."""
    if device == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return True, f"{torch.cuda.get_device_name()} supports bf16"
        return False, "this GPU has no bf16 support"
    if device == "cpu":
        units = [name for name, probe in (("AMX", "_is_amx_tile_supported"),
                                          ("AVX-512 BF16", "_is_avx512_bf16_supported"))
                 if getattr(torch.cpu, probe, lambda: False)()]
        if units:
            return True, f"this CPU has {' and '.join(units)}"
        return False, (f"this CPU has no AMX or AVX-512 BF16 (torch capability "
                       f"{torch.backends.cpu.get_cpu_capability()}): bf16 would be emulated, slower than fp32")
    return False, f"bf16 support on {device} is not probed"
