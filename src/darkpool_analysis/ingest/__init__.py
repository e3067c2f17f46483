"""Ingestion orchestration: fetch or read source files, validate, write through the store."""
