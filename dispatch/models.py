"""The tables, and nothing else. See DESIGN.md for what each one means.

Each column's limits are the rules for its values (``dispatch.fields``):
every flush holds new and changed rows to them, so SQLite refuses what
PostgreSQL would. ``info={"field": …}`` names a column as a person knows it
("analyst", not "name") in those refusals.
"""


import secrets
from itertools import chain
from datetime import date, datetime
from enum import Enum

import sqlalchemy as sa
import sqlalchemy.orm
from pydantic import ConfigDict
from sqlmodel import Column, Field, Relationship, SQLModel

from dispatch import fields
# Defined apart so that a command that only reads can use them without SQLModel
# (dispatch.read_tables); they are the models' own, re-exported from here.
from dispatch.coltypes import REMEMBERED_INSTANTS, UTCDateTime, utcnow  # noqa: F401
from dispatch.enums import (  # noqa: F401
    Cadence, DeliveryStatus, MailFormat, Role, SitrepStatus, SubscriberKind, SubscriberStatus,
)


class TableModel(SQLModel):
    """The base of every table. Its pydantic schema (validation, dumps) is
    built when first used, not when this module loads: nothing in a
    delivery run validates a row through pydantic (a row is built, and
    checked by dispatch.fields, without it), and building 26 schemas was a
    sixth of this module's import (issue 19)."""

    model_config = ConfigDict(defer_build=True)


def _utc(nullable: bool = True) -> Column:
    return Column(UTCDateTime(), nullable=nullable)


def _named(field: str, **column_kwargs) -> dict:
    """sa_column_kwargs naming the column in refusals."""
    return {"info": {"field": field}, **column_kwargs}


def _enum(enum_cls: type[Enum]) -> sa.Enum:
    # Stored as plain strings with a CHECK: portable, and new values need no
    # PostgreSQL enum-type dance in migrations.
    return sa.Enum(
        enum_cls,
        native_enum=False,
        create_constraint=True,
        length=16,
        name=f"{enum_cls.__name__.lower()}_check",
        values_callable=lambda e: [m.value for m in e],
    )


class Region(TableModel, table=True):
    slug: str = Field(primary_key=True, max_length=64, sa_column_kwargs=_named("region"))
    name: str = Field(max_length=200, sa_column_kwargs=_named("region name"))


class Analyst(TableModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, sa_column_kwargs=_named("analyst"))
    title: str | None = Field(default=None, max_length=100,  # "General", "Dr." …
                              sa_column_kwargs=_named("analyst title"))
    slug: str = Field(max_length=200, sa_column_kwargs=_named("analyst", unique=True))


class SitrepRegion(TableModel, table=True):
    __tablename__ = "sitrep_region"
    sitrep_id: int = Field(foreign_key="sitrep.id", primary_key=True, ondelete="CASCADE")
    region_slug: str = Field(foreign_key="region.slug", primary_key=True, max_length=64)


class Sitrep(TableModel, table=True):
    __table_args__ = (
        sa.Index("ix_sitrep_status_approved_at", "status", "approved_at"),
        sa.Index("ix_sitrep_status_immediate", "status", "immediate_planned_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    title: str = Field(max_length=500, sa_column_kwargs=_named("title"))
    event_date: date
    status: SitrepStatus = Field(
        default=SitrepStatus.draft, sa_column=Column(_enum(SitrepStatus), nullable=False)
    )
    approved_at: datetime | None = Field(default=None, sa_column=_utc())
    approved_by: str | None = Field(default=None, max_length=200, sa_column_kwargs=_named("by"))
    # Set once this approval has been fanned out to the immediate subscribers
    # (for a FLASH: to every matching reader, whatever their cadence).
    immediate_planned_at: datetime | None = Field(default=None, sa_column=_utc())
    # This approval is a FLASH: sent at once to every matching active reader
    # (dispatch.planner.plan_flash), and left out of their later digests.
    flash: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    priority: int = 0
    summary: list[str] = Field(default_factory=list,
                               sa_column=Column(sa.JSON, nullable=False, info={"field": "bullet"}))
    source_text: str = Field(sa_column=Column(sa.Text, nullable=False, info={"field": "text"}))
    # Identifies "the same SITREP" across re-imports: normalised title + date.
    fingerprint: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))

    regions: list[Region] = Relationship(link_model=SitrepRegion)
    commentary: list["Commentary"] = Relationship(
        back_populates="sitrep",
        sa_relationship_kwargs={
            "order_by": "Commentary.position",
            "cascade": "all, delete-orphan",
        },
    )
    changes: list["SitrepChange"] = Relationship(
        sa_relationship_kwargs={"order_by": "SitrepChange.id", "cascade": "all, delete-orphan"},
    )


