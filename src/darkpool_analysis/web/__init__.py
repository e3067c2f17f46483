"""The sandbox as a local web page (``darkpool web``); see :mod:`darkpool_analysis.web.server`."""

from __future__ import annotations

from darkpool_analysis.web.server import DEFAULT_HOST, DEFAULT_PORT, is_loopback, make_server

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "is_loopback", "make_server"]
