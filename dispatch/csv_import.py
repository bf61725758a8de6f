"""Subscribers from CSV (the columns ``subscribers.export_csv`` writes).

Two passes, so that a big file never holds SQLite's one write lock for long:

1. read and check every row, holding no lock: the file is streamed with a
   size limit (never read whole first), each row's fields get the same
   checks as any other entry point, regions and analysts are resolved once
   per distinct list, and addresses already stored or repeated in the file
   are set aside. A file that cannot be read at all (too large, not UTF-8,
   no 'email' column) is refused here, before anything is written.
2. insert the good rows in batches of ``BATCH_ROWS``, each its own short
   transaction; a reader's request waits for at most one batch.

Bad rows are reported with their line numbers and reasons; the good ones go in.

Core inserts pass by the ORM's flush hooks, so the import does their work
itself: each batch writes its readers' ``subscriber.created`` events with
the rows (one statement, and none when no webhook wants them), and the
import as a whole leaves one audit entry (who, which file, the counts),
also when it stops part way.

A row is a reader or a Slack channel (``kind``, email when absent) and keeps
its ``status`` (active when absent): an export records who unsubscribed,
bounced or was disabled, and importing it must not make them active again.
An imported ``unsubscribed`` gets ``opted_out_at``, so that the opt-out holds
against every later admin edit as a reader's own does; ``pending`` stays
unconfirmed.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from dispatch import db, email_check, fields, subscribers, taxonomy
from dispatch.desk import audit
from dispatch.errors import InputError
from dispatch.events import emit
from dispatch.models import (
    Subscriber,
    SubscriberAnalyst,
    SubscriberChange,
    SubscriberKind,
    SubscriberNameWord,
    SubscriberRegion,
    SubscriberStatus,
    address_key,
    name_key,
    name_word_rows,
    utcnow,
)

log = logging.getLogger("dispatch.csv_import")
MAX_CSV_BYTES = 10 * 1024 * 1024  # an upload: about 100,000 rows
MAX_CLI_CSV_BYTES = 64 * 1024 * 1024  # a file on the admin's own machine
BATCH_ROWS = 500  # a few tens of milliseconds of SQLite's write lock each


@dataclass
class CsvReport:
    added: list[tuple[int, str]] = field(default_factory=list)  # (line, address)
    already_there: list[tuple[int, str]] = field(default_factory=list)  # (line, address)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    ignored_columns: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Row:
    """One checked row, kept small: a big file has tens of thousands. The
    columns most rows share are one dict shared by every row that has them."""
    line: int
    given: str  # the address as written in the file
    kind: SubscriberKind
    key: str  # models.address_key
    address: str
    name: str | None
    shared: dict  # column values checked once per distinct combination (never changed)
    region_slugs: tuple[str, ...]
    analyst_ids: tuple[int, ...]

    def values(self) -> dict:
        own = {"address": self.address, "address_key": self.key, "kind": self.kind}
        if self.name is not None:
            own.update(name=self.name, name_key=name_key(self.name))
        return self.shared | own


class _Bounded(io.RawIOBase):
    """A binary stream that refuses to give more than ``limit`` bytes:
    /dev/zero or a runaway upload stops here, not in a MemoryError."""

    def __init__(self, stream: BinaryIO, limit: int):
        self._stream, self._limit, self._read = stream, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self._stream.read(min(len(buffer), self._limit + 1 - self._read))
        self._read += len(chunk)
        if self._read > self._limit:
            raise InputError(f"the CSV is larger than {self._limit // (1024 * 1024)} MB; split it into parts")
        buffer[: len(chunk)] = chunk
        return len(chunk)


def _text_lines(source: BinaryIO | str, limit: int) -> io.TextIOBase:
    if isinstance(source, str):
        if len(source) > limit or len(source.encode("utf-8", "surrogatepass")) > limit:
            raise InputError(f"the CSV is larger than {limit // (1024 * 1024)} MB; split it into parts")
        return io.StringIO(source.removeprefix("\ufeff"), newline="")
    # newline="": the csv module reads line breaks inside quoted fields itself.
    return io.TextIOWrapper(io.BufferedReader(_Bounded(source, limit)), encoding="utf-8-sig", newline="")


def _records(source: BinaryIO | str, limit: int) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) for each record, the header first; unreadable input
    is an InputError naming the line."""
    # No field can be longer than the whole file, and the file is bounded;
    # the csv module's own limit (128 KiB, process-wide) would only turn an
    # over-long field into a traceback instead of a rejected row.
    csv.field_size_limit(max(csv.field_size_limit(), limit))
    reader = csv.reader(_text_lines(source, limit))
    try:
        for row in reader:
            yield reader.line_num, row
    except UnicodeDecodeError:
        raise InputError(f"line {reader.line_num + 1}: this is not UTF-8 text; save the CSV as UTF-8") from None
    except csv.Error as exc:
        raise InputError(f"line {reader.line_num}: cannot read the CSV: {exc}") from None


