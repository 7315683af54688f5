"""The `drivelab` command: one thin function per verb, each calling the library.

User mistakes surface as `DrivelabError`: `main` prints their one-line message and exits 2,
so nobody sees a traceback for a wrong path or flag. Anything else is a bug and keeps its
traceback.
"""


import os
import sys

from drivelab.cli import data_verbs, demo_verb, eval_verbs, report_verbs, train_verbs  # noqa: F401  (registers the verbs)
from drivelab.cli.app import app, err
from drivelab.errors import DrivelabError


# --------------------------------------------------------------------------- entry point
def main() -> None:
    """Console-script entry: run the app, turning user mistakes into one error line."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:
        app()
    except DrivelabError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: committed work is kept")
        sys.exit(130)
