"""``darkpool web``'s server: the FastAPI application (:mod:`web.app`) under uvicorn.

:func:`make_server` binds the socket first (port 0 = any free port), so :attr:`WebServer.url`
is known before serving; :meth:`WebServer.serve_forever` runs uvicorn on that socket until
:meth:`WebServer.shutdown` (or Ctrl-C). Binds 127.0.0.1 by default; the CLI warns for any
other address.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Final

from darkpool_analysis.config import Settings, load_config

log = logging.getLogger(__name__)

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8765


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (the page is then private)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebServer:
    """A bound socket and the uvicorn server that will serve the application on it."""

    def __init__(self, host: str, port: int, settings: Settings) -> None:
        import uvicorn

        from darkpool_analysis.web.app import create_app

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError:
            self.socket.close()
            raise
        self.socket.listen(128)
        self.settings = settings
        self.app = create_app(settings)
        # uvicorn's own access log is off: the application logs one line per request.
        config = uvicorn.Config(self.app, log_config=None, access_log=False,
                                timeout_graceful_shutdown=5, lifespan="on")
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]

    @property
    def server_address(self) -> tuple[str, int]:
        """(host, port) of the bound socket."""
        host, port = self.socket.getsockname()[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """``http://host:port/`` of the bound socket."""
        host, port = self.server_address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (blocks)."""
        self.server.run(sockets=[self.socket])

    def shutdown(self) -> None:
        """Ask the serving loop to stop (thread-safe)."""
        self.server.should_exit = True

    def close(self) -> None:
        """Close the listening socket."""
        self.socket.close()

    def __enter__(self) -> WebServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
                settings: Settings | None = None) -> WebServer:
    """Bind the web server (port 0 = any free port); call ``serve_forever()`` to run it."""
    server = WebServer(host, port, settings if settings is not None else load_config())
    log.info("darkpool web serving %s (database %s)", server.url, server.settings.db_path)
    return server


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "WebServer", "is_loopback", "make_server"]
