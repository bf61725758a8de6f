"""Prometheus metrics: the counters and histograms the sending code moves,
and a collector that reads the queue from the database at scrape time.

The counters count what this process did (sends per channel and outcome,
lease reclaims, bounces, Slack 429s); the database collector reports what is
true for the whole installation (deliveries by status and channel, the due
queue and the age of its oldest row, a live planner), so any one process —
the web server or a `dispatch run` — can be scraped for it. Process metrics
(CPU, memory, open files) come with prometheus-client.

With PROMETHEUS_MULTIPROC_DIR set (a web server run with several worker
processes), each process writes its values to files there and a scrape
adds them up (prometheus-client's multiprocess mode); the directory must be
emptied before the workers start.

The code that sends calls the small functions here; decisions (digests,
windows, backoff) never do.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from functools import lru_cache

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST

SENDS = Counter("dispatch_sends", "Deliveries finished by this process, by channel and outcome "
                "(sent, pending = retry later, failed, skipped, released, held, taken over).",
                ["kind", "channel", "outcome"])
SEND_SECONDS = Histogram("dispatch_send_seconds", "Time to hand one message to its channel (over SMTP with PIPELINING: writing it, and reading the previous message's answer; its own answer comes with the next message's replies).",
                         ["channel"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
RECLAIMS = Counter("dispatch_lease_reclaims", "Claimed deliveries whose lease ran out and that went back "
                   "to the queue (a sender died or stalled).")
BOUNCES = Counter("dispatch_bounces", "Hard bounces recorded (a permanent refusal of the address).")
COMPLAINTS = Counter("dispatch_complaints", "Spam complaints recorded.")
SLACK_RATE_LIMITED = Counter("dispatch_slack_rate_limited", "Slack answers with HTTP 429.")
PLANNED = Counter("dispatch_planned_deliveries", "Deliveries planned into the ledger by this process.")
LAST_PLAN = Gauge("dispatch_planner_last_run_timestamp_seconds",
                  "When this process last finished a planning run (Unix time).", multiprocess_mode="max")
EVENTS = Counter("dispatch_event_webhook_posts", "Event webhook POSTs by outcome.", ["outcome"])
SMTP_IN_USE = Gauge("dispatch_smtp_connections_in_use", "SMTP connections a send holds now.",
                    multiprocess_mode="livesum")


# A labelled child is looked up once: labels() checks and sorts its
# arguments on every call, and these run once or twice a message.
@lru_cache(maxsize=256)
def _sends(kind: str, channel: str, outcome: str):
    return SENDS.labels(kind=kind, channel=channel, outcome=outcome)


@lru_cache(maxsize=16)
def _send_seconds(channel: str):
    return SEND_SECONDS.labels(channel=channel)


def sent(outcome, *, kind: str = "digest") -> None:
    _sends(kind, outcome.channel, outcome.status).inc()


def send_timer(channel: str):
    return _send_seconds(channel).time()


def planned(deliveries: int, reclaimed: int) -> None:
    PLANNED.inc(deliveries)
    RECLAIMS.inc(reclaimed)
    LAST_PLAN.set(time.time())


def watch_smtp(adapter) -> None:
    """Report this adapter's connections in use (not in multiprocess mode,
    where a callback cannot be shared: the web workers send no digests)."""
    if not multiprocess():
        SMTP_IN_USE.set_function(lambda: adapter.connections_in_use)


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class QueueCollector(Collector):
    """Read at scrape time from the database: what every process shares."""

    def __init__(self, engine, *, clock=lambda: datetime.now(timezone.utc)):
        self.engine = engine
        self.clock = clock

    def describe(self):
        return []  # nothing read at registration: the database may not answer yet

    def collect(self):
        from dispatch import coordination, db, ledger  # the database layer, only when scraped

        now = self.clock()
        up = GaugeMetricFamily("dispatch_database_up", "1 when the last scrape could read the database.")
        try:
            with db.read_scope(self.engine) as session:
                stats = ledger.queue_stats(session, now=now)
            workers = coordination.live_workers(self.engine, now=now)
        except Exception:  # a scrape must answer even when the database does not
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        deliveries = GaugeMetricFamily("dispatch_deliveries", "Deliveries in the ledger by status and channel.",
                                       labels=["status", "channel"])
        for (status, channel), count in sorted(stats.by_status_channel.items()):
            deliveries.add_metric([status, channel], count)
        yield deliveries
        due = GaugeMetricFamily("dispatch_queue_due", "Pending deliveries whose time has come (digests and "
                                "notices), not yet claimed.")
        due.add_metric([], stats.due)
        yield due
        age = GaugeMetricFamily("dispatch_queue_oldest_due_age_seconds",
                                "How long the oldest due delivery has been due; 0 when none is.")
        age.add_metric([], stats.oldest_due_age_seconds)
        yield age
        planner = GaugeMetricFamily("dispatch_planner_live", "Live `dispatch run` processes holding the planner "
                                    "lock (should be 1).")
        planner.add_metric([], sum(1 for w in workers if w.leader))
        yield planner
        senders = GaugeMetricFamily("dispatch_workers_live", "Live `dispatch run` processes by role.",
                                    labels=["role"])
        for role in ("all", "planner", "sender"):
            senders.add_metric([role], sum(1 for w in workers if w.role == role))
        yield senders


def registry_for(engine) -> CollectorRegistry:
    """What /metrics shows: this process's metrics (or, in multiprocess
    mode, every worker's, added up) and the database's queue."""
    if multiprocess():
        from prometheus_client import multiprocess as mp

        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_ProcessMetrics())
    registry.register(QueueCollector(engine))
    return registry


class _ProcessMetrics(Collector):
    """The default registry's metrics (ours and the process collectors),
    seen through a registry of the caller's."""

    def collect(self):
        yield from REGISTRY.collect()


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
