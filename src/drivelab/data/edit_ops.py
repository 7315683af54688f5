"""What `drivelab data edit` does, planned before anything is written: which episode pieces the
new dataset holds, in which split, from which source.

An edit is a plan of `Piece`s (a frame range of one source episode, and its split); planning
reads only attrs and, for a frame filter, the small signal arrays (never frames), so every bad
input (an unknown episode id, a trim range outside the episode, a filter on a signal that does
not exist, a result with nothing left) is refused in one line before the output exists.

A frame filter keeps the runs of consecutive frames that pass and makes each run an episode of
its own: a frame stack or a history window must never straddle a hole where frames were cut.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivelab.data.records import SPLITS, DatasetError, EpisodeInfo
from drivelab.data.store import DatasetStore

OPERATIONS = ("drop", "trim", "split", "merge", "filter")
COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    ">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt,
}
_EXPR = re.compile(r"^\s*([A-Za-z_][\w/\[\]]*)\s*(>=|<=|==|!=|>|<)\s*(\S.*?)\s*$")
#: The per-frame keys a filter understands besides ``telemetry/<name>`` and ``actions/<name>``.
FRAME_KEYS = ("reward", "perturbed", "driver")
#: Per-frame driver letters written by the live loop (``live_executor``); other episodes are expert-driven.
DRIVERS = {"e": "expert", "p": "policy"}


class EditError(DatasetError):
    """A `data edit` request that cannot be carried out (nothing was written)."""


@dataclass(frozen=True)
class Piece:
    """One episode of the result: frames ``start:stop`` of ``episode`` of source ``source``."""

    source: int  # 0: SOURCE; 1..: the datasets given to merge, in order
    episode: int
    start: int
    stop: int
    split: str


def parse_ids(text: str, what: str = "episode ids") -> list[int]:
    """``"3,5,7-9"`` -> [3, 5, 7, 8, 9] (an episode index as `data info` lists it)."""
    ids: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            raise EditError(f"{what}: {part!r} is not an episode index or a range like 3-5")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if high < low:
            raise EditError(f"{what}: the range {part} runs backwards; write {high}-{low}")
        ids += range(low, high + 1)
    return ids


def known_episodes(store: DatasetStore, ids: Sequence[int]) -> dict[int, EpisodeInfo]:
    episodes = {e.index: e for e in store.episodes()}
    unknown = sorted(set(ids) - set(episodes))
    if unknown:
        have = f"{min(episodes)}..{max(episodes)}" if episodes else "none"
        raise EditError(f"episode(s) {', '.join(map(str, unknown))} are not committed episodes of "
                        f"{store.path} (it holds {len(episodes)}: indices {have}; see `drivelab data info`)")
    return episodes


def whole(store: DatasetStore, source: int = 0, keep: Callable[[EpisodeInfo], bool] = lambda e: True) -> list[Piece]:
    """Every committed episode of ``store`` that ``keep`` accepts, whole, in its own split."""
    return [Piece(source, e.index, 0, e.length, store.split_of(e.index)) for e in store.episodes() if keep(e)]


def plan_drop(store: DatasetStore, args: Sequence[str]) -> list[Piece]:
    if len(args) != 1:
        raise EditError("drop takes one argument, the episodes to drop: `drop 3,5,7-9`")
    ids = set(parse_ids(args[0], "drop"))
    known_episodes(store, sorted(ids))
    return whole(store, keep=lambda e: e.index not in ids)


def plan_trim(store: DatasetStore, args: Sequence[str]) -> list[Piece]:
    """``trim EPISODE START END``: keep frames START..END-1 of EPISODE (END exclusive, as Python)."""
    if len(args) != 3 or not all(re.fullmatch(r"\d+", a) for a in args):
        raise EditError("trim takes three whole numbers, EPISODE START END (frames START..END-1 are kept): "
                        "`trim 4 50 600`")
    episode, start, stop = (int(a) for a in args)
    length = known_episodes(store, [episode])[episode].length
    if not 0 <= start < stop <= length:
        raise EditError(f"trim {episode} {start} {stop}: episode {episode} has {length} frames, so START < END "
                        f"<= {length} is needed (END is exclusive)")
    pieces = whole(store)
    return [Piece(p.source, p.episode, start, stop, p.split) if p.episode == episode else p for p in pieces]


def plan_split(store: DatasetStore, args: Sequence[str], seed: int = 0) -> list[Piece]:
    """``split val=IDS|FRACTION test=IDS|FRACTION [seed=N]``: every other episode goes to train."""
    given: dict[str, str] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in ("val", "test", "seed") or key in given:
            raise EditError(f"split: {arg!r} is not val=IDS, test=IDS (ids like 3,5-7, or a fraction "
                            "like 0.1) or seed=N, each at most once")
        given[key] = value
    if not set(given) & {"val", "test"}:
        raise EditError("split needs val=... and/or test=...: `split val=0.1 test=0.1` or `split val=3,4 test=5`")
    if "seed" in given:
        if not given["seed"].isdigit():
            raise EditError(f"split: seed={given['seed']!r} is not a whole number")
        seed = int(given["seed"])
    episodes = [e.index for e in store.episodes()]
    rng = np.random.default_rng(seed)
    left = list(episodes)
    chosen: dict[str, set[int]] = {}
    for name in ("test", "val"):
        value = given.get(name)
        if value is None:
            picked: set[int] = set()
        elif "." in value:  # a fraction of all episodes, drawn with ``seed``
            try:
                fraction = float(value)
            except ValueError:
                fraction = -1.0
            if not 0.0 <= fraction <= 1.0:
                raise EditError(f"split: {name}={value} is neither a fraction in [0, 1] nor episode ids")
            count = min(round(fraction * len(episodes)), len(left))
            picked = {int(i) for i in rng.choice(left, size=count, replace=False)} if count else set()
        else:
            picked = set(parse_ids(value, f"split {name}"))
            known_episodes(store, sorted(picked))
        chosen[name] = picked
        left = [i for i in left if i not in picked]
    both = chosen["val"] & chosen["test"]
    if both:
        raise EditError(f"split: episode(s) {', '.join(map(str, sorted(both)))} named for both val and test")
    split = {**{i: "val" for i in chosen["val"]}, **{i: "test" for i in chosen["test"]}}
    return [Piece(0, i, 0, e.length, split.get(i, "train")) for i, e in known_episodes(store, []).items()]


def plan_filter(store: DatasetStore, args: Sequence[str]) -> list[Piece]:
    """``filter EXPR``: an episode attribute (``live_round>=2``) keeps or drops whole episodes;
    a per-frame key (``driver==expert``, ``telemetry/speed>5``, ``actions/steer[0]<0``, ``reward``,
    ``perturbed==0``) keeps the runs of consecutive passing frames, each as its own episode."""
    match = _EXPR.match(" ".join(args))
    if match is None:
        raise EditError(f"filter: {' '.join(args)!r} is not KEY OP VALUE (OP one of >= <= == != > <): "
                        "`filter 'live_round>=2'`, `filter driver==expert`, `filter 'telemetry/speed>1'`")
    key, op, raw = match.groups()
    compare = COMPARE[op]
    frame_key = key.split("[")[0]
    names = {f"{kind}/{n}" for kind, ns in store.meta.signal_names().items() for n in ns}
    if frame_key in names or frame_key in FRAME_KEYS:
        return _frame_filter(store, key, compare, raw)
    if "/" in key:
        raise EditError(f"filter: {key} is not a signal of {store.path} (it has {', '.join(sorted(names))})")
    episodes = store.episodes()
    present = [e for e in episodes if key in e.attrs]
    if not present:
        attrs = sorted({k for e in episodes for k, v in e.attrs.items() if isinstance(v, int | float | str)})
        raise EditError(f"filter: no episode of {store.path} has the attribute {key!r}; per-frame keys are "
                        f"{', '.join(sorted(names) + list(FRAME_KEYS))}; episode attributes: {', '.join(attrs)}")
    value = _value(raw)
    return whole(store, keep=lambda e: key in e.attrs and _passes(compare, e.attrs[key], value))


def _value(raw: str) -> Any:
    raw = raw.strip("'\"")
    try:
        return float(raw)
    except ValueError:
        return raw


def _passes(compare: Callable[[Any, Any], Any], have: Any, want: Any) -> bool:
    if isinstance(want, float) and isinstance(have, bool | int | float):
        return bool(compare(float(have), want))
    return bool(compare(str(have), str(want)))


def frame_drivers(info: EpisodeInfo) -> np.ndarray:
    """Per frame, who drove: ``expert`` or ``policy`` (the live loop's ``live_executor``)."""
    letters = info.attrs.get("live_executor")
    if isinstance(letters, str) and len(letters) == info.length:
        return np.array([DRIVERS.get(c, c) for c in letters], dtype=object)
    return np.full(info.length, "expert", dtype=object)


def _frame_filter(store: DatasetStore, key: str, compare: Callable[[Any, Any], Any], raw: str) -> list[Piece]:
    name, _, col = key.partition("[")
    column = int(col.rstrip("]")) if col else None
    value = _value(raw)
    pieces: list[Piece] = []
    for info in store.episodes():
        if name == "driver":
            values: np.ndarray = frame_drivers(info)
            passed = np.array([compare(v, str(value)) for v in values], dtype=bool)
        else:
            array = store.read_array(info.index, name).astype(np.float64)
            array = array.reshape(info.length, -1)
            if column is None and array.shape[1] != 1:
                raise EditError(f"filter: {name} holds {array.shape[1]} values per frame: pick one, "
                                f"e.g. {name}[0]")
            if column is not None and not 0 <= column < array.shape[1]:
                raise EditError(f"filter: {name} has {array.shape[1]} value(s) per frame, no [{column}]")
            if not isinstance(value, float):
                raise EditError(f"filter: {name} is a number per frame; compare it with a number, not {raw!r}")
            passed = np.asarray(compare(array[:, column or 0], value), dtype=bool)
        pieces += [Piece(0, info.index, s, e, store.split_of(info.index)) for s, e in runs(passed)]
    return pieces


def runs(passed: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of every run of True values."""
    edges = np.diff(np.concatenate([[0], passed.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def check_mergeable(first: DatasetStore, other: DatasetStore) -> None:
    """Merging needs the same env, frame size and signals (chunking may differ)."""
    mine, theirs = first.meta.to_attrs(), other.meta.to_attrs()
    for key in ("env_id", "fps", "frame_shape", "telemetry", "actions"):
        if mine[key] != theirs[key]:
            shown = {k: [s["name"] for s in v] if key in ("telemetry", "actions") else v
                     for k, v in (("a", mine[key]), ("b", theirs[key]))}
            raise EditError(f"merge: {other.path} has {key} {shown['b']}, {first.path} has {shown['a']}: only "
                            "datasets of the same env and signals merge")


def plan_merge(stores: Sequence[DatasetStore]) -> list[Piece]:
    pieces: list[Piece] = []
    for n, store in enumerate(stores):
        if n:
            check_mergeable(stores[0], store)
        pieces += whole(store, source=n)
    return pieces


def check_splits(pieces: Sequence[Piece]) -> None:
    if not pieces:
        raise EditError("the edit leaves no episode: nothing was written (check the ids or the filter)")
    assert all(p.split in SPLITS for p in pieces)
