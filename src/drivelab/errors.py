"""The one error type users see.

Every mistake a user can make (a bad path, a wrong flag, a broken dataset) is raised as a
`DrivelabError` with a single sentence saying what is wrong and what to do. The command line
prints that sentence and exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class DrivelabError(ValueError):
    """A user-facing problem: the message is one line naming the problem and the fix."""


class Interrupted(DrivelabError):
    """Ctrl-C, turned into one line saying what was kept and how to continue.

    The library catches ``KeyboardInterrupt`` where it knows what survived (committed episodes,
    the last checkpoint) and raises this instead; the command line prints it and exits 130.
    """


def clip(text: str, limit: int = 80) -> str:
    """``text`` as one line of at most ``limit`` characters, for a message that quotes a user's
    value or a file's content: line breaks shown as ``\\n``, a longer text cut with ``...``.

    One helper, so every message bounds what it echoes the same way (a pasted value, a crafted
    file name or an alias bomb must never flood the terminal)."""
    text = str(text).replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."

