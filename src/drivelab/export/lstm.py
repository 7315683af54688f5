"""The recurrent policy's LSTM as ONNX ``LSTM`` nodes with a dynamic sequence axis.

torch.export keeps ``aten.lstm`` as one op but takes its output shape from the op's unrolled
decomposition, so the sequence axis of the output is the export example's length, a constant
(pytorch#191855 and litert-torch#1062 describe the same specialisation). The heads after it
reshape with that constant and a graph exported at 3 steps fails, or asks ``steps == 3``, at any
other length. `OnnxLSTM` stands in for the ``nn.LSTM`` only while exporting: each layer is
written directly as an ONNX ``LSTM`` node (`torch.onnx.ops.symbolic_multi_out`) whose output
shapes are given from the input's symbolic sizes. The weights are the module's own, gates
reordered once from PyTorch's (i, f, g, o) to ONNX's (i, o, f, c). The parity check then runs other
sequence lengths than the example's against the eager ``nn.LSTM``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def _onnx_gates(weight: torch.Tensor) -> torch.Tensor:
    """PyTorch's gate blocks (i, f, g, o) along dim 0 -> ONNX's (i, o, f, c)."""
    i, f, g, o = weight.chunk(4, dim=0)
    return torch.cat([i, o, f, g], dim=0)


class OnnxLSTM(nn.Module):
    """A unidirectional batch-first ``nn.LSTM`` as one ONNX ``LSTM`` node per layer (export only).

    Outside an export it computes nothing useful (the symbolic op returns placeholders), which
    is why `exportable_lstm` swaps it in for the duration of an export and no longer.
    """

    def __init__(self, lstm: nn.LSTM) -> None:
        super().__init__()
        if lstm.bidirectional or not lstm.batch_first or lstm.proj_size:
            raise ValueError("OnnxLSTM covers the policy's unidirectional batch-first LSTM")
        self.num_layers = lstm.num_layers  # what `RecurrentPolicy.layers` / ``.hidden`` read
        self.hidden_size = lstm.hidden_size
        # ONNX's W [1, 4H, in], R [1, 4H, H], B [1, 8H] per layer, reordered once here (buffers
        # become initializers; reordering inside the graph would cost a Split per call)
        with torch.no_grad():
            for layer in range(lstm.num_layers):
                w = getattr(lstm, f"weight_ih_l{layer}")
                r = getattr(lstm, f"weight_hh_l{layer}")
                self.register_buffer(f"w{layer}", _onnx_gates(w)[None].clone())
                self.register_buffer(f"r{layer}", _onnx_gates(r)[None].clone())
                if lstm.bias:
                    b = [_onnx_gates(getattr(lstm, f"{kind}_l{layer}")) for kind in ("bias_ih", "bias_hh")]
                    self.register_buffer(f"b{layer}", torch.cat(b)[None].clone())
        self.bias = bool(lstm.bias)

    def forward(
        self, x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        h0, c0 = hx
        batch, steps = x.shape[0], x.shape[1]
        hidden = self.hidden_size
        sequence = x.transpose(0, 1)  # ONNX layout 0: [steps, batch, inputs]
        last_h, last_c = [], []
        for layer in range(self.num_layers):
            y, y_h, y_c = torch.onnx.ops.symbolic_multi_out(
                "LSTM",
                [sequence, getattr(self, f"w{layer}"), getattr(self, f"r{layer}"),
                 getattr(self, f"b{layer}") if self.bias else None, None,
                 h0[layer:layer + 1], c0[layer:layer + 1]],
                {"hidden_size": hidden, "direction": "forward"},
                dtypes=[x.dtype] * 3,
                shapes=[[steps, 1, batch, hidden], [1, batch, hidden], [1, batch, hidden]],
                version=14,
            )
            sequence = y.squeeze(1)
            last_h.append(y_h)
            last_c.append(y_c)
        return sequence.transpose(0, 1), (torch.cat(last_h), torch.cat(last_c))


@contextmanager
def exportable_lstm(policy: nn.Module) -> Iterator[None]:
    """While exporting, a policy's core ``lstm`` (the ``lstm`` kind's) is an `OnnxLSTM`, then put back."""
    original = getattr(policy, "lstm", None)
    if not isinstance(original, nn.LSTM):
        yield
        return
    policy.lstm = OnnxLSTM(original)  # type: ignore[assignment]
    try:
        yield
    finally:
        policy.lstm = original
