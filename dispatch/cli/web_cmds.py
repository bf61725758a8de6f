"""`dispatch web`: serve the admin pages, the subscriber pages and the API."""

from __future__ import annotations

import logging
import threading

import typer

from dispatch import logsafe
from dispatch.cli.common import EXIT_BAD_INPUT, app_context, console, fail

MAX_CONNECTIONS = 500
HOST_HELP = "Address to listen on (0.0.0.0 for every interface; put a TLS proxy in front)."


def build_server(ctx: typer.Context, host: str, port: int, *, ready_mailer=None, app=None):
    """``app``: serve this one (dispatch run's health and metrics) instead of the web app."""
    import uvicorn

    from dispatch.web import create_app

    appctx = app_context(ctx)
    try:
        app = app or create_app(appctx.settings, appctx.engine, ready_mailer=ready_mailer)
    except ValueError as exc:  # the SMTP settings for confirmation emails
        fail(f"invalid settings: {exc}", code=EXIT_BAD_INPUT)
    # Forwarded headers are the app's business (DISPATCH_TRUSTED_PROXIES):
    # uvicorn's default would believe any loopback peer.
    # limit_concurrency: past this many open connections and tasks, new ones
    # get 503 at once rather than each holding memory while it trickles in.
    config = uvicorn.Config(app, host=host, port=port, proxy_headers=False, log_level="info",
                            limit_concurrency=MAX_CONNECTIONS)
    # Built, the Config has set up uvicorn's loggers: the access log would show
    # every signed reader link in full. Redact their lines as the CLI's own.
    logsafe.install_on_uvicorn(webhook_hosts=appctx.settings.slack_webhook_hosts)
    return uvicorn.Server(config)


def web(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help=HOST_HELP),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
) -> None:
    """Serve the web pages: /admin for admins, /subscribe and the signed
    subscriber links, and the JSON API under /api (docs at /api/docs).

    Set DISPATCH_PUBLIC_URL to the address readers reach it at: links in
    emails point there, and https there makes the session cookie Secure.
    """
    settings = app_context(ctx).settings
    logsafe.configure(webhook_hosts=settings.slack_webhook_hosts,  # dispatch's own loggers
                      json_lines=settings.log_format.value == "json")
    app_context(ctx).warn_at_start()
    server = build_server(ctx, host, port)
    banner = f"serving on http://{host}:{port}/ (admin: /admin, API docs: /api/docs)"
    if settings.log_format.value == "json":  # every line of output one JSON object
        logging.getLogger("dispatch.web").info(banner)
    else:
        console.print(banner, highlight=False)
    server.run()


class BackgroundServer:
    """The web server in a thread of its own, beside `dispatch run`."""

    def __init__(self, server):
        self.server = server
        self.thread = threading.Thread(target=server.run, name="web", daemon=True)

    def start(self) -> BackgroundServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
