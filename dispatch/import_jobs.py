"""A CSV upload imported in the background: the admin's request stores the
file's bytes, starts a thread in the web process and returns at once; the
thread runs ``csv_import.import_csv`` and writes its progress and, at the
end, its report into ``ImportJob``. The progress page reads only that row,
so another web process (or a reload, or the admin's other tab) shows the
same thing. A small file is imported within the request instead.

If the web process stops mid-import, the job's row stays ``running`` with
an ``updated_at`` that no longer moves; the page says so after
``STALLED_AFTER`` (the batches already committed stay: importing the file
again reports them as already there).
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from dispatch import csv_import, db
from dispatch.desk import audit
from dispatch.errors import InputError
from dispatch.models import ImportJob, utcnow

log = logging.getLogger("dispatch.import_jobs")

INLINE_MAX_BYTES = 128 * 1024  # about 2,000 rows: done within a second, in the request
STALLED_AFTER = timedelta(minutes=2)  # no progress for this long: the process doing it is gone
CHECK_STEP = 256 * 1024  # progress written while checking every this many bytes read


def start(engine: Engine, data: bytes, *, started_by: str, limit: int,
          webhook_hosts: Collection[str] = (), private_networks: Collection[str] = (),
          file_name: str | None = None) -> int:
    """Record a job for ``data`` (the whole upload, at most ``limit`` bytes)
    and start importing it in a thread; returns the job's id. The thread
    acts as whoever started it (a new thread does not inherit the request's
    audit actor by itself)."""
    with db.session_scope(engine) as session:
        job = ImportJob(started_by=started_by[:200], total=len(data))
        session.add(job)
        session.flush()
        job_id = job.id
    thread = threading.Thread(target=run, name=f"import-job-{job_id}", daemon=True,
                              args=(engine, job_id, data),
                              kwargs={"limit": limit, "webhook_hosts": webhook_hosts,
                                      "private_networks": private_networks, "file_name": file_name,
                                      "actor": audit.current_actor()})
    thread.start()
    return job_id


def run(engine: Engine, job_id: int, data: bytes, *, limit: int, webhook_hosts: Collection[str] = (),
        private_networks: Collection[str] = (), file_name: str | None = None,
        actor: audit.Actor | None = None) -> None:
    """Import ``data`` for job ``job_id``, writing progress and the report."""
    try:
        with audit.acting_as(actor or audit.current_actor()):
            report = csv_import.import_csv(
                engine, _Progress(io.BytesIO(data), lambda read: _update(engine, job_id, done=read)),
                limit=limit, webhook_hosts=webhook_hosts, private_networks=private_networks, file_name=file_name,
                on_batch=lambda done, total: _update(engine, job_id, phase="adding", done=done, total=total))
    except InputError as exc:
        _update(engine, job_id, state="failed", error=str(exc))
    except Exception:  # the thread's last word: the page must not say "running" for ever
        log.exception("import job %s failed", job_id)
        _update(engine, job_id, state="failed", error="the import stopped on an internal error (see the log)")
    else:
        _update(engine, job_id, state="done", report=as_report(report))


def as_report(report: csv_import.CsvReport) -> dict:
    return {"added": len(report.added), "already_there": [list(x) for x in report.already_there],
            "rejected": [list(x) for x in report.rejected], "ignored_columns": list(report.ignored_columns)}


def get(engine: Engine, job_id: int) -> ImportJob | None:
    with db.read_scope(engine) as session:
        job = session.get(ImportJob, job_id)
        if job is not None:
            session.expunge(job)
        return job


def stalled(job: ImportJob, *, now: datetime | None = None) -> bool:
    return job.state == "running" and (now or utcnow()) - job.updated_at > STALLED_AFTER


def _update(engine: Engine, job_id: int, **values) -> None:
    with db.session_scope(engine) as session:
        job = session.get(ImportJob, job_id)
        for key, value in values.items():
            setattr(job, key, value)
        job.updated_at = utcnow()


class _Progress:
    """The upload's bytes, telling how many were read every CHECK_STEP."""

    def __init__(self, stream: io.BytesIO, report):
        self._stream, self._report, self._read, self._told = stream, report, 0, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self._read += len(chunk)
        if self._read - self._told >= CHECK_STEP:
            self._told = self._read
            self._report(self._read)
        return chunk
