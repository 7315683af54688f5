"""The `drivelab` command: one thin function per verb, each calling the library.

User mistakes surface as `DrivelabError`: `main` prints their one-line message and exits 2,
so nobody sees a traceback for a wrong path or flag. Anything else is a bug and keeps its
traceback.
"""


import errno
import os
import sys

import typer

from drivelab.cli import (  # noqa: F401  (registers the verbs)
    data_edit_verbs,
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
from drivelab.cli.app import ClickException, app, one_line, say, usage_line
from drivelab.errors import DrivelabError, Interrupted


# --------------------------------------------------------------------------- entry point
def main() -> None:
    """Console-script entry: run the app, turning user mistakes into one error line.

    Typer turns a Ctrl-C it sees into ``exit 130`` (returned, as Click is run with
    ``standalone_mode=False``), so the stages that know what they kept (collection, training,
    evaluation) catch ``KeyboardInterrupt`` themselves and raise `Interrupted` with that news;
    anything else interrupted gets the generic line here. Usage errors (an unknown flag, a
    missing or extra argument, ``--episodes abc``) are Click's: they become the same one
    ``error:`` line (exit 2) instead of Typer's boxed panel.
    """
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:
        code = app(prog_name="drivelab", standalone_mode=False)
    except Interrupted as exc:
        say("interrupted", str(exc))
        sys.exit(130)
    except DrivelabError as exc:
        say("error", str(exc))
        sys.exit(2)
    except ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare verb: its help, on stdout
            print(exc.format_message())
        else:
            say("error", usage_line(exc, sys.argv[1:]))
        sys.exit(exc.exit_code)
    except typer.Abort:
        say("error", "aborted (the input ended)")
        sys.exit(1)
    except KeyboardInterrupt:
        say("interrupted", "committed work is kept")
        sys.exit(130)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:  # anything else is a bug: keep its traceback
            raise
        name = one_line(str(exc.filename), 80)
        say("error", f"a path is too long for the file system ({name}): give a shorter one")
        sys.exit(2)
    if code == 130:
        say("interrupted", "committed work is kept")
    if isinstance(code, int) and code:
        sys.exit(code)
