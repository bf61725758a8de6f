"""`dispatch inbound`: read bounces, complaints and mailto unsubscribes."""

from __future__ import annotations

import sys
import threading

import typer

from dispatch import logsafe
from dispatch.cli.common import app_context, console, err_console

EX_TEMPFAIL = 75  # sysexits: a pipe transport (Postfix) retries later


def inbound(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(2525, "--port", min=0, max=65535, help="Port to listen on (0: any free port)."),
    lmtp: bool = typer.Option(False, "--lmtp", help="Speak LMTP (a Postfix lmtp transport) instead of SMTP."),
    max_connections: int = typer.Option(50, "--max-connections", min=1, max=10_000,
                                        help="Connections at once; one more is told 421 (try again later)."),
    stdin: bool = typer.Option(False, "--stdin", help="Read one message from standard input (a pipe transport)."),
    recipient: str = typer.Option(None, "--recipient", metavar="ADDRESS",
                                  help="With --stdin: the address the message came to (Postfix: ${original_recipient})."),
    sender: str = typer.Option(None, "--sender", metavar="ADDRESS",
                               help="With --stdin: the envelope sender (Postfix: ${sender}); empty for a bounce."),
) -> None:
    """Receive bounces, complaints and mailto unsubscribes (SMTP, LMTP or --stdin) and act on them."""
    from dispatch.inbound import receiver

    appctx = app_context(ctx)
    logsafe.configure(webhook_hosts=appctx.settings.slack_webhook_hosts)
    inbox = receiver.build_inbox(appctx.settings, appctx.engine)
    if stdin:
        if not recipient:
            err_console.print("error: --stdin needs --recipient", highlight=False)
            raise typer.Exit(2)
        reply = receiver.read_stdin(sys.stdin.buffer, inbox, recipient=recipient, null_sender=not sender)
        err_console.print(str(reply), highlight=False)
        raise typer.Exit(0 if reply.code < 400 else EX_TEMPFAIL if reply.code < 500 else 2)
    server = receiver.InboundServer(inbox, host=host, port=port, lmtp=lmtp,
                                    limits=receiver.Limits(connections=max_connections)).start()
    console.print(f"dispatch inbound ({'LMTP' if lmtp else 'SMTP'}) on {server.host}:{server.port}; Ctrl-C stops",
                  highlight=False)
    try:
        while not threading.Event().wait(3600):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