class Commentary(TableModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    sitrep_id: int = Field(foreign_key="sitrep.id", index=True, ondelete="CASCADE")
    analyst_id: int = Field(foreign_key="analyst.id", index=True)
    position: int
    text: str = Field(sa_column=Column(sa.Text, nullable=False, info={"field": "quote"}))

    sitrep: Sitrep = Relationship(back_populates="commentary")
    analyst: Analyst = Relationship(sa_relationship_kwargs={"lazy": "joined"})


class SitrepChange(TableModel, table=True):
    """Who did what to a SITREP and when: import, approval, edits, withdrawal."""

    __tablename__ = "sitrep_change"
    id: int | None = Field(default=None, primary_key=True)
    sitrep_id: int = Field(foreign_key="sitrep.id", index=True, ondelete="CASCADE")
    at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
    actor: str = Field(max_length=200, sa_column_kwargs=_named("by"))
    action: str = Field(max_length=32)
    # The reason given for a withdrawal, or what an edit changed.
    detail: str = Field(default="", sa_column=Column(sa.Text, nullable=False, info={"field": "reason"}))


class RevisionKind(str, Enum):
    correction = "correction"
    retraction = "retraction"


class SitrepRevision(TableModel, table=True):
    """A correction or retraction of a released SITREP (dispatch/revisions.py).

    A correction is pending (``approved_at`` unset) until a second person
    approves it; a retraction is approved when it is made, as a withdrawal
    is. ``before`` and ``after`` are the content it replaced and the content
    it brought ({title, event_date, bullets, quotes, regions}), written at approval:
    the readable diff readers are sent is worked out from them.
    """

    __tablename__ = "sitrep_revision"
    __table_args__ = (sa.UniqueConstraint("sitrep_id", "number", name="uq_sitrep_revision_number"),)

    id: int | None = Field(default=None, primary_key=True)
    sitrep_id: int = Field(foreign_key="sitrep.id", ondelete="CASCADE")
    number: int  # 2 for the first correction: the SITREP as released is revision 1
    kind: RevisionKind = Field(sa_column=Column(_enum(RevisionKind), nullable=False))
    # The corrected SITREP text as given (empty for a retraction).
    content: str = Field(default="", sa_column=Column(sa.Text, nullable=False, info={"field": "text"}))
    note: str = Field(default="", sa_column=Column(sa.Text, nullable=False, info={"field": "note"}))
    # Region slugs the correction tags it with; None: the regions stay as they are.
    regions: list[str] | None = Field(default=None, sa_column=Column(sa.JSON))
    before: dict | None = Field(default=None, sa_column=Column(sa.JSON))
    after: dict | None = Field(default=None, sa_column=Column(sa.JSON))
    made_by: str = Field(max_length=200, sa_column_kwargs=_named("by"))
    made_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
    approved_by: str | None = Field(default=None, max_length=200, sa_column_kwargs=_named("by"))
    approved_at: datetime | None = Field(default=None, sa_column=_utc())


ADDRESS_KEY_LENGTH = 1000  # an email address is at most 254 characters; casefolding at most triples one


ADDRESS_KEY_TYPE = sa.String(ADDRESS_KEY_LENGTH).with_variant(
    sa.String(ADDRESS_KEY_LENGTH, collation="C"), "postgresql")
NAME_KEY_LENGTH = 600  # a name is at most 200 characters; casefolding at most triples one
NAME_KEY_TYPE = sa.String(NAME_KEY_LENGTH).with_variant(sa.String(NAME_KEY_LENGTH, collation="C"), "postgresql")


def address_key(kind: "SubscriberKind | str", address: str) -> str:
    """What makes two addresses the same subscription. Email: casefolded —
    local parts are case-sensitive by the RFC, but every real mailbox
    provider ignores case, and two subscriptions for one reader mean two
    copies of everything. A Slack channel ID or webhook URL: exactly as given."""
    kind = getattr(kind, "value", kind)
    return address.casefold() if kind == SubscriberKind.email.value else address


def _address_key_default(context) -> str:
    """For a Core INSERT that gives no key (a flush always sets one)."""
    values = context.get_current_parameters()
    return address_key(values.get("kind") or SubscriberKind.email, values["address"])


def name_key(name: str | None) -> str:
    """A name as a search compares it: casefolded, its runs of white space
    one space, so that "anna  LUND" finds "Anna Lund"."""
    return " ".join((name or "").split()).casefold()


def _name_key_default(context) -> str:
    """For a Core INSERT that gives no key (a flush always sets one)."""
    return name_key(context.get_current_parameters().get("name"))


def name_word_keys(name: str | None) -> list[str]:
    """What ``subscriber_name_word`` holds for a name: its key from each
    later word to the end — "maria lund" and "lund" for "Anna Maria Lund".
    A search text that starts one of them starts a later word of the name
    (and goes on with the words after it, as "maria lu"); the first word is
    name_key itself. At most 100 for a name of 200 characters."""
    words = name_key(name).split(" ")
    return [" ".join(words[i:]) for i in range(1, len(words))]


def name_word_rows(subscriber_id: int, name: str | None) -> list[dict]:
    """The subscriber_name_word rows of one subscriber, for a Core insert."""
    return [{"subscriber_id": subscriber_id, "word_key": key} for key in name_word_keys(name)]


class SubscriberRegion(TableModel, table=True):
    __tablename__ = "subscriber_region"
    subscriber_id: int = Field(foreign_key="subscriber.id", primary_key=True, ondelete="CASCADE")
    region_slug: str = Field(foreign_key="region.slug", primary_key=True, max_length=64)


class SubscriberAnalyst(TableModel, table=True):
    __tablename__ = "subscriber_analyst"
    subscriber_id: int = Field(foreign_key="subscriber.id", primary_key=True, ondelete="CASCADE")
    analyst_id: int = Field(foreign_key="analyst.id", primary_key=True)


class SubscriberNameWord(TableModel, table=True):
    """A name search by a later word ("Lund", "lu" find "Anna Lund"): each
    subscriber's ``name_word_keys``, so that such a search is a range of the
    word_key index, as a search by the first word is one of name_key's.
    Derived from subscriber.name_key and kept with it by every writer of
    names: the flush (``_keep_name_words`` below) and the CSV import's Core
    inserts (``name_word_rows``); a Core write elsewhere must do the same."""

    __tablename__ = "subscriber_name_word"
    __table_args__ = (sa.Index("ix_subscriber_name_word_word_key", "word_key", "subscriber_id"),)
    # The subscriber first: rewriting one reader's words is a range of the key.
    subscriber_id: int = Field(foreign_key="subscriber.id", primary_key=True, ondelete="CASCADE")
    # In code-point order on every backend, like name_key (a prefix is a range).
    word_key: str = Field(primary_key=True, max_length=NAME_KEY_LENGTH, sa_type=NAME_KEY_TYPE)


class Subscriber(TableModel, table=True):
    __table_args__ = (
        # One subscription per address however it is capitalised (see
        # address_key); the key first, so that a lookup without the kind uses it.
        sa.Index("uq_subscriber_address_key_kind", "address_key", "kind", unique=True),
        # Implied by the index above, but kept: dropping it would rebuild the
        # table on SQLite, and a rebuild under foreign keys empties the delivery log.
        sa.UniqueConstraint("kind", "address", name="uq_subscriber_kind_address"),
        # Also serves lookups by status alone; a second index on status would
        # lure SQLite away from it in the planner's due query.
        sa.Index("ix_subscriber_status_next_due", "status", "next_due_at"),
        # The immediate readers, in id order, without reading the daily ones.
        # Cadence first: a leading status would compete with the index above.
        sa.Index("ix_subscriber_cadence_status", "cadence", "status"),
        # The admin's name search: a prefix of name_key is a range of this index.
        sa.Index("ix_subscriber_name_key", "name_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: SubscriberKind = Field(
        default=SubscriberKind.email, sa_column=Column(_enum(SubscriberKind), nullable=False)
    )
    # An email address, a Slack channel ID (bot token) or an incoming-webhook URL.
    address: str = Field(max_length=500, sa_column_kwargs=_named("address"))
    # address_key(kind, address), set at every flush: what "the same address" means.
    # Casefolding can lengthen a text (ß → ss), hence more room than the address.
    # Compared in code-point order on every backend (COLLATE "C" on
    # PostgreSQL), so that a prefix search is a range of its index.
    address_key: str = Field(default="", max_length=ADDRESS_KEY_LENGTH, sa_type=ADDRESS_KEY_TYPE, sa_column_kwargs=_named(
        "address", default=_address_key_default, server_default=""))
    name: str = Field(default="", max_length=200, sa_column_kwargs=_named("name"))
    # name_key(name), set at every flush and by every Core insert (its default):
    # what a name search compares, in code-point order like address_key.
    name_key: str = Field(default="", max_length=NAME_KEY_LENGTH, sa_type=NAME_KEY_TYPE, sa_column_kwargs=_named(
        "name", default=_name_key_default, server_default=""))
    timezone: str = Field(default="UTC", max_length=64, sa_column_kwargs=_named("tz"))
    send_at: str = Field(default="07:00", max_length=5, sa_column_kwargs=_named("at"))  # local HH:MM
    cadence: Cadence = Field(
        default=Cadence.daily, sa_column=Column(_enum(Cadence), nullable=False)
    )
    weekday: int = Field(default=0, ge=0, le=6)  # Monday = 0; used by weekly cadence
    format: MailFormat = Field(
        default=MailFormat.html, sa_column=Column(_enum(MailFormat), nullable=False)
    )
    status: SubscriberStatus = Field(
        default=SubscriberStatus.active, sa_column=Column(_enum(SubscriberStatus), nullable=False)
    )
    status_reason: str | None = Field(default=None, max_length=500, sa_column_kwargs=_named("reason"))
    bounce_count: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
    confirmed_at: datetime | None = Field(default=None, sa_column=_utc())
    # The end of the last window planned for this subscriber: the next window
    # covers SITREPs approved after it. Schedule state lives here, not in a job store.
    planned_through: datetime | None = Field(default=None, sa_column=_utc())
    # When the next daily/weekly window ends, so that a planning tick reads
    # only the subscribers that are due. None: to be computed (new or edited).
    next_due_at: datetime | None = Field(default=None, sa_column=_utc())
    # When the reader last unsubscribed themselves. Only their own confirmed
    # opt-in clears it; while it is set, no admin edit makes them active.
    opted_out_at: datetime | None = Field(default=None, sa_column=_utc())
    # Soft bounces (4.x.x, 5.2.2) that came back after acceptance, as a score
    # that halves every week (dispatch.inbound.outcomes), and when it was last raised.
    soft_bounce_score: float = Field(default=0.0, sa_column_kwargs={"server_default": "0"})
    soft_bounce_at: datetime | None = Field(default=None, sa_column=_utc())

    regions: list[Region] = Relationship(link_model=SubscriberRegion)
    analysts: list[Analyst] = Relationship(link_model=SubscriberAnalyst)


class SubscriberChange(TableModel, table=True):
    """Append-only: every change of a subscriber's status, with its reason.
    Written by the flush hook below, so no path (reader, admin, bounce) can
    change a status without leaving its line here."""

    __tablename__ = "subscriber_change"
    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscriber.id", index=True, ondelete="CASCADE")
    at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
    from_status: str | None = Field(default=None, max_length=16)  # None: the subscriber was created
    to_status: str = Field(max_length=16)
    reason: str | None = Field(default=None, max_length=500)


@sa.event.listens_for(sa.orm.Session, "after_flush")
def _record_status_changes(session: sa.orm.Session, _flush_context) -> None:
    rows = []
    for obj in (*session.new, *session.dirty):
        if not isinstance(obj, Subscriber):
            continue
        history = sa.inspect(obj).attrs.status.history
        if not history.has_changes() and obj not in session.new:
            continue
        before = history.deleted[0] if history.deleted else None
        rows.append({"subscriber_id": obj.id, "at": utcnow(), "from_status": _value(before),
                     "to_status": _value(obj.status), "reason": (obj.status_reason or None) and obj.status_reason[:500]})
    if rows:
        session.connection().execute(sa.insert(SubscriberChange.__table__), rows)


@sa.event.listens_for(sa.orm.Session, "after_flush")
def _keep_name_words(session: sa.orm.Session, _flush_context) -> None:
    """subscriber_name_word follows each new or renamed subscriber's name_key
    (set in _before_flush); a deleted one's rows go by ON DELETE CASCADE."""
    table = SubscriberNameWord.__table__
    renamed, rows = [], []
    for obj in (*session.new, *session.dirty):
        if not isinstance(obj, Subscriber) or obj in session.deleted:
            continue
        if obj not in session.new:
            if not sa.inspect(obj).attrs.name_key.history.has_changes():
                continue
            renamed.append(obj.id)
        rows += name_word_rows(obj.id, obj.name)
    connection = session.connection() if renamed or rows else None
    if renamed:
        connection.execute(sa.delete(table).where(table.c.subscriber_id.in_(renamed)))
    if rows:
        connection.execute(sa.insert(table), rows)


def _value(status) -> str | None:
    return status.value if isinstance(status, Enum) else status


FLASH_DUE = "status = 'pending' AND window_key LIKE 'flash:%'"  # digest.FLASH_PREFIX


class Delivery(TableModel, table=True):
    __table_args__ = (
        sa.UniqueConstraint("subscriber_id", "window_key", name="uq_delivery_subscriber_window"),
        sa.Index("ix_delivery_status_next_attempt", "status", "next_attempt_at"),
        # The log filtered by status, newest first, read in index order and
        # stopped when a page is full (the dashboard's failures, a status filter).
        sa.Index("ix_delivery_status_id", "status", "id"),
        # Deliveries planned on a day (and today's counts by status) read from
        # this index alone: one day's entries, never the whole log.
        sa.Index("ix_delivery_created_at_status", "created_at", "status"),
        # An event delivery (window key event:<event id>) goes to a webhook, not a subscriber.
        sa.Index("uq_delivery_webhook_window", "webhook_id", "window_key", unique=True),
        # FLASH deliveries waiting to be sent, and only those: claimed ahead of
        # a digest backlog (ledger.claim) without reading it. The predicate is
        # written as the claim writes it, so both backends use the index; status
        # leads, as in the index above, or SQLite's planner prefers that one.
        # Partial on both backends (WHERE FLASH_DUE, migration 0019). The
        # predicate is kept in ``info``, not as postgresql_where/sqlite_where:
        # a dialect's option makes SQLAlchemy import that dialect when this
        # module loads, PostgreSQL's on every SQLite start (35 ms). The schema
        # is the migrations' (autogenerate does not compare predicates);
        # tests/test_startup.py holds the migrated index to this one.
        sa.Index("ix_delivery_flash_due", "status", "next_attempt_at", "id", info={"where": FLASH_DUE}),
    )

    id: int | None = Field(default=None, primary_key=True)
    # A digest or notice goes to a subscriber; an event to an event webhook (exactly one of them).
    subscriber_id: int | None = Field(default=None, foreign_key="subscriber.id", ondelete="CASCADE")
    webhook_id: int | None = Field(default=None, foreign_key="event_webhook.id", ondelete="CASCADE")
    window_key: str = Field(max_length=100)
    sitrep_ids: list[int] = Field(default_factory=list, sa_column=Column(sa.JSON, nullable=False))
    status: DeliveryStatus = Field(
        default=DeliveryStatus.pending, sa_column=Column(_enum(DeliveryStatus), nullable=False)
    )
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_column=_utc())
    lease_until: datetime | None = Field(default=None, sa_column=_utc())
    last_error: str | None = Field(default=None, sa_column=Column(sa.Text))
    receipt: str | None = Field(default=None, max_length=500)
    claimed_by: int | None = None  # the Worker that holds (or last held) the lease
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=_utc())


