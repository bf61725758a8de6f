"""The audit log: who changed what, captured where changes happen.

Each face says who is acting (``acting_as``: the CLI's ``--as``, the
signed-in user, the API token); anything else is the system itself (the
planner, senders, bounces). A flush hook then writes one append-only
``AuditEntry`` per new, changed or removed row of the audited tables, with
the changed fields before and after, so no route can change something
without leaving its line, and none has to remember to.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum

import sqlalchemy as sa
import sqlalchemy.orm
from sqlmodel import Session, col, select

from dispatch import paging
from dispatch.models import (
    AdminUser, ApiToken, AuditEntry, Commentary, EventWebhook, Region, Sitrep, SitrepRevision, StoredSetting,
    Subscriber, utcnow,
)

ACTOR_KINDS = ("user", "token", "cli", "system", "reader")


@dataclass(frozen=True)
class Actor:
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


SYSTEM = Actor("system", "dispatch")
_current: contextvars.ContextVar[Actor] = contextvars.ContextVar("dispatch_actor", default=SYSTEM)


def current_actor() -> Actor:
    return _current.get()


def set_actor(actor: Actor) -> None:
    """For the rest of this context (a CLI invocation, a web request's task)."""
    _current.set(actor)


@contextmanager
def acting_as(actor: Actor) -> Iterator[None]:
    token = _current.set(actor)
    try:
        yield
    finally:
        _current.reset(token)


# What is audited, and how a row names itself. Columns that only track
# machinery (cursors, counters, timestamps of use) would drown the changes a
# person makes; secrets are never copied, only said to have changed.
AUDITED = {
    Sitrep: "sitrep",
    Commentary: "commentary",
    Subscriber: "subscriber",
    AdminUser: "admin",
    ApiToken: "token",
    Region: "region",
    StoredSetting: "setting",
    EventWebhook: "webhook",  # where readers' addresses may be sent
    SitrepRevision: "revision",  # a correction or retraction; filed under its SITREP's target
}
IGNORED = {"planned_through", "next_due_at", "updated_at", "created_at", "last_login_at", "last_used_at",
           "immediate_planned_at", "address_key", "bounce_count", "fingerprint", "source_text"}
SECRET = {"password_hash", "session_nonce", "token_hash", "value", "secret"}
TEXT_ROOM = 2000  # a long text is kept in the log by its beginning


def _plain(value):
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, str) and len(value) > TEXT_ROOM:
        return value[:TEXT_ROOM] + "…"
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _related_key(obj) -> str:
    return str(getattr(obj, "slug", None) or getattr(obj, "id", None))


def _target(obj) -> str:
    if isinstance(obj, SitrepRevision):  # `dispatch audit --target sitrep:N` shows its corrections too
        return f"sitrep:{obj.sitrep_id}"
    kind = AUDITED[type(obj)]
    key = getattr(obj, "slug", None) if isinstance(obj, Region) else getattr(obj, "key", None) \
        if isinstance(obj, StoredSetting) else getattr(obj, "id", None)
    return f"{kind}:{key}"


def changed_fields(obj, *, new: bool = False) -> dict:
    """{field: [before, after]} of what this flush changes in ``obj``."""
    state = sa.inspect(obj)
    changes: dict = {}
    for attr in state.mapper.column_attrs:
        name = attr.key
        if name in IGNORED or name == "id":
            continue
        history = state.attrs[name].history
        if not history.has_changes():
            continue
        before = None if new or not history.deleted else history.deleted[0]
        after = history.added[0] if history.added else None
        if name in SECRET:
            changes[name] = ["(secret)", "(changed)"] if not new else [None, "(set)"]
        elif _plain(before) != _plain(after):
            changes[name] = [_plain(before), _plain(after)]
    for rel in state.mapper.relationships:
        if not rel.uselist or rel.key in ("changes", "commentary"):
            continue
        history = state.attrs[rel.key].history
        if history.added or history.deleted:
            kept = [_related_key(o) for o in history.unchanged]
            changes[rel.key] = [sorted(kept + [_related_key(o) for o in history.deleted]),
                                sorted(kept + [_related_key(o) for o in history.added])]
    return changes


def _action(obj, verb: str, changes: dict) -> str:
    if isinstance(obj, SitrepRevision):
        # sitrep.correction (made), sitrep.correction.approved, sitrep.retraction …
        kind = getattr(obj.kind, "value", obj.kind)
        if verb == "changed" and "approved_by" in changes:
            return f"sitrep.{kind}.approved"
        return f"sitrep.{kind}" + ("" if verb == "created" else f".{verb}")
    kind = AUDITED[type(obj)]
    if verb == "changed" and "status" in changes:
        return f"{kind}.{changes['status'][1]}"  # sitrep.approved, subscriber.bounced …
    if verb == "changed" and "role" in changes:
        return f"{kind}.role"
    return f"{kind}.{verb}"


@sa.event.listens_for(sa.orm.Session, "after_flush")
def _record(session: sa.orm.Session, _flush_context) -> None:
    actor = current_actor()
    rows = []
    for obj in session.new:
        if type(obj) in AUDITED:
            rows.append((obj, "created", changed_fields(obj, new=True)))
    for obj in session.dirty:
        if type(obj) in AUDITED and session.is_modified(obj, include_collections=True):
            changes = changed_fields(obj)
            if changes:
                rows.append((obj, "changed", changes))
    for obj in session.deleted:
        if type(obj) in AUDITED:
            rows.append((obj, "removed", {}))
    if rows:
        now = utcnow()
        session.connection().execute(sa.insert(AuditEntry.__table__), [
            {"at": now, "actor_kind": actor.kind, "actor": actor.name[:200], "action": _action(obj, verb, changes),
             "target": _target(obj)[:100], "changes": changes} for obj, verb, changes in rows])


def record_bulk(session: sa.orm.Session, *, action: str, target: str, changes: dict) -> None:
    """One entry for a bulk change the flush hook never sees (a CSV
    import's Core inserts): by whoever is acting, like any other entry."""
    actor = current_actor()
    session.connection().execute(sa.insert(AuditEntry.__table__), [
        {"at": utcnow(), "actor_kind": actor.kind, "actor": actor.name[:200], "action": action[:64],
         "target": target[:100], "changes": {k: _plain(v) for k, v in changes.items()}}])


# --- reading it ------------------------------------------------------------------

def _query(*, since: datetime | None, actor: str | None, target: str | None):
    query = select(AuditEntry)
    if since is not None:
        query = query.where(col(AuditEntry.at) >= since)
    if actor:
        query = query.where(AuditEntry.actor == actor.strip())
    if target:
        query = query.where(AuditEntry.target == target.strip())
    return query


def audit_page(session: Session, *, since: datetime | None = None, actor: str | None = None,
               target: str | None = None, limit: int = 100, after: int | None = None,
               before: int | None = None) -> paging.Page:
    """Newest first, a page at a time (keyset on id)."""
    return paging.fetch(_query(since=since, actor=actor, target=target), col(AuditEntry.id),
                        lambda q: session.exec(q).all(), row_id=lambda e: e.id, limit=limit, after=after,
                        before=before, descending=True)


def as_dict(entry: AuditEntry) -> dict:
    return {"id": entry.id, "at": entry.at.isoformat(), "actor_kind": entry.actor_kind, "actor": entry.actor,
            "action": entry.action, "target": entry.target, "changes": entry.changes}
