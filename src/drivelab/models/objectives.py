"""Per-head losses and errors: what the trainer minimises and what it reports.

Each head has its own loss (``mse`` / ``l1`` / ``huber`` for a regression value, cross-entropy
over bins for a classification head) and weight; the total ``loss`` is their weighted sum, like
Charles' Keras models (total = sum of ``<output>_loss``). Auxiliary heads on the history branch
(``aux/<output>``, model_0008_v4) are scored with their head's loss and added with the history
branch's ``aux_weight`` (0.25 there); the speed head's ``speed_head_loss`` with its own weight.
The mean absolute error is reported in action units for
every head — for a classification head on the value of the arg-max bin — so regression and
classification policies can be compared on one scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from drivelab.config import HeadConfig
from drivelab.models.conditioning import SPEED_PREDICTION, SPEED_TARGET
from drivelab.models.heads import action_to_bin, logits_to_action
from drivelab.models.history import AUX_PREFIX

#: The speed head's logged loss (MSE on the standardised speed; CILRS).
SPEED_LOSS = "speed_head_loss"


@dataclass(frozen=True)
class HeadObjective:
    """The loss and error of one output, given the head's prediction and the expert's action."""

    output: str
    kind: str
    loss: str
    weight: float
    bin_values: tuple[float, ...] = ()
    boundaries: tuple[float, ...] = ()
    scale: float = 1.0  # a standardised head's target std: its loss is on action / scale

    @classmethod
    def from_config(cls, head: HeadConfig) -> HeadObjective:
        if head.categorical:  # bins of an action, or class ids (kind: class)
            return cls(
                head.output, head.kind, "ce", head.weight,
                tuple(head.bin_values()), tuple(head.bin_boundaries()),
            )
        return cls(head.output, head.kind, head.loss or "mse", head.weight)

    @property
    def categorical(self) -> bool:
        """Logits over bins or classes (cross-entropy, accuracy) rather than one value."""
        return self.kind in ("classification", "class")

    def metric_names(self) -> list[str]:
        """This head's logged names: loss, MAE in action units (not for class ids), accuracy."""
        names = [f"{self.output}_loss"]
        if self.kind != "class":
            names.append(f"{self.output}_mean_absolute_error")
        if self.categorical:
            names.append(f"{self.output}_accuracy")
        return names

    def target_index(self, target: torch.Tensor) -> torch.Tensor:
        """The logit index [B] (long) a target stands for: its bin, or its class id."""
        action = target.reshape(target.shape[0], -1)[:, 0].float()
        return action_to_bin(action, self.boundaries)

    def correct(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """1.0 where the arg-max logit is the target's bin/class, else 0.0 ([B])."""
        return (prediction.detach().argmax(dim=1) == self.target_index(target)).float()

    def per_sample_loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of each sample [B]; ``target`` is the action [B, 1] (or [B])."""
        action = target.reshape(target.shape[0], -1)[:, 0].to(prediction.dtype)
        if self.categorical:
            return F.cross_entropy(prediction.float(), self.target_index(target), reduction="none")
        value = prediction.reshape(prediction.shape[0], -1)[:, 0]
        if self.scale != 1.0:
            value, action = value / self.scale, action / self.scale
        if self.loss == "mse":
            return F.mse_loss(value, action, reduction="none")
        if self.loss == "l1":
            return F.l1_loss(value, action, reduction="none")
        return F.huber_loss(value, action, reduction="none", delta=1.0)

    def action(self, prediction: torch.Tensor) -> torch.Tensor:
        """The predicted action [B] in action units (arg-max bin value for classification)."""
        if self.categorical:
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

    def __init__(
        self,
        heads: Sequence[HeadConfig],
        aux_weight: float = 0.0,
        scales: Mapping[str, float] | None = None,
        speed_weight: float | None = None,
    ) -> None:
        self.heads = [HeadObjective.from_config(h) for h in heads]
        if scales:
            self.heads = [replace(h, scale=float(scales.get(h.output, 1.0))) for h in self.heads]
        self.aux_weight = float(aux_weight)
        #: the speed head's weight (CILRS; ``model.speed_head``), None without one
        self.speed_weight = speed_weight

    @property
    def outputs(self) -> list[str]:
        return [h.output for h in self.heads]

    def metric_names(self, with_aux: bool) -> list[str]:
        """Log names in a fixed order: ``loss``, then per output loss and MAE, then aux."""
        names = ["loss"]
        for h in self.heads:
            names += h.metric_names()
        if with_aux:
            names += [f"aux/{h.output}_loss" for h in self.heads]
        if self.speed_weight is not None:
            names.append(SPEED_LOSS)
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
            if h.kind != "class":
                out[f"{h.output}_mean_absolute_error"] = h.absolute_error(pred, target)
            if h.categorical:
                out[f"{h.output}_accuracy"] = h.correct(pred, target)
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
        if self.speed_weight is not None and SPEED_PREDICTION in predictions:
            speed = F.mse_loss(predictions[SPEED_PREDICTION].float(), predictions[SPEED_TARGET].float(),
                               reduction="none")
            out[SPEED_LOSS] = speed
            total = total + self.speed_weight * speed
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

    def output_terms(
        self, output: str, predictions: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> ObjectiveTerms:
        """One output's weighted loss (and aux loss) on a batch that carries only its label.

        Charles' helper models (model_0002): each output trains the shared trunk and its own
        head on its own balanced batch; the other heads' predictions are ignored.
        """
        h = next(h for h in self.heads if h.output == output)
        target = batch[f"target/{output}"]
        loss = h.per_sample_loss(predictions[output], target).mean()
        values = {
            f"{output}_loss": loss.detach(),
            f"{output}_mean_absolute_error": h.absolute_error(predictions[output], target).mean(),
        }
        if h.categorical:
            values[f"{output}_accuracy"] = h.correct(predictions[output], target).mean()
        total = h.weight * loss
        aux_pred = predictions.get(AUX_PREFIX + output)
        if aux_pred is not None:
            aux = h.per_sample_loss(aux_pred, target).mean()
            values[f"aux/{output}_loss"] = aux.detach()
            total = total + self.aux_weight * h.weight * aux
        return ObjectiveTerms(total=total, values=values)

