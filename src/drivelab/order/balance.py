"""Balancing schemes over binned labels: which frames (or how much of each) a trainer should see.

Expert driving is mostly "straight, full throttle", so a model trained on raw frames learns to
drive straight. Each scheme here is a pure function of the per-output bin indices (numpy) and a
seed; it returns sample indices (repeated where the scheme oversamples), a dict of them per
output, or per-sample weights. Nothing reads a dataset or touches a trainer.

Schemes (reference "Data balancing", kkelchte `--normalized_output`):
`v1` one sample per non-empty combination of output bins per round; `v2` each output balanced
on its own, a set per output that carries only that output's label; `v3` like v2 but samples keep
all labels and the sets are concatenated; `v4` like v3, but each draw picks, among k candidates
of the needed bin, the one whose other outputs' bins are rarest so far; `inverse_frequency`
weights ∝ count^-power; `normalized_output` caps every bin at a fraction of each batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from drivelab.errors import DrivelabError
from drivelab.order.binning import Binning

SCHEMES = ("none", "v1", "v2", "v3", "v4", "inverse_frequency", "normalized_output")


@dataclass(frozen=True)
class BinnedLabels:
    """Per-output bin index of every sample, with the bins' names (same N for every output)."""

    index: dict[str, np.ndarray]
    labels: dict[str, list[str]]

    @classmethod
    def from_values(cls, values: Mapping[str, np.ndarray], binnings: Mapping[str, Binning]) -> BinnedLabels:
        """Bin raw label arrays ([N] or [N,1]) with their output's `Binning`."""
        index = {name: binnings[name].assign(np.asarray(v).reshape(-1)) for name, v in values.items()}
        sizes = {len(v) for v in index.values()}
        if len(sizes) > 1:
            raise DrivelabError(f"label arrays differ in length: {sorted(sizes)}")
        return cls(index=index, labels={name: binnings[name].labels for name in values})

    @property
    def outputs(self) -> list[str]:
        return list(self.index)

    @property
    def n(self) -> int:
        return len(next(iter(self.index.values()))) if self.index else 0

    def n_bins(self, output: str) -> int:
        return len(self.labels[output])

    def counts(self, output: str, indices: np.ndarray | None = None,
               weights: np.ndarray | None = None) -> np.ndarray:
        """Histogram of one output over all samples, a selection (with repeats) or weights."""
        idx = self.index[output] if indices is None else self.index[output][np.asarray(indices, dtype=np.int64)]
        return np.bincount(idx, weights=weights, minlength=self.n_bins(output))


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy (bits) of a histogram: log2(#bins) when perfectly even, 0 for one bin."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total <= 0:
        return 0.0
    p = c[c > 0] / total
    return float(-(p * np.log2(p)).sum())


def kish_ess(weights: np.ndarray) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2: how many i.i.d. samples the weights are worth."""
    w = np.asarray(weights, dtype=np.float64)
    sq = float((w * w).sum())
    return float(w.sum() ** 2 / sq) if sq > 0 else 0.0


def _draw(rng: np.random.Generator, members: np.ndarray, k: int) -> np.ndarray:
    """k of `members`, each used as evenly as possible (whole permutations, then a random part)."""
    reps, rest = divmod(k, len(members))
    parts = [rng.permutation(members) for _ in range(reps)]
    parts.append(rng.permutation(members)[:rest])
    return np.concatenate(parts).astype(np.int64)


def _non_empty_bins(binned: BinnedLabels, output: str, skip_empty: bool) -> np.ndarray:
    """Bins that can be balanced; an empty bin is an error unless the caller opts to drop it."""
    counts = binned.counts(output)
    empty = np.flatnonzero(counts == 0)
    if len(empty) and not skip_empty:
        names = ", ".join(binned.labels[output][i] for i in empty)
        raise DrivelabError(f"{output}: {len(empty)} bins have no samples ({names}), so its balanced "
                            "buffer could never fill them; use coarser bins (--bins v1, or "
                            "data.balance.bins) or drop empty bins (--skip-empty, or "
                            "data.balance.skip_empty: true)")
    keep = np.flatnonzero(counts > 0)
    if not len(keep):
        raise DrivelabError(f"{output}: no samples to balance")
    return keep


def _quotas(rng: np.random.Generator, bins: np.ndarray, total: int) -> dict[int, int]:
    """Split `total` draws over `bins` as evenly as possible (counts differ by at most one)."""
    base, rest = divmod(total, len(bins))
    extra = set(rng.permutation(bins)[:rest].tolist())
    return {int(b): base + (1 if int(b) in extra else 0) for b in bins}


def _check_outputs(binned: BinnedLabels) -> None:
    if not binned.index or binned.n == 0:
        raise DrivelabError("no labels to balance (no outputs or no samples)")


# --------------------------------------------------------------------------- v1
@dataclass(frozen=True)
class V1Result:
    """v1's selection: `rounds` rounds of one sample per non-empty bin combination."""

    indices: np.ndarray
    rounds: int
    rounds_available: int
    combinations: int
    combinations_possible: int


def balance_v1(binned: BinnedLabels, seed: int = 0, rounds: int | None = None) -> V1Result:
    """Same number of samples for every non-empty combination of output bins.

    `rounds_available` is how many rounds the data allows without repeating a sample (the
    rarest combination's count); more `rounds` than that repeat the rare combinations' samples.
    """
    _check_outputs(binned)
    rng = np.random.default_rng(seed)
    sizes = [binned.n_bins(o) for o in binned.outputs]
    joint = np.ravel_multi_index([binned.index[o] for o in binned.outputs], sizes)
    combos, inverse, counts = np.unique(joint, return_inverse=True, return_counts=True)
    available = int(counts.min())
    r = available if rounds is None else int(rounds)
    if r < 1:
        raise DrivelabError(f"v1 needs at least one round, got {r}")
    order = np.argsort(inverse, kind="stable")
    groups = np.split(order, np.cumsum(counts)[:-1])
    table = np.stack([_draw(rng, g, r) for g in groups], axis=1)  # [rounds, combinations]
    return V1Result(indices=table.reshape(-1), rounds=r, rounds_available=available,
                    combinations=len(combos), combinations_possible=int(np.prod(sizes)))


# --------------------------------------------------------------------------- v2 / v3
def balance_v2(binned: BinnedLabels, seed: int = 0, samples_per_output: int | None = None,
               skip_empty: bool = False) -> dict[str, np.ndarray]:
    """Per output, `samples_per_output` indices spread evenly over its non-empty bins.

    Each set is meant to carry only its own output's label (Charles v2 trained one helper head
    per set). Default size: the dataset's size, so every output sees as many frames as there are.
    """
    _check_outputs(binned)
    rng = np.random.default_rng(seed)
    total = binned.n if samples_per_output is None else int(samples_per_output)
    if total < 1:
        raise DrivelabError(f"samples per output must be at least 1, got {total}")
    sets: dict[str, np.ndarray] = {}
    for output in binned.outputs:
        bins = _non_empty_bins(binned, output, skip_empty)
        quota = _quotas(rng, bins, total)
        idx = binned.index[output]
        parts = [_draw(rng, np.flatnonzero(idx == b), k) for b, k in quota.items() if k]
        sets[output] = rng.permutation(np.concatenate(parts))
    return sets


def balance_v3(binned: BinnedLabels, seed: int = 0, samples_per_output: int | None = None,
               skip_empty: bool = False) -> np.ndarray:
    """v2's per-output sets concatenated in output order; samples keep all their labels.

    Every part is `samples_per_output` long (default: dataset size / number of outputs, so the
    result is about as big as the data), so ``result[k*S:(k+1)*S]`` is output k's even part.
    """
    _check_outputs(binned)
    per = -(-binned.n // len(binned.outputs)) if samples_per_output is None else samples_per_output
    return np.concatenate(list(balance_v2(binned, seed, per, skip_empty).values()))


# --------------------------------------------------------------------------- v4
def balance_v4(binned: BinnedLabels, seed: int = 0, samples_per_output: int | None = None,
               candidates: int = 8, skip_empty: bool = False) -> np.ndarray:
    """v3 with a smarter draw: among `candidates` random samples of the needed bin, take the one
    whose other outputs fall in the bins picked least so far.

    v3 balances each output but leaves the others as skewed as they come (straight driving
    rides along with every throttle bin); v4 spends the free choice inside a bin on the other
    outputs. Draws of all outputs are interleaved so every output's counts evolve together;
    parts are laid out like v3 (output k's draws at ``[k*S:(k+1)*S]``).
    """
    _check_outputs(binned)
    if candidates < 1:
        raise DrivelabError(f"v4 needs at least one candidate per draw, got {candidates}")
    rng = np.random.default_rng(seed)
    outputs = binned.outputs
    per = -(-binned.n // len(outputs)) if samples_per_output is None else int(samples_per_output)
    if per < 1:
        raise DrivelabError(f"samples per output must be at least 1, got {per}")
    schedules: list[np.ndarray] = []
    members: list[dict[int, np.ndarray]] = []
    for output in outputs:
        bins = _non_empty_bins(binned, output, skip_empty)
        quota = _quotas(rng, bins, per)
        schedules.append(rng.permutation(np.repeat(list(quota), list(quota.values()))))
        members.append({b: np.flatnonzero(binned.index[output] == b) for b in quota})
    counts = [np.zeros(binned.n_bins(o), np.int64) for o in outputs]
    index = [binned.index[o] for o in outputs]
    picked = np.empty((len(outputs), per), np.int64)
    used = np.zeros(binned.n, np.int64)
    for step in range(per):
        for k in range(len(outputs)):
            pool = members[k][int(schedules[k][step])]
            cands = pool[rng.integers(len(pool), size=candidates)]
            score = np.zeros(candidates, np.int64)
            for j in range(len(outputs)):
                if j != k:
                    score += counts[j][index[j][cands]]
            # ties go to the candidate used least so far, which keeps repeats (and ESS loss) down
            choice = int(cands[int(np.lexsort((used[cands], score))[0])])
            picked[k, step] = choice
            used[choice] += 1
            for j in range(len(outputs)):
                counts[j][index[j][choice]] += 1
    return picked.reshape(-1)


# --------------------------------------------------------------------------- weights
def inverse_frequency(binned: BinnedLabels, power: float = 1.0, joint: bool = False) -> np.ndarray:
    """Per-sample weights ∝ count^-power (mean 1), for a WeightedRandomSampler.

    `joint` weighs by the count of the sample's bin combination; otherwise by the product of
    its per-output bin counts (the joint count if the outputs were independent, and defined
    for combinations seen once). power 0 = no balancing, 1 = even bins, between = temperature.
    """
    _check_outputs(binned)
    if power < 0:
        raise DrivelabError(f"inverse_frequency power must be >= 0, got {power}")
    if joint:
        sizes = [binned.n_bins(o) for o in binned.outputs]
        key = np.ravel_multi_index([binned.index[o] for o in binned.outputs], sizes)
        _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        log_w = -power * np.log(counts[inverse].astype(np.float64))
    else:
        log_w = np.zeros(binned.n)
        for o in binned.outputs:
            log_w -= power * np.log(binned.counts(o)[binned.index[o]].astype(np.float64))
    w = np.exp(log_w - log_w.max())
    return w / w.mean()


# --------------------------------------------------------------------------- kkelchte
def normalized_output(binned: BinnedLabels, seed: int = 0, batch_size: int = 32,
                      cap: float = 1 / 3) -> np.ndarray:
    """Kept indices when every batch holds at most ``floor(cap * batch_size)`` samples per bin.

    kkelchte's `--normalized_output` capped each class at a third of a batch. Samples come in
    a seeded random order and fill batches; one whose bin (of any output) is full in the current
    batch is skipped for this epoch. Returns the kept indices in batch order.
    """
    _check_outputs(binned)
    limit = int(np.floor(cap * batch_size))
    if batch_size < 1 or limit < 1:
        raise DrivelabError(f"normalized_output needs cap*batch_size >= 1, got {cap:g}*{batch_size}")
    rng = np.random.default_rng(seed)
    outputs = binned.outputs
    index = [binned.index[o] for o in outputs]
    counts = [np.zeros(binned.n_bins(o), np.int64) for o in outputs]
    kept: list[int] = []
    in_batch = 0
    for i in rng.permutation(binned.n):
        if any(counts[j][index[j][i]] >= limit for j in range(len(outputs))):
            continue
        kept.append(int(i))
        for j in range(len(outputs)):
            counts[j][index[j][i]] += 1
        in_batch += 1
        if in_batch == batch_size:
            in_batch = 0
            for c in counts:
                c[:] = 0
    return np.asarray(kept, dtype=np.int64)
