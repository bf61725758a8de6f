"""`dispatch run`, `dispatch log`, `dispatch retry`, `dispatch sink`."""

from __future__ import annotations

import gc
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import typer

from dispatch import fields, ledger, logsafe, paging
from dispatch.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, app_context, console, err_console, fail, print_json
from dispatch.cli.web_cmds import BackgroundServer, build_server
from dispatch.coordination import SqliteRunLock
from dispatch.models import DeliveryStatus


def parse_instant(value: str, option: str) -> datetime:
    return fields.parse_instant(value, field=option)  # a FieldError is one line and exit 2


def setup_logging(settings) -> None:
    """One line (text or JSON: DISPATCH_LOG_FORMAT) per record on stderr,
    with every secret cut out (dispatch.logsafe)."""
    logsafe.configure(webhook_hosts=settings.slack_webhook_hosts, json_lines=settings.log_format.value == "json")


# Planning and sending make hundreds of thousands of short-lived rows and
# tuples; at Python's default (a collection every 700 new objects) the cyclic
# collector took a third of planning 100,000 readers (bench/RESULTS.md).
# Collecting every 20,000 keeps that to a few per cent; the little cyclic
# garbage a pass makes waits a moment longer.
GC_FIRST_THRESHOLD = 20_000


def tune_garbage_collector() -> None:
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_FIRST_THRESHOLD, middle, oldest)


def make_runner(ctx: typer.Context, *, clock=None, role: str = "all"):
    from dispatch.scheduler import Runner, utcnow

    appctx = app_context(ctx)
    appctx.actor_kind, appctx.actor = "system", "dispatch"  # what the delivery loop changes, it changes itself
    try:
        return Runner(appctx.settings, appctx.engine, clock=clock or utcnow, role=role)
    except ValueError as exc:  # an adapter refused its settings
        fail(f"invalid settings: {exc}", code=EXIT_BAD_INPUT)


def start_servers(ctx: typer.Context, runner, *, web: bool, host: str, port: int,
                  health_port: int | None, metrics_port: int | None) -> list[BackgroundServer]:
    """The web app (--web; it has /healthz, /readyz and /metrics too) and the
    health and metrics server(s), in threads; one server where ports agree.
    /readyz checks the SMTP relay only where this process sends."""
    from dispatch.web.ops import create_ops_app

    mailer = runner.channels["email"] if runner.role != "planner" else None
    servers = []
    if web:
        servers.append(BackgroundServer(build_server(ctx, host, port, ready_mailer=mailer)).start())
    wanted: dict[int, set[str]] = {}
    for what, on in (("health", health_port), ("metrics", metrics_port)):
        if on and not (web and on == port):
            wanted.setdefault(on, set()).add(what)
    settings = app_context(ctx).settings
    for on, what in wanted.items():
        ops = create_ops_app(settings, runner.engine, mailer=mailer, health="health" in what,
                             metrics="metrics" in what)
        servers.append(BackgroundServer(build_server(ctx, host, on, app=ops)).start())
    return servers


