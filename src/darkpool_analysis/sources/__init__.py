"""Data sources: downloaders and strict parsers (bytes in, frames out; no database access)."""
