"""The ``darkpool`` command line (Typer + Rich). Each command lives in its own module."""

from __future__ import annotations

from darkpool_analysis.cli import db_cmd  # noqa: F401  (registers commands)
from darkpool_analysis.cli.app import app


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