class LedgerProgress:
    """A pass's progress as the ledger tells it, for the bar: each sender
    process hears only its own outcomes, and the helpers send while the
    parent still plans. Done: the outcomes recorded since the pass began
    (an attempt row each); the whole: those when planning ended and what was
    then still due or being sent. Looked up twice a second by a thread of
    its own (counts on indexes)."""

    def __init__(self, done, unfinished, show, *, every: float = 0.5):
        self._done, self._unfinished, self._show, self._every = done, unfinished, show, every
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.total = 0

    def planned(self) -> None:
        done = self._done()
        self.total = done + self._unfinished()
        self._show(done, self.total)
        self._thread = threading.Thread(target=self._watch, name="progress", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stopping.wait(self._every):
            self._look()

    def _look(self) -> None:
        try:
            self._show(min(self._done(), self.total), self.total)
        except Exception:  # noqa: BLE001 — a bar is not worth a failed pass; the summary follows
            self._stopping.set()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._look()  # the last look, before the bar closes


def escape(text: str) -> str:
    """As rich.markup.escape: rich only when something is printed through it."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def print_summary(summary) -> None:
    from rich.table import Table

    counts = summary.by_status
    table = Table("outcome", "deliveries", title=f"planned {summary.planned} in {summary.plan_seconds:.1f} s, "
                                                  f"sent in {summary.send_seconds:.1f} s, reclaimed {summary.reclaimed}")
    for status in ("sent", "pending", "failed", "skipped", "released", "taken over", "held", "unrecorded"):
        if counts[status]:
            label = "retry later" if status == "pending" else status
            table.add_row(label, str(counts[status]))
    if not summary.by_status:
        table.add_row("nothing due", "0")
    console.print(table)
    if summary.senders_lost:
        console.print(f"{summary.senders_lost} sender process(es) died before reporting: their claims go back to "
                      "the queue when their lease runs out", highlight=False)
    for o in summary.problems:
        console.print(f"  #{o.delivery_id} {escape(o.address)} {o.status}: {escape(o.detail)}", highlight=False)


def run(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Plan and send everything due now, then exit."),
    now: str = typer.Option(None, "--now", metavar="ISO-8601",
                            help="With --once: act as if the clock read this instant (catch-up, tests)."),
    as_json: bool = typer.Option(False, "--json", help="With --once: print the summary as JSON."),
    role: str = typer.Option("all", "--role", metavar="all|planner|sender",
                             help="planner: only plan (one at a time holds the lock, others stand by); "
                                  "sender: only send. On PostgreSQL run as many as you like."),
    web: bool = typer.Option(False, "--web", help="Also serve the web pages and API in this process "
                                                  "(small installations; see `dispatch web`)."),
    host: str = typer.Option("127.0.0.1", "--host", help="With --web: address to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="With --web: port to listen on."),
    health_port: int = typer.Option(None, "--health-port", min=1, max=65535,
                                    help="Serve /healthz and /readyz on this port (on --host). With --web "
                                         "they are on the web port already."),
    metrics_port: int = typer.Option(None, "--metrics-port", min=1, max=65535,
                                     help="Serve Prometheus /metrics on this port (on --host; loopback clients "
                                          "only unless DISPATCH_METRICS_TOKEN is set)."),
    senders: int = typer.Option(None, "--senders", min=1, max=64, metavar="N",
                                help="Sender processes on this machine, this one included (default: "
                                     "DISPATCH_SENDERS, else one per core). The planner stays one. With --once, "
                                     "only as many as have a whole batch (DISPATCH_BATCH_SIZE) each to send."),
) -> None:
    """Deliver digests: plan due windows and send them, logging one line per delivery.

    Without --once it runs until stopped (Ctrl-C or SIGTERM finish the message in
    flight and release the rest). --once exits 1 if any delivery failed or its
    outcome could not be recorded (it is then held: see `dispatch status`).
    """
    setup_logging(app_context(ctx).settings)
    app_context(ctx).warn_at_start()
    tune_garbage_collector()
    if now and not once:
        fail("--now only goes with --once", code=EXIT_BAD_INPUT)
    if web and once:
        fail("--web runs until stopped; it does not go with --once", code=EXIT_BAD_INPUT)
    if (health_port or metrics_port) and once:
        fail("--health-port and --metrics-port serve while running; they do not go with --once",
             code=EXIT_BAD_INPUT)
    fixed = fields.parse_instant(now, field="--now", to_act_at=True) if now else None
    runner = make_runner(ctx, clock=(lambda: fixed) if fixed else None, role=role)
    if senders is None:
        from dispatch.sender_processes import default_count

        senders = app_context(ctx).settings.senders or default_count()
    single = SqliteRunLock(runner.engine)
    single.acquire()
    if not once:
        helpers = runner.fork_senders(senders - 1)  # before any thread starts here
        try:
            servers = start_servers(ctx, runner, web=web, host=host, port=port, health_port=health_port,
                                    metrics_port=metrics_port)
            try:
                runner.run_forever()
            finally:
                for server in servers:
                    server.stop()
        finally:
            helpers.stop()
            helpers.join()
            single.release()
        return
    try:
        if sys.stderr.isatty() and not as_json:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            with Progress(TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console.real, transient=True) as bar:
                task = bar.add_task("send", total=None)
                mark = runner.attempts_mark()
                progress = LedgerProgress(lambda: runner.attempts_since(mark), runner.unfinished_count,
                                          lambda done, total: bar.update(task, completed=done, total=total))
                try:
                    summary = runner.run_once(on_planned=progress.planned, senders=senders)
                finally:
                    progress.stop()
        else:
            summary = runner.run_once(senders=senders)
    finally:
        runner.close()
        single.release()
    if as_json:
        print_json(summary.as_dict())
    else:
        print_summary(summary)
    if summary.failed or summary.unrecorded or summary.senders_lost:
        raise typer.Exit(EXIT_FAILED)


def show_log(
    ctx: typer.Context,
    status: DeliveryStatus = typer.Option(None, "--status"),
    subscriber: str = typer.Option(None, "--subscriber", metavar="ID|ADDRESS"),
    since: str = typer.Option(None, "--since", metavar="ISO-8601", help="Deliveries planned since then."),
    limit: int = typer.Option(100, "--limit", min=1, max=1000, help="Rows to show (one page)."),
    after: str = typer.Option(None, "--after", metavar="ID", help="Start after this id (the hint under a page)."),
    delivery: int = typer.Option(None, "--delivery", metavar="ID", min=1, max=fields.MAX_ID,
                                 help="Every attempt of one delivery."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The delivery log, newest first (or one delivery's attempts)."""
    from rich.table import Table

    from dispatch import subscribers as subs

    appctx = app_context(ctx)
    with appctx.session() as session:
        if delivery is not None:
            from dispatch.inbound import events

            rows = [{"at": a.at.isoformat(), "outcome": a.outcome, "detail": a.detail}
                    for a in ledger.attempts(session, delivery)]
            # What came back after acceptance (bounces, complaints), in time order with the attempts.
            rows += [{"at": e.received_at.isoformat(), "outcome": f"came back: {e.kind}",
                      "detail": " ".join(x for x in (e.status_code, e.diagnostic, f"(via {e.source}; {e.effect})")
                                         if x)} for e in events.for_delivery(session, delivery)]
            rows.sort(key=lambda r: r["at"])
            if as_json:
                print_json(rows)
                return
            table = Table("at", "outcome", "detail", title=f"delivery #{delivery}")
            for r in rows:
                table.add_row(r["at"][:19], r["outcome"], escape(r["detail"]))
            console.print(table)
            return
        subscriber_id = subs.get(session, subscriber).id if subscriber else None
        page = ledger.log_page(session, status=status, subscriber_id=subscriber_id,
                               since=parse_instant(since, "--since") if since else None, limit=limit,
                               after=paging.parse_cursor(after, field="--after"))
        entries = page.items
        rows = [{"id": e.delivery.id, "subscriber": e.address, "channel": e.kind, "window": e.delivery.window_key,
                 "sitreps": e.delivery.sitrep_ids, "status": e.delivery.status.value,
                 "attempts": e.delivery.attempts,
                 "sent_at": e.delivery.sent_at.isoformat() if e.delivery.sent_at else None,
                 "receipt": e.delivery.receipt, "error": e.delivery.last_error} for e in entries]
    if as_json:
        print_json(rows)
    elif not rows:
        console.print("no deliveries" + (" match" if status or subscriber or since or after else " yet"))
    else:
        table = Table("id", "subscriber", "channel", "window", "status", "tries", "receipt or error")
        for r in rows:
            table.add_row(str(r["id"]), escape(r["subscriber"]), r["channel"], r["window"], r["status"],
                          str(r["attempts"]), escape((r["receipt"] if r["status"] == "sent" else r["error"]) or ""))
        console.print(table)
    if page.next is not None:  # on stderr: --json output stays one array
        err_console.print(f"more: the same dispatch log with --after {page.next}", highlight=False)


def retry(
    ctx: typer.Context,
    delivery_id: int = typer.Argument(None, metavar="DELIVERY_ID", min=1, max=fields.MAX_ID),
    failed: bool = typer.Option(False, "--failed", help="Every failed delivery."),
) -> None:
    """Put a failed delivery (or all of them) back in the queue; a held one
    (its outcome could not be recorded) only by its id, once you have looked."""
    if (delivery_id is None) == (not failed):
        fail("give a DELIVERY_ID or --failed", code=EXIT_BAD_INPUT)
    with app_context(ctx).session() as session:
        ids = ledger.retry_failed(session, now=datetime.now(timezone.utc), delivery_id=delivery_id)
    if delivery_id is not None and not ids:
        fail(f"delivery {delivery_id} is not a failed or held delivery")
    console.print(f"requeued {len(ids)} deliver{'y' if len(ids) == 1 else 'ies'}; `dispatch run` sends them")


def sink(
    folder: Path = typer.Option(Path("sink"), "--folder", help="Where messages and posts are kept."),
    smtp_port: int = typer.Option(8025, "--smtp-port"),
    slack_port: int = typer.Option(8026, "--slack-port"),
    host: str = typer.Option("127.0.0.1", "--host"),
) -> None:
    """Run a local SMTP server and a local Slack API that keep what they receive,
    for trying dispatch on a machine with no mail relay and no Slack."""
    from dispatch.sink import SlackSink, SmtpSink

    smtp = SmtpSink(folder / "mail", host=host, port=smtp_port).start()
    slack = SlackSink(folder / "slack", host=host, port=slack_port).start()
    console.print(f"SMTP sink on {host}:{smtp.port} → {folder / 'mail'}\n"
                  f"Slack sink on {slack.base_url} → {folder / 'slack'}\n\nPoint dispatch at them with:\n"
                  f"  export DISPATCH_SMTP_HOST={host} DISPATCH_SMTP_PORT={smtp.port}\n"
                  f"  export DISPATCH_SLACK_BASE_URL={slack.base_url} DISPATCH_SLACK_BOT_TOKEN=xoxb-local\n\n"
                  "Ctrl-C stops.", highlight=False)
    stop = threading.Event()
    try:
        while not stop.wait(3600):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        smtp.stop()
        slack.stop()


def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Who is running (planner leader, live senders), how the queue stands,
    and anything paused or held that needs a person."""
    from rich.table import Table
    from sqlmodel import col, func, select

    from dispatch import coordination, pauses
    from dispatch.models import Delivery

    appctx = app_context(ctx)
    now = datetime.now(timezone.utc)
    workers = coordination.live_workers(appctx.engine, now=now)
    paused = pauses.load(appctx.engine)
    with appctx.session() as session:
        counts = ledger.counts(session)
        held, held_ids = ledger.held_ids(session)
        oldest = session.exec(select(func.min(Delivery.created_at))
                              .where(col(Delivery.status) == DeliveryStatus.pending)).one()
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=timezone.utc)
    leader = next((w for w in workers if w.leader), None)
    data = {
        "planner_leader": leader.name if leader else None,
        "workers": [{"id": w.id, "name": w.name, "role": w.role, "leader": w.leader,
                     "started_at": w.started_at.isoformat(),
                     "heartbeat_age_s": round((now - w.heartbeat_at).total_seconds(), 1)} for w in workers],
        "deliveries": {s.value: counts.get(s.value, 0) for s in DeliveryStatus},
        "oldest_pending_age_s": round((now - oldest).total_seconds(), 1) if oldest else None,
        "paused": [{"scope": p.scope, "reason": p.reason, "since": p.since.isoformat(),
                    "next_try": p.until.isoformat(), "message": p.describe()} for p in paused],
        "held": {"count": held, "ids": held_ids},
    }
    if as_json:
        print_json(data)
        return
    console.print(f"[bold]planner[/]: {data['planner_leader'] or 'no live planner'}", highlight=False)
    table = Table("worker", "name", "role", "leader", "last heartbeat")
    for w in data["workers"]:
        table.add_row(str(w["id"]), w["name"], w["role"], "yes" if w["leader"] else "",
                      f"{w['heartbeat_age_s']} s ago")
    console.print(table if workers else "no live `dispatch run` process")
    console.print("deliveries: " + ", ".join(f"{k} {v}" for k, v in data["deliveries"].items()), highlight=False)
    if data["oldest_pending_age_s"] is not None:
        console.print(f"oldest pending: {timedelta(seconds=int(data['oldest_pending_age_s']))} old", highlight=False)
    for p in paused:
        console.print(f"[bold yellow]paused[/]: {escape(p.describe())}", highlight=False)
    if held:
        shown = ", ".join(f"#{i}" for i in held_ids) + (" …" if held > len(held_ids) else "")
        console.print(f"[bold red]held[/]: {held} deliver{'y' if held == 1 else 'ies'} ({shown}) whose outcome "
                      "could not be recorded: not sent again automatically. Check `dispatch log --delivery ID`; "
                      "`dispatch retry ID` sends one again.", highlight=False)