class _Checker:
    """Checks rows as ``subscribers.add_subscriber`` does — the address, then
    whether it is there already, then the preferences — with the catalogue
    looked up once per distinct list instead of once per row."""

    def __init__(self, session: Session, *, webhook_hosts: Collection[str] = (),
                 private_networks: Collection[str] = ()):
        self.session = session
        self.webhook_hosts = webhook_hosts
        self.private_networks = private_networks
        self._hosts: dict[str, str | None] = {}  # each webhook host's addresses checked once
        self._regions: dict[tuple[str, ...], list] = {}
        self._analysts: dict[tuple[str, ...], list] = {}
        self._checked: dict[tuple, tuple] = {}
        self._domains: dict[str, str | None] = {}  # email_check's cache: each domain checked once

    def regions(self, values: list[str]) -> list:
        key = tuple(values)
        if key not in self._regions:
            self._regions[key] = taxonomy.resolve_regions(self.session, values)
        return self._regions[key]

    def analysts(self, values: list[str]) -> list:
        key = tuple(values)
        if key not in self._analysts:
            self._analysts[key] = taxonomy.resolve_analysts(self.session, values)
        return self._analysts[key]

    def address(self, cells: dict[str, str]) -> tuple[SubscriberKind, str]:
        kind = subscribers._enum_value(SubscriberKind, cells.get("kind") or "email", "kind")
        given = cells.get("email", "")
        if kind == SubscriberKind.email:
            return kind, email_check.check(given, domains=self._domains)
        return kind, subscribers.check_address(kind, given, webhook_hosts=self.webhook_hosts,
                                               private_networks=self.private_networks, checked_hosts=self._hosts)

    def _shared(self, cells: dict[str, str]) -> tuple[dict, tuple[str, ...], tuple[int, ...]]:
        """The checked values of the columns that most rows share (schedule,
        format, status, regions, analysts), checked once per distinct set:
        a 100,000-row list has a few hundred. The values are immutable."""
        given = tuple(cells.get(column) or None for column in _SHARED_COLUMNS)
        if given not in self._checked:
            if len(self._checked) >= _MAX_CACHED:
                self._checked.clear()
            cadence, send_at, tz, weekday, fmt, region_text, analyst_text, status = given
            prefs = subscribers.Preferences(
                regions=_split(region_text), analysts=_split(analyst_text), cadence=cadence, send_at=send_at,
                timezone=tz, weekday=weekday, format=fmt)
            values = subscribers.preference_values(prefs, resolve_regions=self.regions,
                                                   resolve_analysts=self.analysts)
            values.update(_status_values(status))
            regions, analysts = values.pop("regions"), values.pop("analysts")
            self._checked[given] = (values, tuple(r.slug for r in regions), tuple(a.id for a in analysts))
        return self._checked[given]

    def preferences(self, line: int, cells: dict[str, str], kind: SubscriberKind, address: str) -> _Row:
        # The name first, as preference_values checks it: a row's reason stays the same.
        name = subscribers.check_name(cells["name"]) if cells.get("name") else None
        shared, region_slugs, analyst_ids = self._shared(cells)
        key = address_key(kind, address)
        # The shared columns were held to their rules when first seen; the row's own here.
        own = {"address": address, "address_key": key}
        if name is not None:
            own.update(name=name, name_key=name_key(name))
        fields.check_values(Subscriber, own, only=_OWN_COLUMNS)
        return _Row(line=line, given=cells.get("email", ""), kind=kind, key=key, address=address, name=name,
                    shared=shared, region_slugs=region_slugs, analyst_ids=analyst_ids)


