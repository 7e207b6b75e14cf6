"""The `rmaudit` command line: a thin layer over the Python API.

Each sub-command lives in ``rmaudit/commands/<name>.py`` and returns an exit code.
``main`` maps failures onto the documented exit codes:
0 = success / gate passed, 1 = gate failed, 2 = usage or input error, 3 = internal error.
"""

from __future__ import annotations

import errno
import sys
import traceback

import click
import typer

from rmaudit.errors import RmauditInputError

app = typer.Typer(
    name="rmaudit",
    help="Audit reward models for the classic RLHF pathologies before PPO sees them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help texts quote config tables ("[tool.rmaudit]"); rich markup would eat them as tags.
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from rmaudit import __version__

        typer.echo(f"rmaudit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Audit reward models for the classic RLHF pathologies before PPO sees them."""


def _register_commands() -> None:
    # Command modules import only typer and option tables: torch, transformers and the probes
    # load when a command runs, so `rmaudit --help` answers at once.
    from rmaudit.commands import check, demo, diff, probes, report, selftest, train, verify

    app.command("train", help=train.__doc__)(train.train_command)
    app.command("check", help=check.__doc__)(check.check_command)
    app.command("probes", help=probes.__doc__)(probes.probes_command)
    app.command("report", help=report.__doc__)(report.report_command)
    app.command("demo", help=demo.__doc__)(demo.demo_command)
    app.command("diff", help=diff.__doc__)(diff.diff_command)
    app.command("verify", help=verify.__doc__)(verify.verify_command)
    app.command("selftest", help=selftest.__doc__)(selftest.selftest_command)


_register_commands()

EXIT_OK, EXIT_GATE_FAILED, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


def quiet_libraries() -> None:
    """transformers' per-load progress bars and notices drown the audit's own output; keep
    its warnings and errors. Our own progress bars report the long work. Called by the
    commands that load models (importing transformers costs seconds)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (used by the console script and by tests)."""
    try:
        code = app(args=argv, standalone_mode=False)
    except (click.exceptions.Exit, typer.Exit) as exc:
        return exc.exit_code
    except (click.ClickException, typer.TyperException) as exc:  # typer >= 0.2x raises its vendored click's errors
        exc.show()  # type: ignore[union-attr]  # both classes define show() at run time
        return EXIT_USAGE
    except (click.exceptions.Abort, KeyboardInterrupt):
        print("rmaudit: interrupted", file=sys.stderr)
        return 130
    except RmauditInputError as exc:
        print(f"rmaudit: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        if exc.errno not in USER_OS_ERRORS:
            return internal_error(exc)
        # Disk full, read-only or permission denied: the user's environment, not a bug.
        where = exc.filename or "a file"
        print(f"rmaudit: error: {where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - the documented contract is exit code 3
        return internal_error(exc)
    return int(code or 0)


USER_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                  errno.EISDIR, errno.ENAMETOOLONG, errno.ENOENT}


def one_line(text: str, limit: int = 600) -> str:
    """Error text as one line (a library's multi-line message is joined), bounded, with
    terminal control characters from data shown, not obeyed."""
    from rmaudit.report.formatting import neutralise, one_line as collapse, truncate

    return truncate(collapse(neutralise(text)), limit)


def internal_error(exc: BaseException) -> int:
    """A genuine bug: one line asking for a report, the traceback saved to a file to attach
    (printed as well when RMAUDIT_DEBUG=1)."""
    import os
    import tempfile

    text = "".join(traceback.format_exception(exc))
    fd, path = tempfile.mkstemp(prefix="rmaudit-crash-", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    if os.environ.get("RMAUDIT_DEBUG"):
        print(text, file=sys.stderr)
    print(f"rmaudit: internal error: {type(exc).__name__}: {one_line(str(exc), 300)}. This is a bug in rmaudit; "
          f"please file a bug report with the traceback saved in {path}", file=sys.stderr)
    return EXIT_INTERNAL


def entry_point() -> None:
    sys.exit(main())
