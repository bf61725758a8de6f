"""Running dispatch: one pass (`run --once`) or for ever (`run`).

APScheduler 3 only drives two loops — plan and send — with coalescing and
no overlapping runs; every piece of schedule state lives in our tables, so
there is no job store to share or to lose. Sending uses a pool of threads,
each claiming batches from the ledger (no bigger than fits in a lease, see
dispatch/leases.py) while a LeaseKeeper renews what they hold. A thread
that finds nothing waits and looks again while any other thread is still
sending or a planning run is under way; the pool ends only when every
thread is idle and nothing is due, so work planned a moment after a tick
began is shared by all threads.

A FLASH does not wait for the next planning run: the planner fans released
FLASHes out every send interval (its own job, and, in a process that also
sends, at the start of every send tick), so one approved from the web goes
out within a send interval of its approval (or of its release).

Shutdown (SIGINT/SIGTERM): no new batch is claimed, the message being sent
finishes, and the rest of a claimed batch is released back to the queue,
so nothing is left half-recorded. A process killed outright leaves its
claimed rows leased; they return to the queue when the lease runs out.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy.engine import Engine
from sqlalchemy import and_, or_
from sqlmodel import col, func, select

from dispatch import (bootstrap, coordination, db, leases, ledger, metrics, notices, planner, revision_notices,
                      sender_processes)
from dispatch.adapters.slack import SlackAdapter
from dispatch.adapters.smtp import SmtpAdapter
from dispatch.compose import Composer
from dispatch.events import sender as event_sender
from dispatch.config import Settings
from dispatch.models import Delivery, DeliveryAttempt, DeliveryStatus
from dispatch.retry import RetryPolicy
from dispatch.sender import Outcome, Sender

log = logging.getLogger("dispatch.run")
SEND_INTERVAL_SECONDS = 2.0
IDLE_RECHECK_SECONDS = 0.5  # an idle sender thread looks again this often while others work
PLANNING_RECHECK_SECONDS = 0.02  # ... and this often while its pass's planner, in another process, writes batches


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def smtp_adapter(settings: Settings, *, installation: str) -> SmtpAdapter:
    """``installation``: bootstrap.installation_id of the database, the random part of every Message-ID."""
    return SmtpAdapter(
        host=settings.smtp_host, port=settings.smtp_port, security=settings.smtp_security,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        timeout=settings.smtp_timeout, ca_file=settings.smtp_ca_file, mail_from=settings.mail_from,
        reply_to=settings.reply_to, list_id=settings.list_id, unsubscribe_mailto=settings.unsubscribe_mailto,
        pool_size=settings.smtp_pool_size, rate_limit=settings.smtp_rate_limit,
        allow_plaintext_auth=settings.smtp_allow_plaintext_auth, installation=installation)


def build_channels(settings: Settings, *, installation: str) -> dict:
    return {
        "email": smtp_adapter(settings, installation=installation),
        "slack": SlackAdapter(
            token=settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None,
            base_url=str(settings.slack_base_url), min_interval=settings.slack_min_interval,
            webhook_hosts=settings.slack_webhook_hosts, private_networks=settings.outbound_private_networks),
    }


@dataclass
class RunSummary:
    """Counts for every outcome, and the outcomes worth a look (not sent).
    Sent deliveries are only counted, so memory does not grow with the list."""

    planned: int = 0
    reclaimed: int = 0
    by_status: Counter = field(default_factory=Counter)
    problems: list[Outcome] = field(default_factory=list)
    plan_seconds: float = 0.0
    send_seconds: float = 0.0
    senders: int = 1  # processes that sent in this pass
    senders_lost: int = 0  # sender processes that died before they reported

    def add(self, outcome: Outcome) -> None:
        self.by_status[outcome.status] += 1
        if outcome.status in ("failed", "pending", "held", "unrecorded"):
            self.problems.append(outcome)

    def merge(self, other: RunSummary) -> None:
        """What another sender process of the same pass sent."""
        self.by_status.update(other.by_status)
        self.problems += other.problems

    def as_dict(self) -> dict:
        return {"planned": self.planned, "reclaimed": self.reclaimed, "outcomes": dict(self.by_status),
                "plan_seconds": round(self.plan_seconds, 3), "send_seconds": round(self.send_seconds, 3),
                "senders": self.senders, "senders_lost": self.senders_lost}

    @property
    def failed(self) -> int:
        return self.by_status["failed"]

    @property
    def unrecorded(self) -> int:
        """Outcomes that could not be written (held, or worse): a person should look."""
        return self.by_status["held"] + self.by_status["unrecorded"]


ROLES = ("all", "planner", "sender")


class Runner:
    def __init__(self, settings: Settings, engine: Engine, *, clock: Callable[[], datetime] = utcnow,
                 channels: dict | None = None, role: str = "all", composer: Composer | None = None):
        """``composer``: renderers already built (a forked helper's are its parent's:
        its templates compiled there, before the fork)."""
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
        self.settings = settings
        self.engine = engine
        self.clock = clock
        self.role = role
        self.stop = threading.Event()
        self.lock = coordination.PlannerLock(engine)
        self.worker_id: int | None = None
        self.channels = channels or build_channels(settings, installation=bootstrap.installation_id(engine))
        self.composer = composer = composer or Composer(settings, engine)
        # Confirmations and reminders that a web process planned: sent here too,
        # so none waits for a web process to come back.
        self.notices = notices.NoticeSender(
            engine, environment=composer.email_renderer.env, brand=settings.brand, public_url=composer.public_url,
            secret=composer.secret, mailer=self.channels["email"],
            policy=RetryPolicy(max_attempts=settings.max_attempts), clock=clock,
            postal_address=settings.postal_address, bounce_address=settings.bounce_address,
            lease=timedelta(seconds=settings.lease_seconds))
        self.sender = Sender(engine, composer=composer, channels=self.channels,
                             policy=RetryPolicy(max_attempts=settings.max_attempts),
                             bounce_limit=settings.bounce_limit, clock=clock, stop=self.stop)
        # Corrections and retractions to earlier readers: their own claim, after the digests of a pass.
        self.revisions = revision_notices.RevisionNoticeSender(
            engine, composer=composer, channels=self.channels, policy=RetryPolicy(max_attempts=settings.max_attempts),
            clock=clock, brand=settings.brand, postal_address=settings.postal_address,
            lease=timedelta(seconds=settings.lease_seconds))
        # Event webhooks: their own claim and thread, so a slow endpoint never holds up an email.
        # Events are planned at the wall clock's time, whatever clock this run acts at (--now).
        self.events = event_sender.EventSender(engine, policy=RetryPolicy(max_attempts=settings.max_attempts),
                                               private_networks=settings.outbound_private_networks)
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.pace = leases.SendPace()
        self.planning = threading.Event()  # set while a planning run is under way
        # In a helper forked by a single pass: set while the parent plans (see run_once).
        self.planned_elsewhere: sender_processes.PlanningFlag | None = None
        self._flashing = threading.Lock()  # one FLASH fan-out at a time (the plan job's or the flash job's)
        self._leading = threading.Lock()  # the planner lock's connection serves one thread at a time
        self._work = threading.Condition()  # idle sender threads wait on it
        if isinstance(self.channels.get("email"), SmtpAdapter):
            metrics.watch_smtp(self.channels["email"])

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
        self.lock.release()
        if self.worker_id is not None:
            coordination.deregister(self.engine, self.worker_id)
            self.worker_id = None

    def heartbeat(self) -> None:
        now = self.clock()
        if self.worker_id is None:
            self.worker_id = coordination.register(self.engine, role=self.role, now=now)
        coordination.heartbeat(self.engine, self.worker_id, now=now, leader=self.lock.held and self.role != "sender")

    # --- the two loops ----------------------------------------------------------

    def _leads(self) -> bool:
        """True when this process plans (not a sender; holds the planner lock)."""
        if self.role == "sender":
            return False
        with self._leading:
            return self.lock.ensure()

    def plan(self) -> tuple[int, int]:
        """Plan (and reclaim expired leases) if this process is the planner."""
        if not self._leads():
            return 0, 0  # a standby: another process holds the planner lock
        now = self.clock()
        self.planning.set()
        try:
            with db.session_scope(self.engine) as session:
                reclaimed = ledger.reclaim_expired(session, now=now)
            coordination.forget_dead(self.engine, now=now)
            # FLASHes first, and wholly: the digests planned next leave out what went out in one.
            with self._flashing:
                flashed = planner.plan_flash(self.engine, now=now).deliveries_planned
            report = planner.plan_due(self.engine, now=now, flash=False)
            report.deliveries_planned += flashed
        finally:
            self.planning.clear()
            with self._work:  # idle sender threads: there may be work now
                self._work.notify_all()
        metrics.planned(report.deliveries_planned, reclaimed)
        if report.deliveries_planned or reclaimed:
            log.info("planned %s deliveries (%s subscribers checked); reclaimed %s",
                     report.deliveries_planned, report.subscribers_checked, reclaimed)
        return report.deliveries_planned, reclaimed

    def plan_flash(self) -> int:
        """Fan out the FLASHes released since the last look, between
        planning runs, and wake idle sender threads. Cheap when there are
        none (one indexed query); skipped while another fan-out runs."""
        if not self._leads() or not self._flashing.acquire(blocking=False):
            return 0
        try:
            report = planner.plan_flash(self.engine, now=self.clock())
        finally:
            self._flashing.release()
        if report.deliveries_planned:
            metrics.PLANNED.inc(report.deliveries_planned)
            with self._work:
                self._work.notify_all()
            log.info("planned %s FLASH deliveries (%s subscribers checked)", report.deliveries_planned,
                     report.subscribers_checked)
        return report.deliveries_planned

    def send_tick(self) -> None:
        """One send job: FLASHes fanned out first (when this process also
        plans), so one approved meanwhile goes out in this very tick."""
        if self.role == "all":
            self.plan_flash()
        self.drain()

    def attempts_mark(self) -> int:
        """The newest attempt row's id: attempts after it are this pass's (``attempts_since``)."""
        with db.read_scope(self.engine) as session:
            return session.exec(select(func.max(DeliveryAttempt.id))).one() or 0

    def attempts_since(self, mark: int) -> int:
        """Outcomes recorded after ``mark``, by this process or another (one attempt row each)."""
        with db.read_scope(self.engine) as session:
            return session.exec(select(func.count()).select_from(DeliveryAttempt).where(
                col(DeliveryAttempt.id) > mark)).one()

    def unfinished_count(self) -> int:
        """Deliveries due or being sent, by this process or another: what a pass has still to do."""
        with db.read_scope(self.engine) as session:
            return session.exec(select(func.count()).select_from(Delivery).where(or_(
                Delivery.status == DeliveryStatus.sending,
                and_(Delivery.status == DeliveryStatus.pending, col(Delivery.next_attempt_at) <= self.clock())))).one()

    def drain(self, on_outcome: Callable[[Outcome], None] | None = None, *, collect: bool = True) -> list[Outcome]:
        """Send everything due, with the configured number of sender threads.
        Returns the outcomes when ``collect`` (small runs, tests)."""
        outcomes: list[Outcome] = []
        lock = threading.Lock()
        threads = self.settings.sender_threads
        looking = {"threads": threads, "done": False}  # threads not waiting idle; all finished

        def idle_wait() -> bool:
            """Found nothing: wait while others still work or planning runs.
            False when this thread is done."""
            with self._work:
                looking["threads"] -= 1
                # A forked helper of a pass whose parent still plans: more is coming, and soon.
                elsewhere = self.planned_elsewhere is not None and self.planned_elsewhere.is_set()
                if looking["done"] or (looking["threads"] == 0 and not self.planning.is_set() and not elsewhere):
                    looking["done"] = True  # every thread idle and nothing due: the pool ends
                    self._work.notify_all()
                    return False
                self._work.wait(PLANNING_RECHECK_SECONDS if elsewhere else IDLE_RECHECK_SECONDS)
                if looking["done"]:
                    return False
                looking["threads"] += 1
                return True

        def worker(keeper: leases.LeaseKeeper) -> None:
            counted = True  # among the looking threads
            found_nothing = False
            try:
                while not self.stop.is_set():
                    if found_nothing:  # looking again: first without the write lock, which the planner wants
                        with db.read_scope(self.engine) as session:
                            found_nothing = not ledger.any_due(session, now=self.clock())
                    if not found_nothing:
                        limit = leases.claim_size(batch_size=self.settings.batch_size,
                                                  lease_seconds=self.lease.total_seconds(),
                                                  seconds_each=self.pace.seconds_each,
                                                  rate_limit=self.settings.smtp_rate_limit, threads=threads)
                        with db.session_scope(self.engine) as session:
                            claimed = ledger.claim(session, now=self.clock(), limit=limit, lease=self.lease,
                                                   worker_id=self.worker_id, share_tail=True)
                        found_nothing = not claimed
                    if found_nothing:
                        if not idle_wait():
                            counted = False
                            return
                        continue
                    started = time.monotonic()
                    batch = self.sender.process(claimed, keeper=keeper)
                    self.pace.observe(time.monotonic() - started, len(claimed))
                    with lock:
                        for outcome in batch:
                            metrics.sent(outcome)
                            if collect:
                                outcomes.append(outcome)
                            if on_outcome:
                                on_outcome(outcome)
            finally:
                with self._work:  # a thread that stops or fails must not keep the others waiting for it
                    looking["threads"] -= counted
                    self._work.notify_all()

        with leases.LeaseKeeper(self.engine, lease=self.lease, clock=self.clock) as keeper, \
                ThreadPoolExecutor(threads, thread_name_prefix="sender") as pool:
            for future in [pool.submit(worker, keeper) for _ in range(threads)]:
                future.result()
        return outcomes

    def send_notices(self) -> int:
        return self.notices.drain(stop=self.stop)

    def send_revisions(self) -> int:
        return self.revisions.drain(stop=self.stop)

    def send_events(self) -> int:
        return self.events.drain(stop=self.stop)

    # --- the two ways to run ------------------------------------------------------

    # --- more sender processes (dispatch/sender_processes.py) ------------------------

    def _forked(self, planning: sender_processes.PlanningFlag | None = None) -> None:
        """First thing in a forked helper: the parent's pooled connections are not ours."""
        self.engine.dispose(close=False)
        if planning is not None:
            planning.forked()

    def _helper(self) -> Runner:
        return Runner(self.settings, self.engine, clock=self.clock, role="sender", composer=self.composer)

    def _helper_pass(self, planning: sender_processes.PlanningFlag | None = None) -> RunSummary:
        helper = self._helper()
        helper.planned_elsewhere = planning
        try:
            return helper.run_once()
        finally:
            helper.close()

    def _helper_forever(self) -> None:
        self._helper().run_forever()

    def fork_senders(self, count: int) -> sender_processes.Helpers:
        """For run_forever: ``count`` more sender processes, forked before
        this process starts any thread; stop and join them after it stops."""
        if self.role == "planner" or count <= 0:
            return sender_processes.Helpers()
        return sender_processes.fork_forever(count, self._helper_forever, before=self._forked)

    # --- the two ways to run ------------------------------------------------------

    def run_once(self, on_outcome: Callable[[Outcome], None] | None = None,
                 on_planned: Callable[[], None] | None = None, *, senders: int = 1) -> RunSummary:
        """One pass: plan, then send everything due, with up to ``senders``
        processes (this one and forked helpers, each given at least a
        whole claim's worth of work). The helpers are forked first and send
        while this process plans, each batch as soon as it is written."""
        self.heartbeat()
        started = time.perf_counter()
        helpers, planning = sender_processes.Helpers(), None
        if self.role != "planner" and senders > 1:
            with db.read_scope(self.engine) as session:
                expected = planner.due_estimate(session, now=self.clock())
            forks = sender_processes.helpers_for(senders=senders, due=expected, batch_size=self.settings.batch_size)
            if forks:
                planning = sender_processes.PlanningFlag()
                try:
                    helpers = sender_processes.fork_once(forks, functools.partial(self._helper_pass, planning),
                                                         before=functools.partial(self._forked, planning))
                except BaseException:
                    planning.finished()  # helpers forked before the failure finish what is due, then end
                    raise
        summary = RunSummary()

        def count(outcome: Outcome) -> None:
            summary.add(outcome)
            if on_outcome:
                on_outcome(outcome)

        planned_at = started
        try:
            try:
                summary.planned, summary.reclaimed = self.plan()
            finally:
                if planning is not None:
                    planning.finished()  # the helpers finish once nothing is left
            planned_at = time.perf_counter()
            summary.plan_seconds = planned_at - started
            if on_planned:  # planning has ended (a progress bar takes its total now)
                on_planned()
            if self.role != "planner":
                self.drain(count, collect=False)
                self.send_notices()
                self.send_revisions()
                self.send_events()  # after every email of the pass
        finally:
            for pid, code, theirs in helpers.join():
                if isinstance(theirs, RunSummary) and code == 0:
                    summary.merge(theirs)
                    summary.senders += 1
                else:
                    summary.senders_lost += 1
                    log.error("sender process %s ended (exit code %s) before reporting; its claims go back to "
                              "the queue when their lease runs out", pid, code)
        summary.send_seconds = time.perf_counter() - planned_at
        return summary

    def run_forever(self, *, install_signal_handlers: bool = True) -> None:
        if install_signal_handlers:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda signum, frame: self.request_stop(signal.Signals(signum).name))
        start = datetime.now(timezone.utc)
        self.heartbeat()
        from apscheduler.schedulers.background import BackgroundScheduler  # only a long run needs it

        scheduler = BackgroundScheduler(timezone=timezone.utc, job_defaults={"coalesce": True, "max_instances": 1})
        scheduler.add_job(self._guarded(self.heartbeat), "interval",
                          seconds=coordination.HEARTBEAT_EVERY.total_seconds(), id="heartbeat")
        if self.role in ("all", "planner"):
            scheduler.add_job(self._guarded(self.plan), "interval", seconds=self.settings.plan_interval,
                              id="plan", next_run_time=start)
            # Also while a long send job runs: its threads claim what this plans.
            scheduler.add_job(self._guarded(self.plan_flash), "interval", seconds=SEND_INTERVAL_SECONDS,
                              id="flash", next_run_time=start)
        if self.role in ("all", "sender"):
            scheduler.add_job(self._guarded(self.send_tick), "interval", seconds=SEND_INTERVAL_SECONDS, id="send",
                              next_run_time=start)
            scheduler.add_job(self._guarded(self.send_notices), "interval", seconds=SEND_INTERVAL_SECONDS,
                              id="notices", next_run_time=start)
            scheduler.add_job(self._guarded(self.send_revisions), "interval", seconds=SEND_INTERVAL_SECONDS,
                              id="revisions", next_run_time=start)
        worker = event_sender.EventWorker(self.events).start() if self.role in ("all", "sender") else None
        scheduler.start()
        log.info("dispatch is running as %s (worker %s): planning every %ss, %s sender threads", self.role,
                 self.worker_id, self.settings.plan_interval, self.settings.sender_threads)
        try:
            self.stop.wait()
        finally:
            scheduler.shutdown(wait=True)  # lets a running send job release its batch
            if worker is not None:
                worker.stop()
            self.close()
            log.info("stopped cleanly")

    def request_stop(self, why: str = "stop requested") -> None:
        log.info("%s: finishing the message in flight and releasing the rest", why)
        self.stop.set()

    def _guarded(self, job: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            if self.stop.is_set():
                return
            try:
                job()
            except Exception:  # keep the scheduler alive; the next tick tries again
                log.exception("%s failed; will try again at the next tick", getattr(job, "__name__", "job"))
        return run
