"""Several sender processes on one machine (`dispatch run --senders N`).

One Python process sends at most what one core runs: the GIL serialises
rendering, building, the SMTP client and the ledger's records. So `dispatch
run` forks extra sender processes, each a `Runner` of role "sender" with
its own engine connections, SMTP pool and sender threads. The planner stays
one: only the first process plans. Nothing else is shared: claims are
exclusive in the ledger (SKIP LOCKED on PostgreSQL; on SQLite every claim is
a BEGIN IMMEDIATE transaction, which the file's write lock serialises), and
each process's LeaseKeeper renews its own claims. A sender process that dies
leaves its claims leased; when the lease runs out the planner puts them
back in the queue (``ledger.reclaim_expired``), as for any killed sender.

The helpers are forked after start-up, so they do not import anything
again, and before the parent starts any thread, so no lock is copied held.
In a single pass (`--once`) they are forked before the parent plans, and
send each batch of deliveries as soon as the planner has written it: until
the parent's planning ends (``PlanningFlag``), a helper that finds nothing
due looks again shortly instead of finishing.
On SQLite they share the parent's run lock (the inherited open file), so a
second `dispatch run` stays refused while any of them lives; on Linux each
asks for SIGTERM when its parent dies, so none outlives a killed parent.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import select
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("dispatch.run")
PR_SET_PDEATHSIG = 1


def default_count() -> int:
    """The number of cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def helpers_for(*, senders: int, due: int, batch_size: int) -> int:
    """How many processes to fork besides this one for a single pass: at
    most ``senders - 1``, and none that would not get a whole claim of work."""
    return max(0, min(senders - 1, due // max(1, batch_size) - 1))


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: a killed parent may leave helpers to finish their pass
        pass


class PlanningFlag:
    """Whether the parent of a single pass is still planning, as its forked
    helpers see it: a pipe whose only write end the parent holds, never
    writes to, and closes when its planning ends — or when it dies, so a
    helper cannot wait for a planner that is gone."""

    def __init__(self):
        self._read, self._write = os.pipe()

    def forked(self) -> None:
        """In a helper, first: its inherited copy of the write end would keep the pipe open."""
        os.close(self._write)
        self._write = None

    def finished(self) -> None:
        """In the parent, when its planning has ended (whether it succeeded or not)."""
        for fd in (self._write, self._read):
            if fd is not None:
                os.close(fd)
        self._write = self._read = None

    def is_set(self) -> bool:
        """In a helper: True while the parent still plans (the pipe shows no end yet)."""
        watch = select.poll()  # not select(): any descriptor number
        watch.register(self._read, select.POLLIN | select.POLLHUP)
        return not watch.poll(0)


@dataclass
class Helper:
    process: multiprocessing.Process
    results: object | None = None  # the reading end of its pipe (--once)


@dataclass
class Helpers:
    """The forked sender processes of this `dispatch run`."""

    started: list[Helper] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [h.process.pid for h in self.started]

    def stop(self) -> None:
        for h in self.started:
            if h.process.is_alive():
                os.kill(h.process.pid, signal.SIGTERM)

    def join(self) -> list[tuple[int, int | None, object]]:
        """Wait for every helper: (pid, exit code, what it sent back or None)."""
        ended = []
        for h in self.started:
            sent = None
            if h.results is not None:
                try:
                    sent = h.results.recv()
                except (EOFError, OSError):  # it died before it could answer
                    sent = None
            h.process.join()
            ended.append((h.process.pid, h.process.exitcode, sent))
        return ended


def _context():
    return multiprocessing.get_context("fork")


def fork_once(count: int, work: Callable[[], object], *, before: Callable[[], None]) -> Helpers:
    """Fork ``count`` helpers that each run ``work()`` once and send its
    result back. ``before`` runs first in each (drop inherited connections,
    a ``PlanningFlag``'s write end)."""
    helpers = Helpers()
    for _ in range(count):
        reader, writer = _context().Pipe(duplex=False)
        process = _context().Process(target=_run_once, args=(writer, work, before), name="dispatch-sender",
                                     daemon=False)
        process.start()
        writer.close()
        helpers.started.append(Helper(process, reader))
    if helpers.started:
        log.info("started %s more sender process(es): pid %s", count, ", ".join(map(str, helpers.pids)))
    return helpers


def _run_once(writer, work, before) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops them in order
    before()
    try:
        writer.send(work())
    finally:
        writer.close()


def fork_forever(count: int, work: Callable[[], None], *, before: Callable[[], None]) -> Helpers:
    """Fork ``count`` helpers that each run ``work()`` until SIGTERM."""
    helpers = Helpers()
    for _ in range(count):
        process = _context().Process(target=_run_forever, args=(work, before), name="dispatch-sender",
                                     daemon=False)
        process.start()
        helpers.started.append(Helper(process))
    if helpers.started:
        log.info("started %s more sender process(es): pid %s", count, ", ".join(map(str, helpers.pids)))
    return helpers


def _run_forever(work, before) -> None:
    _die_with_parent()
    before()
    work()
