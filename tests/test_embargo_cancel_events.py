"""Cancelling an embargoed release emits no event, by design: receivers
never heard of the approval (sitrep.approved waits for the release), so
there is nothing to take back, and no event may name a SITREP still under
embargo. The desk's own history records the cancellation."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone

from dispatch.events import catalogue

from .test_embargo import cli  # noqa: F401 - the fixture


def _events(tmp_path) -> list[tuple[str, dict]]:
    with sqlite3.connect(tmp_path / "embargo.db") as connection:
        rows = connection.execute("SELECT type, payload FROM event ORDER BY created_at")
        return [(kind, json.loads(payload)) for kind, payload in rows]


def test_a_cancelled_release_tells_receivers_nothing_and_a_later_approval_once(cli, tmp_path):  # noqa: F811
    sitrep_types = ",".join(t for t in catalogue.TYPES if t.startswith("sitrep."))
    assert cli("webhook", "add", "https://hooks.example.org/in", "--event", sitrep_types).exit_code == 0
    release = datetime.now(timezone.utc) + timedelta(days=2)
    assert cli("--as", "chief", "sitrep", "approve", "1", "--release-at", release.isoformat()).exit_code == 0
    assert cli("--as", "chief", "sitrep", "release", "1", "--cancel").exit_code == 0
    assert _events(tmp_path) == []  # neither the approval nor its cancellation reached a receiver
    shown = json.loads(cli("sitrep", "show", "1", "--json").stdout)
    assert shown["status"] == "draft"
    assert cli("--as", "chief", "sitrep", "approve", "1").exit_code == 0
    assert [(kind, e["data"]["sitrep_id"]) for kind, e in _events(tmp_path)] == [("sitrep.approved", 1)]
