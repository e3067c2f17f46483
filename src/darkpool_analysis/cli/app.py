"""The Typer application objects and the helpers every command shares.

Command modules register themselves on :data:`app`, :data:`ingest_app` or :data:`db_app`;
``darkpool_analysis.cli`` imports them all. Help is Click's plain format (``rich_markup_mode``
None): paragraphs re-wrapped to the terminal, flags without a ``<bool>`` type, nothing cut.
Errors of this package become one clear message and exit code 1; nothing is printed as a
traceback unless ``--verbose`` is given.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from darkpool_analysis.errors import DarkpoolError

if TYPE_CHECKING:
    from darkpool_analysis.config import Settings
    from darkpool_analysis.store import Writer

P = ParamSpec("P")
R = TypeVar("R")

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="darkpool",
    help="FINRA off-exchange data -> daily accumulation/distribution signals.\n\n"
    "FINRA short volume is a proxy for dealer-filled buying, not observed buying, "
    "and not short interest.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
ingest_app = typer.Typer(help="Fetch or import source data into the database.",
                         no_args_is_help=True, rich_markup_mode=None)
db_app = typer.Typer(help="Inspect the database.", no_args_is_help=True,
                     rich_markup_mode=None)
app.add_typer(ingest_app, name="ingest")
app.add_typer(db_app, name="db")

_state: dict[str, Any] = {"verbose": False}


def _print_version(value: bool) -> None:
    """``--version``: the package version, then exit (eager: before any command runs)."""
    if value:
        from darkpool_analysis import __version__

        typer.echo(f"darkpool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging and tracebacks."),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    _state["verbose"] = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
        force=True,
    )


def config() -> Settings:
    """Load settings once per command (errors surface as a clean ConfigError message).

    Imported here, not at module level: pydantic-settings is not needed for ``--help``."""
    from darkpool_analysis.config import load_config

    return load_config()


def parse_date(value: str | None, option: str) -> dt.date | None:
    """A date option (``YYYY-MM-DD`` or ``YYYYMMDD``); a usage error naming the option."""
    if value is None:
        return None
    from darkpool_analysis.trading_calendar import to_date

    try:
        return to_date(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{option} {value!r} is not a date (expected YYYY-MM-DD)",
                                 param_hint=option) from exc


def required_date(value: str, option: str) -> dt.date:
    """Like :func:`parse_date` for an option that must be given."""
    day = parse_date(value, option)
    if day is None:
        raise typer.BadParameter("a date is required", param_hint=option)
    return day


def prepare_build() -> None:
    """Start loading the build's compiled kernels in the background (an ingest that will
    rebuild calls this first: numba's import then overlaps the parsing)."""
    from darkpool_analysis.build import warm_up_kernels_in_background

    warm_up_kernels_in_background()


def auto_build(writer: Writer, settings: Settings) -> None:
    """Finish every ``daily_metrics`` rebuild the raw data is owed (after an ingest).

    Each raw change records, in its own transaction, the first date (and the symbols) whose
    rows it may change (``metrics_owed``); this rebuilds from there to the end of the data,
    so a run whose files were all unchanged still completes a rebuild that an earlier,
    interrupted run (or ``--no-build``) left owed.
    """
    from darkpool_analysis.build import settle_owed  # heavy: only when a build runs

    result = settle_owed(writer, settings)
    if result is None:
        return
    console.print(f"daily_metrics: rebuilt {result.rows_written:,} rows for "
                  f"{result.symbols:,} symbols"
                  + (f" from {result.start}" if result.start else "")
                  + f" in {result.seconds:.2f}s", highlight=False)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn package errors into a red message and exit code 1 (traceback with --verbose)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except DarkpoolError as exc:
            if _state["verbose"]:
                raise
            # Messages name user input (paths, TOML sections like [universes.x]): never markup.
            err_console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
            if exc.hint:
                err_console.print(f"[yellow]hint:[/] {escape(exc.hint)}", highlight=False)
            raise typer.Exit(code=1) from exc

    return wrapper
