"""The admin CSV upload in the background (issue 14): a big file becomes a
job whose page refreshes itself (meta refresh, no script) and ends with the
report as the in-request import gives it; the job's state is in the
database, so another app (another worker process) shows the same page."""

from __future__ import annotations

import re
import time

from dispatch import import_jobs
from dispatch.models import ImportJob

from .webtools import csrf_from, make_web


def _csv(rows: int) -> bytes:
    lines = ["email,name,tz"] + [f"job{i}@example.org,Job {i},UTC" for i in range(rows)]
    lines += ["not-an-address,Bad,UTC", "job1@example.org,Again,UTC", "late@example.org,Late,Mars/Base"]
    return ("\n".join(lines) + "\n").encode()


def test_a_big_upload_runs_in_the_background_with_a_refreshing_page(web, monkeypatch, database_url, mail_sink,
                                                                    tmp_path):
    monkeypatch.setattr(import_jobs, "INLINE_MAX_BYTES", 1000)
    monkeypatch.setattr(import_jobs, "CHECK_STEP", 500)
    web.sign_in()
    csrf = csrf_from(web.client.get("/admin/subscribers/import").text)
    started = web.client.post("/admin/subscribers/import", data={"csrf_token": csrf},
                              files={"file": ("list.csv", _csv(300), "text/csv")}, follow_redirects=False)
    assert started.status_code == 303
    job_page = started.headers["location"]
    assert re.fullmatch(r"/admin/subscribers/import/\d+", job_page)
    first = web.client.get(job_page).text
    assert "<script" not in first
    deadline = time.monotonic() + 60
    while True:
        text = web.client.get(job_page).text
        if 'http-equiv="refresh"' not in text:
            break
        assert "reloads itself" in text and "<progress" in text
        assert time.monotonic() < deadline, "the import did not finish"
        time.sleep(0.2)
    assert "300 added, 1 already there, 2 rejected" in text
    assert "not-an-address" in text and "Mars/Base" in text and "line 303" in text
    other = make_web(database_url, web.engine, mail_sink, tmp_path)  # another process's app, same database
    other.sign_in()
    assert "300 added, 1 already there, 2 rejected" in other.client.get(job_page).text
    assert other.client.get("/admin/subscribers/import/999999").status_code == 404


def test_a_small_upload_finishes_within_the_request(web):
    web.sign_in()
    csrf = csrf_from(web.client.get("/admin/subscribers/import").text)
    page = web.client.post("/admin/subscribers/import", data={"csrf_token": csrf},
                           files={"file": ("list.csv", _csv(3), "text/csv")})
    assert page.status_code == 200 and "3 added, 1 already there, 2 rejected" in page.text
    from sqlmodel import select
    from dispatch import db
    with db.read_scope(web.engine) as session:
        assert session.exec(select(ImportJob)).all() == []


def test_a_stalled_job_says_so(web):
    from datetime import timedelta
    from dispatch import db
    from dispatch.models import utcnow
    web.sign_in()
    with db.session_scope(web.engine) as session:
        job = ImportJob(started_by="admin", total=10, updated_at=utcnow() - timedelta(minutes=5))
        session.add(job)
        session.flush()
        job_id = job.id
    text = web.client.get(f"/admin/subscribers/import/{job_id}").text
    assert "stopped making progress" in text and 'http-equiv="refresh"' not in text
