"""CLI commands (module being written)."""