class DeliverySitrep(TableModel, table=True):
    """Which SITREPs a delivery carries: ``Delivery.sitrep_ids`` as rows, so
    that the log filtered by a SITREP is a range of this key (newest first)
    instead of a look inside every delivery's JSON. Written by ``ledger``
    alone, with the deliveries it plans; a delivery's SITREPs never change."""

    __tablename__ = "delivery_sitrep"
    __table_args__ = (
        # A delivery's removal (with its subscriber) finds its links here.
        sa.Index("ix_delivery_sitrep_delivery_id", "delivery_id"),
    )
    # No foreign key to sitrep, as the JSON list has none: the ledger records
    # what a window carries, and never needs the SITREP table to do so.
    sitrep_id: int = Field(primary_key=True)
    delivery_id: int = Field(foreign_key="delivery.id", primary_key=True, ondelete="CASCADE")


class DeliveryAttempt(TableModel, table=True):
    """Append-only: one row per attempt at a delivery. This is the log."""

    __tablename__ = "delivery_attempt"
    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(foreign_key="delivery.id", index=True, ondelete="CASCADE")
    at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
    outcome: str = Field(max_length=32)
    detail: str = Field(default="", sa_column=Column(sa.Text, nullable=False))


class DeliveryEvent(TableModel, table=True):
    """Append-only: what came back about a delivery after its server accepted
    it: a bounce, a complaint, a mailto unsubscribe (dispatch.inbound)."""

    __tablename__ = "delivery_event"
    __table_args__ = (
        # A provider's event (or a message) is acted on once: a replay finds its row.
        sa.Index("uq_delivery_event_source_event", "source", "event_key", unique=True),
        # The admin page's counts per day, and its newest-first pages.
        sa.Index("ix_delivery_event_received_at", "received_at"),
        sa.Index("ix_delivery_event_subscriber_id", "subscriber_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int | None = Field(default=None, foreign_key="delivery.id", index=True, ondelete="SET NULL")
    subscriber_id: int | None = Field(default=None, foreign_key="subscriber.id", ondelete="CASCADE")
    kind: str = Field(max_length=16)  # hard_bounce | soft_bounce | complaint | unsubscribe
    status_code: str | None = Field(default=None, max_length=16)  # 5.1.1 …
    diagnostic: str = Field(default="", max_length=500)
    source: str = Field(max_length=16)  # smtp | lmtp | stdin | ses | sendgrid | mailgun | postmark
    event_key: str | None = Field(default=None, max_length=200)  # the provider's id or the message's
    effect: str = Field(default="", max_length=200)  # what it did to the reader
    received_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))


