"""The Typer application, its consoles and the progress display every verb shares."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
import typer.main
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from drivelab.errors import clip

try:  # Typer >= 0.2x carries its own copy of Click; older ones use the click package
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - depends on the installed Typer
    from click import ClickException

# Help text is plain (rich_markup_mode=None): `RUN[@batch]` or `{"group": [ids]}` in a help line
# would otherwise be read as markup tags and vanish from --help.
app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    help="drivelab: end-to-end driving policies learned from demonstrations.",
)


def _print_version(value: bool) -> None:
    if value:
        from drivelab.extras import package_version

        typer.echo(f"drivelab {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print drivelab's version and exit."),
) -> None:
    """drivelab: end-to-end driving policies learned from demonstrations."""


data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Inspect and check recorded datasets.")
app.add_typer(data_app, name="data")

# No emoji codes anywhere: a ``:x:`` in a path, a config value or a file's line must print as
# typed. Markup stays on for the verbs' own styling, so a user's value is escaped
# (``rich.markup.escape``), printed with ``markup=False``, or goes through `say`.
out = Console(emoji=False)
err = Console(stderr=True, emoji=False)

#: The longest user-derived message the command line prints (a value a user pasted may be huge).
MESSAGE_LIMIT = 2000

# Every verb that writes a user-named file offers the same escape hatch (see drivelab.outputs).
FORCE_OPTION = typer.Option("--force", help="Replace existing output files (never datasets or run files).")


# --------------------------------------------------------------------------- messages
def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` as one line of at most ``limit`` characters (`drivelab.errors.clip`)."""
    return clip(text, limit)


def say(kind: str, message: str) -> None:
    """The one line a failed or interrupted command ends with: ``error: ...`` or
    ``interrupted: ...``; the message (file content, paths, values) is never read as markup."""
    style = "bold red" if kind == "error" else "yellow"
    line = Text.assemble((f"{kind}:", style), " ", one_line(message))
    err.print(line, highlight=False, soft_wrap=True)


def usage_line(exc: ClickException, args: list[str]) -> str:
    """Click's error (an unknown flag, ``--episodes abc``) as drivelab's one line, pointing at
    the verb's ``--help`` (named from ``args`` when Click's error does not carry its verb)."""
    message = one_line(exc.format_message(), 300)
    ctx = getattr(exc, "ctx", None)
    hint = _override_hint(exc, ctx, args)
    return f"{message}{hint} (see {ctx.command_path if ctx is not None else _verb_path(args)} --help)"


def _override_hint(exc: ClickException, ctx: object, args: list[str]) -> str:
    """``--max-batches 50`` on a verb that takes overrides: "did you mean train.max_batches=50?".

    Config keys are set with positional ``KEY=VALUE``; a flag spelling of one is a natural guess,
    so the error names the override it stands for (every schema key whose dotted or last part,
    dashes read as underscores, is the flag's name).
    """
    option = getattr(exc, "option_name", None)
    command = getattr(ctx, "command", None)
    if not option or not option.startswith("--") or command is None:
        return ""
    if not any(getattr(p, "name", None) == "overrides" for p in command.params):
        return ""
    from drivelab.config.loading import dotted_keys

    name, _, value = option[2:].partition("=")
    name = name.replace("-", "_")
    keys = [k for k in dotted_keys() if k.replace(".", "_") == name or k.rsplit(".", 1)[-1] == name]
    if not keys:
        return ""
    for at, arg in enumerate(args):  # the value the user gave: ``--flag=V`` or ``--flag V``
        if arg.startswith(option + "="):
            value = arg.partition("=")[2]
        elif arg == option and at + 1 < len(args) and not args[at + 1].startswith("-"):
            value = args[at + 1]
    shown = one_line(value, 60) if value else "VALUE"
    return "; did you mean " + " or ".join(f"{k}={shown}" for k in keys[:3]) + "? (config keys are KEY=VALUE)"


def _verb_path(args: list[str]) -> str:
    """``drivelab data info`` from the command line's leading verb names."""
    command, path = typer.main.get_command(app), ["drivelab"]
    for arg in args:
        sub = getattr(command, "commands", {}).get(arg)
        if sub is None:
            break
        command = sub
        path.append(arg)
    return " ".join(path)


# --------------------------------------------------------------------------- helpers
@contextmanager
def lazy_progress(
    total: int, label: str, unit: str = "episodes"
) -> Iterator[Callable[[int, int, int], None]]:
    """A progress bar (episodes, frames, frames/s) that appears with the first progress report.

    Starting it lazily keeps a bad-input error a single line: validation happens before any
    work, so no half-drawn bar precedes the message.
    """
    progress = Progress(
        TextColumn(f"[bold]{label}[/]"),
        BarColumn(),
        TextColumn(f"{{task.completed}}/{{task.total}} {unit}"),
        TextColumn("{task.fields[frames]} frames"),
        TextColumn("[cyan]{task.fields[fps]:.0f} frames/s[/]"),
        TimeElapsedColumn(),
        console=err,
    )
    state = {"live": False, "finished": False, "frames": 0}
    task = progress.add_task(label, total=total, frames=0, fps=0.0)

    def on_progress(frames_delta: int, done: int, reported_total: int) -> None:
        nonlocal total
        if state["finished"]:
            return
        if not state["live"]:
            total = total or reported_total  # 0: the work tells its size with its first report
            progress.reset(task, total=total, frames=0, fps=0.0)  # elapsed time counts from here
            progress.start()
            state["live"] = True
        state["frames"] += frames_delta
        elapsed = progress.tasks[0].elapsed or 1e-9
        progress.update(task, completed=done, frames=state["frames"], fps=state["frames"] / elapsed)
        if done >= total:  # free the terminal for the next stage's display
            progress.stop()
            state["live"], state["finished"] = False, True

    try:
        yield on_progress
    except BaseException:
        # the error line (or Ctrl-C's news) is what the user must read: the bar leaves no trace
        progress.live.transient = True
        raise
    finally:
        if state["live"]:
            progress.stop()


def console_beside(json_out: object) -> Console:
    """Where a verb's tables go: stdout, or stderr when ``--json -`` puts the JSON on stdout
    (so `drivelab eval ... --json - | jq` reads JSON alone)."""
    from drivelab.outputs import is_stdout

    return err if is_stdout(json_out) else out
