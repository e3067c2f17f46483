"""``darkpool web``: serve the accumulation sandbox as a local web page (read-only)."""

from __future__ import annotations

from typing import Annotated

import typer

from darkpool_analysis.cli.app import app, config, console, err_console, handle_errors


@app.command("web")
@handle_errors
def web(
    host: Annotated[str, typer.Option(
        "--host", help="Address to bind; anything but a loopback address exposes the page "
        "(and the database's contents) to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(
        "--port", min=0, max=65535, help="TCP port (0 = any free port).")] = 8765,
    open_browser: Annotated[bool, typer.Option(
        "--open/--no-open", help="Open the page in the default browser.")] = True,
    access_log: Annotated[bool, typer.Option(
        "--access-log/--no-access-log",
        help="Log one line per request (client, method, path, status, milliseconds).")] = True,
) -> None:
    """Serve the sandbox, market and evaluation page at http://HOST:PORT/ until Ctrl-C.

    The same choices as `darkpool sandbox`; the database is opened read-only per request,
    so ingests and builds can run meanwhile.
    FINRA "buy" volume is FINRA short-sale volume: a proxy for dealer-filled buying.
    """
    import logging
    import webbrowser

    from darkpool_analysis.web import server as web_server

    if not web_server.is_loopback(host):
        err_console.print(f"[bold yellow]warning:[/] binding {host} serves the sandbox to "
                          "other machines; it has no authentication (use 127.0.0.1 to keep "
                          "it local)", highlight=False)
    if access_log:
        logging.getLogger("darkpool_analysis.web.access").setLevel(logging.INFO)
    try:
        httpd = web_server.make_server(host, port, settings=config())
    except OSError as exc:
        err_console.print(f"[bold red]error:[/] cannot listen on {host}:{port}: {exc}",
                          highlight=False)
        raise typer.Exit(code=1) from exc
    with httpd:
        console.print(f"darkpool web: serving [bold]{httpd.url}[/] (database "
                      f"{httpd.settings.db_path}); Ctrl-C stops", highlight=False)
        if open_browser:
            webbrowser.open(httpd.url)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            console.print("stopped")