_OWN_COLUMNS = ("address", "address_key", "name", "name_key")
# The columns checked once per distinct combination (_Checker._shared).
_SHARED_COLUMNS = ("cadence", "at", "tz", "weekday", "format", "regions", "analysts", "status")
_MAX_CACHED = 10_000  # distinct combinations kept; a hostile file cannot grow it without bound


def _status_values(given: str | None) -> dict:
    status = subscribers._enum_value(SubscriberStatus, given or "active", "status")
    values: dict = {"status": status}
    if status == SubscriberStatus.pending:
        values["confirmed_at"] = None  # still to confirm, as a sign-up waiting for its link
    elif status == SubscriberStatus.unsubscribed:
        values["opted_out_at"] = utcnow()  # the reader's own opt-out, as the publication recorded it
    return values


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(subscribers.LIST_SEPARATOR) if part.strip()]


def _stored_keys(session: Session, keys: list[tuple[SubscriberKind, str]]) -> set[tuple[SubscriberKind, str]]:
    """Which (kind, address_key) pairs are stored already."""
    return set(_stored_ids(session, keys))


def _stored_ids(session: Session, keys: list[tuple[SubscriberKind, str]]) -> dict[tuple[SubscriberKind, str], int]:
    """The ids of the stored (kind, address_key) pairs. By address_key alone,
    the kind checked here: then the only index that can answer is the unique
    (address_key, kind) one. With "kind = …" beside it, PostgreSQL — whose
    statistics still describe the table before the import — read every
    subscriber of the kind through the (kind, address) index instead, a
    batch slower with every batch (a 100,000-row import took 6 minutes)."""
    wanted = set(keys)
    table = Subscriber.__table__.c
    found: dict[tuple[SubscriberKind, str], int] = {}
    addresses = sorted({key for _, key in keys})
    for start in range(0, len(addresses), BATCH_ROWS):
        for id_, kind, key in session.execute(sa.select(table.id, table.kind, table.address_key).where(
                table.address_key.in_(addresses[start : start + BATCH_ROWS]))):
            if (kind, key) in wanted:
                found[kind, key] = id_
    return found


