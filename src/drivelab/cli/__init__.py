"""The `drivelab` command: one thin function per verb, each calling the library.

User mistakes surface as `DrivelabError`: `main` prints their one-line message and exits 2,
so nobody sees a traceback for a wrong path or flag. Anything else is a bug and keeps its
traceback.
"""


import os
import sys

from drivelab.cli import (  # noqa: F401  (registers the verbs)
    data_verbs,
    demo_verb,
    diagnose_verb,
    eval_verbs,
    export_verb,
    interop_verbs,
    live_verb,
    report_verbs,
    specs_verb,
    sweep_verb,
    train_verbs,
)
from drivelab.cli.app import app, err
from drivelab.errors import DrivelabError, Interrupted


# --------------------------------------------------------------------------- entry point
def main() -> None:
    """Console-script entry: run the app, turning user mistakes into one error line.

    Typer turns a Ctrl-C it sees into a silent ``exit 130``, so the stages that know what they
    kept (collection, training, evaluation) catch ``KeyboardInterrupt`` themselves and raise
    `Interrupted` with that news; anything else interrupted gets the generic line here.
    """
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:
        app()
    except Interrupted as exc:
        err.print(f"[yellow]interrupted[/]: {exc}", highlight=False, soft_wrap=True)
        sys.exit(130)
    except DrivelabError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: committed work is kept", highlight=False)
        sys.exit(130)
    except SystemExit as exc:
        if exc.code == 130:
            err.print("[yellow]interrupted[/]: committed work is kept", highlight=False)
        raise
