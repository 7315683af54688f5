"""The glob language of ``model.init_from`` and ``model.freeze`` over state-dict names.

Both settings select parts of the policy by dotted names (``backbone.*``, ``heads.steering``),
and both must refuse a glob that matches nothing with a hint of what there is; the matching,
the short name lists their error lines show, and the error they raise live here once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

from drivelab.errors import DrivelabError

#: How many names an error line shows before "and N more".
SHOWN = 4


class TransferError(DrivelabError):
    """A transfer-learning or freezing setting that cannot be carried out."""


def glob_matches(name: str, glob: str) -> bool:
    """Whether a dotted state-dict name matches a glob; a bare module name covers its subtree.

    ``fnmatch``'s ``*`` also crosses dots, so ``backbone.*`` is everything in the backbone and
    ``history`` (no wildcard) means ``history`` itself or anything under it.
    """
    return fnmatchcase(name, glob) or fnmatchcase(name, glob + ".*")


def matching(names: Iterable[str], globs: Sequence[str]) -> list[str]:
    """The names any of ``globs`` matches, in their original order."""
    return [name for name in names if any(glob_matches(name, glob) for glob in globs)]


def shown(names: Sequence[str]) -> str:
    """The first few names for an error line, then "and N more" (a policy has hundreds)."""
    head = ", ".join(names[:SHOWN])
    return head + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def top_level(names: Iterable[str]) -> str:
    """The policy's module tree two levels deep, as a hint for a glob that matched nothing."""
    seen: dict[str, None] = {}
    for name in names:
        parts = name.split(".")
        seen[".".join(parts[:2]) + (".*" if len(parts) > 2 else "")] = None
    return shown(list(seen))
