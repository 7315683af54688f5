"""The onnx engine: an exported policy driving step by step through onnxruntime.

It offers what the torch runtime offers the closed-loop driver (`check_env`, `reset`, `act`,
``label``, ``latencies_s``), so `evaluate.runtime.PolicyDriver` and the runner drive either one
unchanged. The host keeps what lives across steps, with the torch runtime's own code: the frame
stack and history window (`processor.layout.SampleStream`) and the LSTM state the graph returns;
the graph does everything else (see `drivelab.export.graph`). It needs the ``.onnx`` file only:
no run folder, no config, no checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from drivelab.errors import DrivelabError
from drivelab.export.consistency import check_session
from drivelab.export.metadata import (
    FRAMES,
    HISTORY,
    LAST_ACTION,
    STATE,
    STATE_OUT,
    PolicyCard,
)
from drivelab.processor.fit import DataSpec, PolicyNeeds, check_fit
from drivelab.processor.layout import SampleStream


class OnnxLoadError(DrivelabError):
    """An ONNX file that cannot drive: unreadable, not a drivelab policy, another env."""


def make_session(model: str | Path | bytes, threads: int = 1) -> Any:
    """An onnxruntime CPU session; ``threads`` intra-op threads (1: a batch-1 step, the workers
    already fill the cores). One `OnnxLoadError` line for a file onnxruntime cannot read."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: the runtime's notes are not the user's business
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        where = "the exported model" if isinstance(model, bytes) else str(model)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise OnnxLoadError(f"{where} is not a readable ONNX model ({first})") from None


class OnnxRuntime:
    """One exported policy plus the per-episode buffers it needs to act (cf. `PolicyRuntime`)."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        path = Path(path)
        if not path.is_file():
            raise OnnxLoadError(f"{path} does not exist: export a run with `drivelab export RUN --out {path}`")
        self.session = make_session(path, threads)
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        self.card = PolicyCard.from_props(props, str(path))
        check_session(self.card, self.session, str(path))  # the metadata describes this graph
        self.label = path.name
        card = self.card
        self.stream = SampleStream(card.frame_stack, card.history_signals, card.history_length)
        self.latencies_s: list[float] = []
        self._state: np.ndarray | None = None

    @classmethod
    def from_file(cls, path: str | Path, threads: int = 1) -> OnnxRuntime:
        return cls(path, threads)

    def check_env(self, env: Any) -> None:
        """Refuse an env this policy cannot drive, naming what differs (`check_fit`)."""
        card = self.card
        needs = PolicyNeeds(outputs=card.action_names, delta_outputs=card.delta_heads,
                            history={s: card.history_sizes[s] for s in card.history_signals},
                            trained_shape=card.frame_shape)
        check_fit(DataSpec.of_env(env), needs, who=self.label, error=OnnxLoadError)

    def reset(self, seed: int = 0) -> None:
        """A new episode: empty buffers, and a recurrent policy's state back to zeros."""
        self.stream.reset()
        self._state = None

    def _zero_state(self) -> np.ndarray:
        assert self.card.state_shape is not None
        two, layers, hidden = self.card.state_shape
        return np.zeros((two, layers, 1, hidden), np.float32)

    def act(self, obs: Any) -> dict[str, float]:
        """One step: observe, run the graph, return {output: action value}."""
        started = time.perf_counter()
        sample = self.stream.push(obs.frame, obs.telemetry)
        card = self.card
        feed = {FRAMES: sample["frames"]}
        if HISTORY in card.inputs:
            feed[HISTORY] = sample["history"].astype(np.float32, copy=False)
        if LAST_ACTION in card.inputs:
            feed[LAST_ACTION] = np.array(
                [[float(np.asarray(obs.telemetry[name]).reshape(-1)[0]) for name in card.delta_heads]], np.float32
            )
        if card.recurrent:  # one step of a sequence: [B=1, L=1, ...]
            feed = {k: v[:, None] for k, v in feed.items()}
            feed[STATE] = self._state if self._state is not None else self._zero_state()
        names = [*card.action_names, *([STATE_OUT] if card.recurrent else [])]
        results = dict(zip(names, self.session.run(names, feed), strict=True))
        if card.recurrent:
            self._state = results.pop(STATE_OUT)
        out = {name: float(value.reshape(-1)[0]) for name, value in results.items()}
        bad = [name for name, value in out.items() if not np.isfinite(value)]
        if bad:  # said here, naming the file, rather than by the simulator as "a non-finite action"
            raise OnnxLoadError(f"{self.label} answered NaN or inf for {bad[0]!r}: the graph's weights are "
                                "damaged; export the run again")
        self.latencies_s.append(time.perf_counter() - started)
        return out
