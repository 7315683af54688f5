"""Per-head losses and errors: what the trainer minimises and what it reports.

Each head has its own loss (``mse`` / ``l1`` / ``huber`` for a regression value, cross-entropy
over bins for a classification head) and weight; the total ``loss`` is their weighted sum, like
Charles' Keras models (total = sum of ``<output>_loss``). Auxiliary heads on the history branch
(``aux/<output>``, model_0008_v4) are scored with their head's loss and added with the history
branch's ``aux_weight`` (0.25 there). The mean absolute error is reported in action units for
every head — for a classification head on the value of the arg-max bin — so regression and
classification policies can be compared on one scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from drivelab.config import HeadConfig
from drivelab.models.heads import action_to_bin, logits_to_action
from drivelab.models.history import AUX_PREFIX


@dataclass(frozen=True)
class HeadObjective:
    """The loss and error of one output, given the head's prediction and the expert's action."""

    output: str
    kind: str
    loss: str
    weight: float
    bin_values: tuple[float, ...] = ()
    boundaries: tuple[float, ...] = ()

    @classmethod
    def from_config(cls, head: HeadConfig) -> HeadObjective:
        if head.kind == "classification":
            assert head.bins is not None
            return cls(
                head.output, head.kind, "ce", head.weight,
                tuple(head.bins.values()), tuple(head.bins.boundaries()),
            )
        return cls(head.output, head.kind, head.loss or "mse", head.weight)

    def per_sample_loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of each sample [B]; ``target`` is the action [B, 1] (or [B])."""
        action = target.reshape(target.shape[0], -1)[:, 0].to(prediction.dtype)
        if self.kind == "classification":
            bins = action_to_bin(action, self.boundaries)
            return F.cross_entropy(prediction.float(), bins, reduction="none")
        value = prediction.reshape(prediction.shape[0], -1)[:, 0]
        if self.loss == "mse":
            return F.mse_loss(value, action, reduction="none")
        if self.loss == "l1":
            return F.l1_loss(value, action, reduction="none")
        return F.huber_loss(value, action, reduction="none", delta=1.0)

    def action(self, prediction: torch.Tensor) -> torch.Tensor:
        """The predicted action [B] in action units (arg-max bin value for classification)."""
        if self.kind == "classification":
            values = torch.tensor(self.bin_values, dtype=torch.float32, device=prediction.device)
            return logits_to_action(prediction, values)
        return prediction.reshape(prediction.shape[0], -1)[:, 0]

    def absolute_error(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        action = target.reshape(target.shape[0], -1)[:, 0]
        return (self.action(prediction.detach()).float() - action.float()).abs()


@dataclass
class ObjectiveTerms:
    """One batch's loss terms: ``total`` to backpropagate, the rest detached for the logs."""

    total: torch.Tensor
    values: dict[str, torch.Tensor]  # log name -> scalar tensor (detached)


class Objective:
    """The policy's training objective: weighted per-head losses plus weighted aux losses."""

    def __init__(self, heads: Sequence[HeadConfig], aux_weight: float = 0.0) -> None:
        self.heads = [HeadObjective.from_config(h) for h in heads]
        self.aux_weight = float(aux_weight)

    @property
    def outputs(self) -> list[str]:
        return [h.output for h in self.heads]

    def metric_names(self, with_aux: bool) -> list[str]:
        """Log names in a fixed order: ``loss``, then per output loss and MAE, then aux."""
        names = ["loss"]
        for h in self.heads:
            names += [f"{h.output}_loss", f"{h.output}_mean_absolute_error"]
        if with_aux:
            names += [f"aux/{h.output}_loss" for h in self.heads]
        return names

    def per_sample(
        self, predictions: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Every logged quantity per sample ([B] each); means of these are the batch values."""
        out: dict[str, torch.Tensor] = {}
        total: torch.Tensor | None = None
        aux_total: torch.Tensor | None = None
        for h in self.heads:
            target = batch[f"target/{h.output}"]
            pred = predictions[h.output]
            loss = h.per_sample_loss(pred, target)
            out[f"{h.output}_loss"] = loss
            out[f"{h.output}_mean_absolute_error"] = h.absolute_error(pred, target)
            weighted = h.weight * loss
            total = weighted if total is None else total + weighted
            aux_pred = predictions.get(AUX_PREFIX + h.output)
            if aux_pred is not None:
                aux_loss = h.per_sample_loss(aux_pred, target)
                out[f"aux/{h.output}_loss"] = aux_loss
                aux_weighted = h.weight * aux_loss
                aux_total = aux_weighted if aux_total is None else aux_total + aux_weighted
        assert total is not None
        if aux_total is not None:
            total = total + self.aux_weight * aux_total
        out["loss"] = total
        return out

    def __call__(
        self, predictions: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> ObjectiveTerms:
        per_sample = self.per_sample(predictions, batch)
        total = per_sample["loss"].mean()
        values = {name: v.detach().mean() for name, v in per_sample.items() if name != "loss"}
        values["loss"] = total.detach()
        return ObjectiveTerms(total=total, values=values)
