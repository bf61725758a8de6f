"""Subscribers as stored: validation of every field, add, edit, remove, list,
and CSV export (an export imports back unchanged; ``csv_import`` reads it).

An admin-added subscriber (CLI, CSV) is active at once; double opt-in is for
self-service sign-ups.

An address names one subscriber exactly: an email address compared
casefolded (``models.address_key``), a Slack channel or webhook as given.
Only ``list_subscribers(search=…)`` matches parts of addresses: their beginnings.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import sqlalchemy as sa
from sqlalchemy.orm import selectinload
from sqlmodel import Session, col, select

from dispatch import fields, models, paging, slack_webhooks, taxonomy
from dispatch.errors import DuplicateError, FieldError, NotFoundError, WorkflowError
from dispatch.input_bounds import bounded
from dispatch.models import (
    Cadence,
    MailFormat,
    Subscriber,
    SubscriberKind,
    SubscriberNameWord,
    SubscriberRegion,
    SubscriberStatus,
    address_key,
    utcnow,
)

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
SLACK_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{6,}")  # fullmatched on the stripped address
# What an export writes and an import reads (dispatch.csv_export, csv_import).
# "email" holds any kind's address; status and kind came last, so a CSV of
# the old nine columns still imports (kind email, status active).
CSV_COLUMNS = ("email", "name", "regions", "analysts", "cadence", "at", "tz", "weekday", "format",
               "status", "kind")
LIST_SEPARATOR = ";"


# --- field validation (pure) -----------------------------------------------
# Every check bounds its field before anything reads it further (see
# dispatch/input_bounds.py): the patterns below are linear, and the
# libraries behind them (email_validator, IDNA) only see short text.

MAX_EMAIL_CHARS = 254  # RFC 5321: a path is at most 256 octets, angle brackets included
MAX_ADDRESS_CHARS = 500  # models.Subscriber.address (a Slack webhook URL)
MAX_TIMEZONE_CHARS = 64  # models.Subscriber.timezone; IANA names are shorter
MAX_WORD_CHARS = 32  # a cadence, format, weekday or time of day

def _enum_value(enum_cls, value: str, field_name: str):
    value = bounded(value.strip(), field=field_name, limit=MAX_WORD_CHARS)
    try:
        return enum_cls(value.lower())
    except ValueError:
        allowed = "|".join(m.value for m in enum_cls)
        raise FieldError(field_name, f"{value!r} is not one of {allowed}") from None


def check_email(address: str) -> str:
    if any(ch in address for ch in "\r\n"):
        raise FieldError("email", "must not contain line breaks")
    address = bounded(address.strip(), field="email", limit=MAX_EMAIL_CHARS)
    # Imported when first needed: it compiles its expressions at import, a
    # tenth of a second that `dispatch run` (which checks no new address) need not pay.
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise FieldError("email", f"{address!r} is not a valid address: {exc}") from exc


def check_slack_address(address: str, *, webhook_hosts: Collection[str] = (),
                        private_networks: Collection[str] = (),
                        checked_hosts: dict[str, str | None] | None = None) -> str:
    """A channel ID (posted with the bot token) or an incoming-webhook URL on
    Slack's hosts or on one of ``webhook_hosts`` (settings.slack_webhook_hosts),
    at a public address unless its network is one of ``private_networks``
    (settings.outbound_private_networks; ``checked_hosts``: see
    slack_webhooks.address_problem)."""
    address = bounded(address.strip(), field="channel", limit=MAX_ADDRESS_CHARS)
    if SLACK_CHANNEL_ID.fullmatch(address):
        return address
    if slack_webhooks.is_webhook(address):
        # The host first: only Slack's and listed ones are ever looked up.
        problem = slack_webhooks.webhook_problem(address, extra_hosts=webhook_hosts) or \
            slack_webhooks.address_problem(address, private_networks=private_networks, checked=checked_hosts)
        if problem is None:
            return address
        raise FieldError("channel", f"{address!r} is not a Slack channel ID, nor an accepted webhook URL: {problem}")
    raise FieldError(
        "channel",
        f"{address!r} is neither a Slack channel ID (like C0123ABCD) nor an https webhook URL",
    )


def check_timezone(name: str) -> str:
    name = bounded(name.strip(), field="tz", limit=MAX_TIMEZONE_CHARS)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        close = sorted(tz for tz in available_timezones() if name.lower() in tz.lower())[:5]
        hint = f"; did you mean {', '.join(close)}?" if close else " (an IANA name such as Europe/London)"
        raise FieldError("tz", f"unknown time zone {name!r}{hint}") from None
    return name


def check_send_at(value: str) -> str:
    text = bounded(value.strip(), field="at", limit=MAX_WORD_CHARS)
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise FieldError("at", f"{value!r} is not a time of day as HH:MM (00:00–23:59)")
    # \d takes any decimal digit ("٠٧:٣٠"); what is stored is always ASCII.
    return f"{int(match.group(1)):02d}:{int(match.group(2)):02d}"


def check_weekday(value: str | int) -> int:
    text = bounded(str(value).strip(), field="weekday", limit=MAX_WORD_CHARS).lower()
    # isdecimal, not isdigit: "²" is a digit that int() refuses.
    if text.isdecimal() and int(text) < 7:
        return int(text)
    for index, day in enumerate(WEEKDAYS):
        if len(text) >= 3 and day.startswith(text):
            return index
    raise FieldError("weekday", f"{value!r} is not a weekday (mon … sun, or 0 = Monday … 6)")


def check_name(name: str) -> str:
    # Length and characters are the column's rules, checked at every flush.
    if any(ch in name for ch in "\r\n"):
        raise FieldError("name", "must not contain line breaks")
    return name.strip()


@dataclass
class Preferences:
    """What a subscriber chose; None leaves a field as it is when editing."""

    name: str | None = None
    regions: list[str] | None = None
    analysts: list[str] | None = None
    cadence: str | None = None
    send_at: str | None = None
    timezone: str | None = None
    weekday: str | int | None = None
    format: str | None = None


def preference_values(prefs: Preferences, *, resolve_regions, resolve_analysts) -> dict:
    """The checked value of every field given, by attribute name; the
    resolvers turn what was typed into Region and Analyst rows."""
    values: dict = {}
    if prefs.name is not None:
        values["name"] = check_name(prefs.name)
    if prefs.cadence is not None:
        values["cadence"] = _enum_value(Cadence, prefs.cadence, "cadence")
    if prefs.send_at is not None:
        values["send_at"] = check_send_at(prefs.send_at)
    if prefs.timezone is not None:
        values["timezone"] = check_timezone(prefs.timezone)
    if prefs.weekday is not None:
        values["weekday"] = check_weekday(prefs.weekday)
    if prefs.format is not None:
        values["format"] = _enum_value(MailFormat, prefs.format, "format")
    # What names a region or an analyst is text as well: a NUL in it is an
    # error, not something to slugify away.
    if prefs.regions is not None:
        values["regions"] = resolve_regions([fields.check_text("region", v, max_length=200) for v in prefs.regions])
    if prefs.analysts is not None:
        values["analysts"] = resolve_analysts([fields.check_text("analyst", v, max_length=200)
                                               for v in prefs.analysts])
    fields.check_values(Subscriber, values)  # the columns' own rules, before anything is set
    return values


def _apply(session: Session, subscriber: Subscriber, prefs: Preferences) -> None:
    """Validate every given field first, then write them: all or nothing."""
    values = preference_values(prefs, resolve_regions=lambda v: taxonomy.resolve_regions(session, v),
                               resolve_analysts=lambda v: taxonomy.resolve_analysts(session, v))
    for key, value in values.items():
        setattr(subscriber, key, value)
    if values.keys() & {"cadence", "send_at", "timezone", "weekday"}:
        subscriber.next_due_at = None  # the planner recomputes it from the new schedule


# --- stored subscribers ------------------------------------------------------

def check_address(kind: SubscriberKind, address: str, *, webhook_hosts: Collection[str] = (),
                  private_networks: Collection[str] = (), checked_hosts: dict | None = None) -> str:
    if kind == SubscriberKind.email:
        return check_email(address)
    return check_slack_address(address, webhook_hosts=webhook_hosts, private_networks=private_networks,
                               checked_hosts=checked_hosts)


# Linear: the local part's class has no "@" and the labels' class no ".", so
# no character can be matched in two ways.
_PLAUSIBLE_EMAIL = re.compile(r"[^@\s<>()\[\],;:\\\"]+@[A-Za-z0-9\u0080-\uffff-]+(\.[A-Za-z0-9\u0080-\uffff-]+)+")


def quick_address_problem(kind: SubscriberKind | str, address: str) -> str | None:
    """What makes a stored address unusable now, checked cheaply on every
    send (``kind`` as the enum or its stored string: they compare equal). Addresses were fully validated when stored; this catches one that
    was changed behind our back (and any line break, which could forge a header)."""
    if kind == SubscriberKind.slack:
        # Which webhook hosts are allowed is the Slack adapter's to check, before it posts.
        if len(address) > MAX_ADDRESS_CHARS:
            return f"channel: the address is longer than {MAX_ADDRESS_CHARS} characters"
        if SLACK_CHANNEL_ID.fullmatch(address):
            return None
        problem = (slack_webhooks.shape_problem(address) if slack_webhooks.is_webhook(address)
                   else "is neither a Slack channel ID nor a webhook URL")
        return f"channel: {address!r} {problem}" if problem else None
    if len(address) > MAX_EMAIL_CHARS or not _PLAUSIBLE_EMAIL.fullmatch(address):
        return f"email: {address!r} is not a valid address"
    return None


def add_subscriber(
    session: Session,
    address: str,
    *,
    kind: SubscriberKind = SubscriberKind.email,
    prefs: Preferences | None = None,
    status: SubscriberStatus = SubscriberStatus.active,
    webhook_hosts: Collection[str] = (),
    private_networks: Collection[str] = (),
) -> Subscriber:
    """``webhook_hosts``, ``private_networks``: settings.slack_webhook_hosts and
    settings.outbound_private_networks, for a Slack webhook URL."""
    address = check_address(kind, address, webhook_hosts=webhook_hosts, private_networks=private_networks)
    existing = find_by_address(session, address, kind=kind)
    if existing is not None:
        raise DuplicateError(f"{address} is already subscribed (id {existing.id}, as {existing.address})",
                             existing_id=existing.id)
    subscriber = Subscriber(kind=kind, address=address, status=status)
    if kind == SubscriberKind.slack:
        subscriber.send_at, subscriber.timezone = "08:00", "UTC"
    _apply(session, subscriber, prefs or Preferences())
    if status == SubscriberStatus.active:
        subscriber.confirmed_at = utcnow()
    session.add(subscriber)
    session.flush()
    return subscriber


def _email_key(address: str) -> str:
    """The key of an email address as someone typed it: normalised as when
    it was stored (the domain), else as given; then casefolded."""
    from email_validator import EmailNotValidError, validate_email

    try:
        address = validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        pass
    return address_key(SubscriberKind.email, address)


def _storable(text: str) -> bool:
    """Could a stored address be this text? A query with a NUL or a lone
    surrogate fails on PostgreSQL instead of finding nothing."""
    return fields.text_problem(text, max_length=Subscriber.__table__.c.address.type.length) is None


def find_by_address(session: Session, address: str, *, kind: SubscriberKind | None = None) -> Subscriber | None:
    """The subscriber with exactly this address (an email's compared casefolded)."""
    address = address.strip()
    if not _storable(address):
        return None
    email = (Subscriber.kind == SubscriberKind.email) & (Subscriber.address_key == _email_key(address))
    slack = (Subscriber.kind == SubscriberKind.slack) & (Subscriber.address_key == address)
    match = {SubscriberKind.email: email, SubscriberKind.slack: slack, None: email | slack}[kind]
    return session.exec(select(Subscriber).where(match)).first()


def get(session: Session, ident: str | int) -> Subscriber:
    """By id, or by exact address (an email's compared casefolded)."""
    text = str(ident).strip()
    if isinstance(ident, int) or (text.isascii() and text.isdecimal()):
        # An id no column can hold is no subscriber (not a database error).
        number = ident if isinstance(ident, int) else int(text) if len(text) <= 10 else 0
        subscriber = session.get(Subscriber, number) if fields.is_id(number) else None
    else:
        subscriber = find_by_address(session, text)
    if subscriber is None:
        shown = text if len(text) <= 80 else text[:80] + "…"
        raise NotFoundError(f"no subscriber {shown!r} (give an id or an address)")
    return subscriber


def edit_subscriber(
    session: Session, ident: str | int, prefs: Preferences, *, status: SubscriberStatus | None = None,
    force: bool = False,
) -> Subscriber:
    """``force`` lets an admin make active a reader who unsubscribed
    themselves (they asked the admin to, in writing); without it that is refused."""
    subscriber = get(session, ident)
    if status == SubscriberStatus.active and subscriber.opted_out_at is not None and not force:
        raise WorkflowError(
            f"{subscriber.address} unsubscribed themselves on {subscriber.opted_out_at:%Y-%m-%d}: only their own "
            "confirmed opt-in makes them active again (they can subscribe at /subscribe; an admin who has "
            "their request in writing can use `dispatch subscriber edit --status active --force`)")
    if status == SubscriberStatus.active and subscriber.status == SubscriberStatus.bounced and not force:
        raise WorkflowError(
            f"{subscriber.address} bounced ({subscriber.status_reason or 'no reason kept'}): mail to it is what gets "
            "a sender blocked; once you know the address works again use "
            "`dispatch subscriber edit --status active --force`")
    _apply(session, subscriber, prefs)
    if status is not None and status != subscriber.status:
        subscriber.status = status
        subscriber.status_reason = "set by an admin"
        if status == SubscriberStatus.active:
            subscriber.confirmed_at = subscriber.confirmed_at or utcnow()
            subscriber.bounce_count = 0
            subscriber.soft_bounce_score, subscriber.soft_bounce_at = 0.0, None
    session.flush()
    return subscriber


def remove_subscriber(session: Session, ident: str | int) -> Subscriber:
    subscriber = get(session, ident)
    session.delete(subscriber)
    session.flush()
    return subscriber


def _listed(
    session: Session,
    *,
    kind: SubscriberKind | None = None,
    status: SubscriberStatus | None = None,
    region: str | None = None,
    search: str | None = None,
    query=None,
):
    """The filtered select, not yet ordered or limited: of ``query`` (a
    select from subscriber), or of whole Subscribers with their lists."""
    if query is None:
        query = select(Subscriber).options(selectinload(Subscriber.regions), selectinload(Subscriber.analysts))
    if kind is not None:
        query = query.where(Subscriber.kind == kind)
    if status is not None:
        query = query.where(Subscriber.status == status)
    if region is not None and region.strip():  # a blank filter is no filter
        (wanted,) = taxonomy.resolve_regions(session, [region])
        # A subscriber with no regions gets every region, so they count too.
        # One correlated lookup of the link table's primary key per row: 0 if
        # the subscriber has the region, 1 if only others, NULL if none. (The
        # same as "EXISTS that region OR NOT EXISTS any", which PostgreSQL
        # planned as two hashes of the whole link table: 80–200 ms a page.)
        links = SubscriberRegion.__table__
        others_only = (sa.select(sa.func.min(sa.case((links.c.region_slug == wanted.slug, 0), else_=1)))
                       .where(links.c.subscriber_id == col(Subscriber.id)).scalar_subquery())
        query = query.where(sa.func.coalesce(others_only, 0) == 0)
    if search and search.strip():
        query = query.where(_search_clause(search))
    return query


def _search_clause(search: str):
    """The address (as compared: ``models.address_key``) or the name (as
    compared: ``models.name_key``, casefolded) starts with the text — an
    email's casefolded, a Slack ID as typed — or a later word of the name
    does ("lu" finds "Anna Lund": ``models.name_word_keys``). Each is a
    range of its own index, never a scan; the ids they find are one
    UNION, which PostgreSQL reads as index scans too (an OR with a
    subquery in it would be a filter over every row). Wildcards are text."""
    text = fields.check_text("search", search.strip(), max_length=200)  # a NUL fails on PostgreSQL
    key = col(Subscriber.address_key)
    found = [select(Subscriber.id).where(paging.prefix_range(key, text.casefold()))]
    if text.casefold() != text:
        found.append(select(Subscriber.id).where(paging.prefix_range(key, text)))
    name = models.name_key(text)
    if name:
        words = SubscriberNameWord.__table__.c
        found.append(select(Subscriber.id).where(paging.prefix_range(col(Subscriber.name_key), name)))
        found.append(sa.select(words.subscriber_id).where(paging.prefix_range(words.word_key, name)))
    return col(Subscriber.id).in_(sa.union(*found))


def list_subscribers(
    session: Session,
    *,
    kind: SubscriberKind | None = None,
    status: SubscriberStatus | None = None,
    region: str | None = None,
    search: str | None = None,
    after: int | None = None,
    limit: int | None = None,
) -> list[Subscriber]:
    """In id order; ``after`` an id, ``limit`` how many (None: all, for exports)."""
    query = _listed(session, kind=kind, status=status, region=region, search=search)
    if after is not None:
        query = query.where(col(Subscriber.id) > after)
    query = query.order_by(col(Subscriber.id))
    if limit is not None:
        query = query.limit(limit)
    return list(session.exec(query).all())


def subscriber_page(
    session: Session,
    *,
    limit: int,
    after: int | None = None,
    before: int | None = None,
    kind: SubscriberKind | None = None,
    status: SubscriberStatus | None = None,
    region: str | None = None,
    search: str | None = None,
) -> paging.Page[Subscriber]:
    """One page in id order, with the cursors beside it (``dispatch.paging``)."""
    query = _listed(session, kind=kind, status=status, region=region, search=search)
    return paging.fetch(query, col(Subscriber.id), lambda q: session.exec(q).all(), row_id=lambda s: s.id,
                        limit=limit, after=after, before=before)


def counts_by_status(session: Session) -> dict[SubscriberStatus, int]:
    """One covering read of the status index: cheap at 100,000 readers."""
    return dict(session.execute(
        select(Subscriber.status, sa.func.count()).group_by(Subscriber.status)).all())


def as_dict(subscriber: Subscriber) -> dict:
    return {
        "id": subscriber.id,
        "kind": subscriber.kind.value,
        "address": subscriber.address,
        "name": subscriber.name,
        "status": subscriber.status.value,
        "status_reason": subscriber.status_reason,
        "regions": [r.slug for r in subscriber.regions],
        "analysts": [a.name for a in subscriber.analysts],
        "cadence": subscriber.cadence.value,
        "at": subscriber.send_at,
        "tz": subscriber.timezone,
        "weekday": WEEKDAYS[subscriber.weekday],
        "format": subscriber.format.value,
        "created_at": subscriber.created_at.isoformat(),
        "confirmed_at": subscriber.confirmed_at.isoformat() if subscriber.confirmed_at else None,
    }


# --- CSV export (csv_import reads it back) -----------------------------------

# A spreadsheet runs a cell that starts with one of these as a formula
# (OWASP "CSV injection"): =HYPERLINK(...) in a sign-up name would become a
# link or worse in the admin's spreadsheet. Export prefixes such a cell with
# a single quote, which spreadsheets show as text; import takes exactly that
# quote off again. A value that itself starts with a quote before one of
# these (or before a quote) gets a quote too, so the pair is exact both ways:
# csv_value(csv_cell(v)) == v for every v.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_QUOTE = "'"


def csv_value(cell: str) -> str:
    """What a cell of an export stands for: the export's own quote removed."""
    if cell.startswith(_QUOTE) and cell[1:2] and cell[1:2] in (*FORMULA_STARTS, _QUOTE):
        return cell[1:]
    return cell


def csv_cell(value: str) -> str:
    """A value as an export writes it: never a cell a spreadsheet would run."""
    if value.startswith(FORMULA_STARTS) or csv_value(value) != value:
        return _QUOTE + value
    return value


def export_csv(subscribers: Iterable[Subscriber]) -> str:
    """Loaded subscribers as one CSV text; a whole list is streamed by
    dispatch.csv_export instead, in the very same cells."""
    from dispatch.csv_export import row_cells, text_chunks

    return "".join(text_chunks(row_cells(
        address=s.address, name=s.name, regions=[r.slug for r in s.regions],
        analysts=[a.name for a in s.analysts], cadence=s.cadence.value, send_at=s.send_at,
        timezone=s.timezone, weekday=s.weekday, format=s.format.value, status=s.status.value,
        kind=s.kind.value) for s in subscribers))


# --- what deliveries teach us about an address --------------------------------

def record_hard_bounce(session: Session, subscriber_id: int, *, reason: str, limit: int) -> Subscriber | None:
    """Count a permanent refusal of the address; at ``limit`` the subscriber
    is marked bounced and receives nothing more."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        return None
    subscriber.bounce_count += 1
    if subscriber.bounce_count >= limit and subscriber.status == SubscriberStatus.active:
        subscriber.status = SubscriberStatus.bounced
        subscriber.status_reason = fields.clip_line(f"{subscriber.bounce_count} hard bounces; last: {reason}", 500)
    return subscriber


def mark_bounced(session: Session, subscriber_id: int, *, reason: str) -> Subscriber | None:
    """A bounce reported after acceptance (dispatch.inbound): the address is
    suppressed at once. Only an active or pending reader changes; a stranger's
    sign-up never lifts it (signup.NEXT_STEP), an admin only with ``force``."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is not None and subscriber.status in (SubscriberStatus.active, SubscriberStatus.pending):
        subscriber.status = SubscriberStatus.bounced
        subscriber.status_reason = fields.clip_line(reason, 500)
    return subscriber


def disable_for(session: Session, subscriber_id: int, *, reason: str) -> Subscriber | None:
    """Stop sending to an address that cannot receive (archived channel …)."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is not None and subscriber.status == SubscriberStatus.active:
        subscriber.status = SubscriberStatus.disabled
        subscriber.status_reason = fields.clip_line(reason, 500)
    return subscriber
