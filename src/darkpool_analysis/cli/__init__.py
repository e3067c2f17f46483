"""The ``darkpool`` command line (Typer + Rich). Each command lives in its own module."""

from __future__ import annotations

# Importing a module registers its commands on the Typer apps.
from darkpool_analysis.cli import (  # noqa: F401
    build_cmd,
    db_cmd,
    evaluate_cmd,
    ingest_finra_short,
    ingest_options,
    ingest_otc,
    ingest_prices,
    ingest_trades,
    market_cmd,
    run_cmd,
    sandbox_cmd,
    watch_cmd,
    web_cmd,
)
from darkpool_analysis.cli.app import app


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