def _chunks(records: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def check_rows(engine: Engine, source: BinaryIO | str, *, limit: int = MAX_CSV_BYTES,
               webhook_hosts: Collection[str] = (), private_networks: Collection[str] = ()
               ) -> tuple[list[_Row], CsvReport]:
    """Pass 1: every row read and checked, nothing written and no write lock held."""
    report = CsvReport()
    good: list[_Row] = []
    seen: set[tuple[SubscriberKind, str]] = set()
    records = _records(source, limit)
    with db.read_scope(engine) as session:
        first = next(records, None)
        header = [h.strip().lower() for h in (first[1] if first else [])]
        if "email" not in header:
            raise InputError("the CSV needs a header row with an 'email' column; it has: "
                             f"{', '.join(header) or 'none'}")
        report.ignored_columns = [h for h in header if h and h not in subscribers.CSV_COLUMNS]
        checker = _Checker(session, webhook_hosts=webhook_hosts, private_networks=private_networks)
        for chunk in _chunks(records, BATCH_ROWS):
            addressed = []  # (line, cells, kind, address) of the rows whose address is good
            for line, cells in chunk:
                if not cells:
                    continue  # a blank line, skipped as csv.DictReader does
                # csv_value: an export's formula-guarding quote comes off again.
                named = {h: subscribers.csv_value(cells[i].strip() if i < len(cells) else "")
                         for i, h in enumerate(header) if h}
                try:
                    addressed.append((line, named, *checker.address(named)))
                except InputError as exc:
                    report.rejected.append((line, str(exc)))
            stored = _stored_keys(session, [(k, address_key(k, a)) for _, _, k, a in addressed])
            for line, named, kind, address in addressed:
                key = (kind, address_key(kind, address))
                if key in stored or key in seen:
                    report.already_there.append((line, named.get("email", "")))
                    continue
                try:
                    good.append(checker.preferences(line, named, kind, address))
                except InputError as exc:
                    report.rejected.append((line, str(exc)))
                    continue
                seen.add(key)
    report.rejected.sort()
    return good, report


def import_csv(engine: Engine, source: BinaryIO | str, *, limit: int = MAX_CSV_BYTES,
               batch_rows: int = BATCH_ROWS, on_batch: Callable[[int, int], None] | None = None,
               webhook_hosts: Collection[str] = (), private_networks: Collection[str] = (),
               file_name: str | None = None) -> CsvReport:
    """Add every good row of a CSV (a binary stream or text); report the
    others with their line numbers and reasons. ``on_batch(done, total)``
    is called after each committed batch. ``webhook_hosts``: the Slack
    webhook hosts accepted besides Slack's own (settings.slack_webhook_hosts);
    ``private_networks``: those a webhook may be on (settings.outbound_private_networks).
    ``file_name``: what the audit entry calls the file."""
    rows, report = check_rows(engine, source, limit=limit, webhook_hosts=webhook_hosts,
                              private_networks=private_networks)
    stopped: str | None = "stopped part way"
    analysed_at = 0
    try:
        for start in range(0, len(rows), batch_rows):
            batch = rows[start : start + batch_rows]
            added, there = _insert(engine, batch)
            report.added.extend(added)
            report.already_there.extend(there)
            if engine.dialect.name == "postgresql" and len(report.added) >= 2 * analysed_at + ANALYSE_AFTER_ROWS:
                _analyse(engine)
                analysed_at = len(report.added)
            if on_batch is not None:
                on_batch(min(start + batch_rows, len(rows)), len(rows))
        stopped = None
    finally:
        try:
            _audit(engine, report, file_name=file_name, stopped=stopped)
        except Exception:
            if stopped is None:
                raise
            log.exception("could not write the audit entry of an import that stopped part way")
    report.already_there.sort()
    return report


def _audit(engine: Engine, report: CsvReport, *, file_name: str | None, stopped: str | None) -> None:
    # A file name is anyone's text (an upload's, a path's undecodable bytes): made one storable line.
    name = fields.clip_line(file_name or "", 200) or "(no name)"
    changes = {"file": name, "added": len(report.added), "already_there": len(report.already_there),
               "rejected": len(report.rejected)}
    if stopped:
        changes["stopped"] = stopped
    with db.session_scope(engine) as session:
        audit.record_bulk(session, action="subscriber.imported", target=f"csv:{name}"[:100], changes=changes)


# PostgreSQL plans each batch's lookups by address from statistics of the
# table as it was before the import: for a list that starts (nearly) empty,
# a scan that reads every row for each of a batch's addresses, slower with
# every batch (a 100,000-row import took 6 minutes). ANALYZE each time the
# import has doubled what it added (about ten times for 100,000 rows, tens of
# milliseconds each) keeps the unique index the plan.
ANALYSE_AFTER_ROWS = 2000


def _analyse(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE subscriber")


def _defaults() -> dict:
    """The column values of a new admin-added subscriber that a row does not set."""
    made = Subscriber(kind=SubscriberKind.email, address="", status=SubscriberStatus.active)
    names = ("kind", "name", "name_key", "timezone", "send_at", "cadence", "weekday", "format", "status", "bounce_count")
    return {name: getattr(made, name) for name in names}


def _created(subscriber_id: int, values: dict, now) -> dict:
    status, reason = values["status"], values.get("status_reason")
    return {"subscriber_id": subscriber_id, "at": now, "from_status": None,
            "to_status": getattr(status, "value", status), "reason": (reason or None) and reason[:500]}


def _event_data(subscriber_id: int, values: dict) -> dict:
    """What events.emit's subscriber.created carries (``_subscriber_data``)."""
    return {"subscriber_id": subscriber_id, "kind": getattr(values["kind"], "value", values["kind"]),
            "address": values["address"], "status": getattr(values["status"], "value", values["status"])}


def _insert(engine: Engine, batch: list[_Row]) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """Pass 2: one batch in one short transaction, as Core statements (an
    ORM object costs a third of a millisecond to build: too long under the
    lock). The values were held to the columns' rules in pass 1, by the same
    ``fields.check_values`` a flush uses. Addresses stored since pass 1
    (another admin, a sign-up) are looked up again under the lock on SQLite;
    on PostgreSQL a clash at insert retries the batch, which then sees it."""
    now = utcnow()
    # Every row's parameters have the same keys: an executemany takes its
    # columns from the first row, and would drop another row's opted_out_at.
    base = _defaults() | {"created_at": now, "confirmed_at": now, "opted_out_at": None}
    parameters = {(row.kind, row.key): base | row.values() for row in batch}
    table = Subscriber.__table__
    for _attempt in range(3):
        try:
            with db.session_scope(engine) as session:
                stored = _stored_keys(session, [(row.kind, row.key) for row in batch])
                fresh = [row for row in batch if (row.kind, row.key) not in stored]
                # A plain executemany, then the new ids read back by address: RETURNING
                # in parameter order made SQLAlchemy insert one row per statement on
                # SQLite (4/5 of a 100,000-row import). Rows go in file order.
                if fresh:
                    session.execute(sa.insert(table), [parameters[row.kind, row.key] for row in fresh])
                ids = _stored_ids(session, [(row.kind, row.key) for row in fresh])
                regions = [{"subscriber_id": ids[row.kind, row.key], "region_slug": slug}
                           for row in fresh for slug in row.region_slugs]
                analysts = [{"subscriber_id": ids[row.kind, row.key], "analyst_id": analyst_id}
                            for row in fresh for analyst_id in row.analyst_ids]
                if regions:
                    session.execute(sa.insert(SubscriberRegion.__table__), regions)
                if analysts:
                    session.execute(sa.insert(SubscriberAnalyst.__table__), analysts)
                # What the flush keeps for a name (models._keep_name_words): a search by a later word.
                words = [word for row in fresh for word in name_word_rows(ids[row.kind, row.key], row.name)]
                if words:
                    session.execute(sa.insert(SubscriberNameWord.__table__), words)
                # Their first line of history, as the flush hook writes for a
                # subscriber added one by one (models._record_status_changes).
                if fresh:
                    session.execute(sa.insert(SubscriberChange.__table__), [
                        _created(ids[row.kind, row.key], parameters[row.kind, row.key], now) for row in fresh])
                    # And its event, as the flush hook emits for one added so (events.emit).
                    emit.emit_bulk(session, "subscriber.created", [
                        _event_data(ids[row.kind, row.key], parameters[row.kind, row.key]) for row in fresh], now=now)
            return ([(row.line, row.address) for row in fresh],
                    [(row.line, row.given) for row in batch if (row.kind, row.key) in stored])
        except sa.exc.IntegrityError:
            continue
    raise InputError("the subscriber list kept changing during the import; import the file again "
                     "(rows already added are reported as already there)")