class WebhookNonce(TableModel, table=True):
    """A provider webhook request already acted on (an SNS MessageId, a
    Mailgun token, a SendGrid signature's payload): the same request again
    changes nothing. Kept until its timestamp is past the window in which
    it would be refused anyway (dispatch.inbound.providers.record)."""

    __tablename__ = "webhook_nonce"
    __table_args__ = (
        sa.Index("uq_webhook_nonce_source_nonce", "source", "nonce", unique=True),
        sa.Index("ix_webhook_nonce_expires_at", "expires_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=16)  # ses | sendgrid | mailgun
    nonce: str = Field(max_length=200)
    expires_at: datetime = Field(sa_column=_utc(nullable=False))


class Worker(TableModel, table=True):
    """A running `dispatch run` process, kept alive by its heartbeat."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)  # host:pid
    role: str = Field(max_length=16)  # all | planner | sender
    started_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
    heartbeat_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
    leader: bool = False  # holds the planner lock


class ImportJob(TableModel, table=True):
    """A CSV upload being imported in the background (``dispatch.import_jobs``):
    its progress and, when it is over, its report — kept here, so that any
    web process, and a reload, shows the same page."""

    __tablename__ = "import_job"
    id: int | None = Field(default=None, primary_key=True)
    started_by: str = Field(max_length=200)
    started_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
    state: str = Field(default="running", max_length=16)  # running | done | failed
    phase: str = Field(default="checking", max_length=16)  # checking | adding
    done: int = 0  # rows added so far (phase adding)
    total: int = 0  # rows to add (known once checked)
    # The report once done: {"added": n, "already_there": [[line, address]…],
    # "rejected": [[line, reason]…], "ignored_columns": […]}; why it failed otherwise.
    report: dict | None = Field(default=None, sa_column=Column(sa.JSON))
    error: str | None = Field(default=None, sa_column=Column(sa.Text))


class StoredSetting(TableModel, table=True):
    """Values the application generates once and keeps, such as the link-signing key."""

    __tablename__ = "stored_setting"
    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(sa_column=Column(sa.Text, nullable=False))


class AdminUser(TableModel, table=True):
    """Someone who may use the admin pages; the password is stored as an Argon2 hash."""

    __tablename__ = "admin_user"
    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=100, sa_column_kwargs=_named("username", unique=True))
    password_hash: str = Field(max_length=200)
    role: Role = Field(default=Role.admin, sa_column=Column(_enum(Role), nullable=False, server_default="admin"))
    # Sessions carry it; a new one (sign-out, new password) ends them all.
    session_nonce: str = Field(default_factory=lambda: secrets.token_urlsafe(32), max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
    last_login_at: datetime | None = Field(default=None, sa_column=_utc())


class ApiToken(TableModel, table=True):
    """A bearer token for the JSON API. Only its SHA-256 is kept: the token
    itself is shown once, when it is made."""

    __tablename__ = "api_token"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, sa_column_kwargs={"unique": True})
    token_hash: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    role: Role = Field(default=Role.admin, sa_column=Column(_enum(Role), nullable=False, server_default="admin"))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
    last_used_at: datetime | None = Field(default=None, sa_column=_utc())


class AuditEntry(TableModel, table=True):
    """Append-only: one row per change of a stored thing, by whom (written
    by the flush hook in dispatch.desk.audit, never by a route)."""

    __tablename__ = "audit_entry"
    __table_args__ = (
        sa.Index("ix_audit_entry_actor", "actor", "id"),
        sa.Index("ix_audit_entry_target", "target", "id"),
        sa.Index("ix_audit_entry_at", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
    actor_kind: str = Field(max_length=16)  # user | token | cli | system | reader
    actor: str = Field(max_length=200)
    action: str = Field(max_length=64)  # e.g. sitrep.approved, subscriber.changed
    target: str = Field(max_length=100)  # e.g. sitrep:12
    # {"field": [before, after], …}, secrets replaced by "(changed)".
    changes: dict = Field(default_factory=dict, sa_column=Column(sa.JSON, nullable=False))


@sa.event.listens_for(sa.orm.Session, "before_flush")
def _before_flush(session, flush_context, instances) -> None:
    """Derived columns first, then every new or changed row against its columns' rules."""
    for obj in chain(session.new, session.dirty):
        if isinstance(obj, Subscriber) and obj.address is not None and obj.kind is not None:
            key = address_key(obj.kind, obj.address)
            if obj.address_key != key:
                obj.address_key = key
        if isinstance(obj, Subscriber):
            key = name_key(obj.name)
            if obj.name_key != key:
                obj.name_key = key
    fields.check_flush(session)


class EventWebhook(TableModel, table=True):
    """An endpoint that is sent the events it asked for, signed with its own
    secret (the Standard Webhooks scheme: dispatch/events/signing.py)."""

    __tablename__ = "event_webhook"
    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(max_length=500, sa_column_kwargs=_named("url"))
    secret: str = Field(max_length=100)  # whsec_<base64 key>; shown once, never logged
    events: list[str] = Field(default_factory=list, sa_column=Column(sa.JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))


class Event(TableModel, table=True):
    """Something that happened, as event webhooks are told it: written in the
    same transaction as the change it reports (an outbox), delivered through
    the ledger, its id the receivers' key for telling a repeat."""

    id: str = Field(primary_key=True, max_length=40)  # evt_<32 hex>
    type: str = Field(max_length=40)
    payload: dict = Field(default_factory=dict, sa_column=Column(sa.JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
