"""The JSON API under /api, for a CMS or a script: push and approve
SITREPs, manage subscribers, read the delivery log. Every route needs a
bearer token (``dispatch admin token NAME``); its OpenAPI page is /api/docs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlmodel import Session

from dispatch import fields, ledger, paging, sitrep_text, sitreps, subscriber_rows, subscribers
from dispatch.errors import NotFoundError
from dispatch.inbound import events
from dispatch.models import Delivery, DeliveryStatus, SitrepStatus, SubscriberKind, SubscriberStatus
from dispatch.web.pages import db_session
from dispatch.desk import audit, roles
from dispatch.desk.roles import Permission as P
from dispatch.web import access
from dispatch.web.access import requires
from dispatch.web.uploads import SITREP_MAX_BYTES

router = APIRouter(prefix="/api", tags=["dispatch"], dependencies=[Depends(access.principal)])

# An id beyond what an id column holds is refused here (422, naming the
# parameter) rather than sent to the database, which fails on it.
SitrepId = Annotated[int, Path(ge=1, le=fields.MAX_ID)]
DeliveryId = Annotated[int, Path(ge=1, le=fields.MAX_ID)]


def _actor(who: access.Principal = Depends(access.principal)) -> str:
    return f"api:{who.name}"


class SitrepIn(BaseModel):
    text: str = Field(description="The SITREP in the text format (title, date, What has Happened, Why it Matters)",
                      max_length=SITREP_MAX_BYTES)
    approve: bool = Field(False, description="approve it at once")
    regions: list[str] | None = Field(None, description="region slugs; default: the places the text names")


class Preferences(BaseModel):
    name: str | None = None
    regions: list[str] | None = Field(None, description="region slugs; [] means every region")
    analysts: list[str] | None = Field(None, description="analyst names or slugs; [] means every analyst")
    cadence: Literal["immediate", "daily", "weekly"] | None = None
    send_at: str | None = Field(None, description="local time HH:MM", examples=["07:00"])
    timezone: str | None = Field(None, description="IANA name", examples=["Europe/London"])
    weekday: str | int | None = Field(None, description="for weekly: monday … sunday, or 0 = Monday")
    format: Literal["html", "text"] | None = None

    def as_preferences(self) -> subscribers.Preferences:
        return subscribers.Preferences(**self.model_dump(include=set(subscribers.Preferences.__dataclass_fields__)))


class SubscriberIn(Preferences):
    kind: Literal["email", "slack"] = "email"
    address: str = Field(description="an email address, a Slack channel ID or an incoming-webhook URL")
    status: Literal["active", "pending"] = Field(
        "active", description="pending: not sent anything until confirmed (or set active)")


class SubscriberPatch(Preferences):
    status: Literal["active", "unsubscribed", "disabled", "pending", "bounced"] | None = None


@router.post("/sitreps", dependencies=[requires(P.edit)], summary="Import a SITREP (and approve it)", status_code=201)
def create_sitrep(body: SitrepIn, request: Request, response: Response, actor: str = Depends(_actor),
                  session: Session = Depends(db_session)) -> dict:
    if body.approve and not roles.allows(request.state.principal.role, P.approve):
        raise HTTPException(403, roles.refusal(request.state.principal.role, P.approve))
    parsed = sitrep_text.parse(body.text, source="request")
    result = sitreps.import_parsed(session, parsed, actor=actor, approve=body.approve, regions=body.regions,
                                   two_person=request.app.state.settings.two_person_rule)
    if not result.created:
        response.status_code = 200
    return {"created": result.created, "sitrep": sitreps.as_dict(result.sitrep, full=True)}


# Every list is one page: {"items": [...], "next": cursor or null}, the next
# page's URL also in an RFC 8288 Link header. Pass ``next`` back as ``after``.
Limit = Annotated[int, Query(ge=1, le=paging.MAX_LIMIT, description="rows per page")]
After = Annotated[str | None, Query(description="the `next` cursor of the previous page", max_length=40)]


def _paged(request: Request, page: paging.Page, items: list) -> JSONResponse:
    """The page as JSON, serialised here in one go: FastAPI's own encoding
    of a returned dict walks every value of a thousand rows first."""
    cursor = None if page.next is None else str(page.next)
    headers = {}
    if cursor is not None:
        url = request.url.include_query_params(after=cursor)
        headers["Link"] = f'<{url}>; rel="next"'
    return JSONResponse({"items": items, "next": cursor}, headers=headers)


@router.get("/sitreps", dependencies=[requires(P.read)], summary="List SITREPs, newest first (one page)")
def list_sitreps(request: Request, status: SitrepStatus | None = None, q: str | None = None,
                 limit: Limit = 100, after: After = None, session: Session = Depends(db_session)) -> dict:
    page = sitreps.sitrep_page(session, status=status, search=q, limit=limit, after=paging.parse_cursor(after))
    return _paged(request, page, [sitreps.as_dict(s) for s in page.items])


@router.get("/sitreps/{sitrep_id}", dependencies=[requires(P.read)], summary="One SITREP with its bullets, commentary and history")
def get_sitrep(sitrep_id: SitrepId, session: Session = Depends(db_session)) -> dict:
    return sitreps.as_dict(sitreps.get(session, sitrep_id), full=True)


@router.post("/sitreps/{sitrep_id}/approve", dependencies=[requires(P.approve)], summary="Approve a SITREP: the next planning run delivers it")
def approve_sitrep(sitrep_id: SitrepId, request: Request, actor: str = Depends(_actor),
                   release_at: datetime | None = Query(None, description="embargo: send nothing before this instant"),
                   flash: bool = Query(False, description="FLASH: send it at once to every matching reader, "
                                                          "whatever their cadence (with release_at: at the release)"),
                   session: Session = Depends(db_session)) -> dict:
    return sitreps.as_dict(sitreps.approve_sitrep(session, sitrep_id, by=actor,
                                                  release_at=_utc(release_at, "release_at"),
                                                  two_person=request.app.state.settings.two_person_rule,
                                                  flash=flash))


@router.post("/sitreps/{sitrep_id}/release", dependencies=[requires(P.approve)],
             summary="Release an embargoed SITREP now, or cancel its release (cancel=true: back to a draft)")
def release_sitrep(sitrep_id: SitrepId, cancel: bool = False, actor: str = Depends(_actor),
                   session: Session = Depends(db_session)) -> dict:
    change = sitreps.cancel_release if cancel else sitreps.release_sitrep
    return sitreps.as_dict(change(session, sitrep_id, by=actor))


@router.post("/sitreps/{sitrep_id}/withdraw", dependencies=[requires(P.approve)],
             summary="Withdraw a SITREP: unsent deliveries leave it out (retract=true: everyone who received it is told)")
def withdraw_sitrep(sitrep_id: SitrepId, reason: str = Query("", max_length=2000),
                    retract: bool = Query(False, description="a retraction: a notice to every earlier reader"),
                    actor: str = Depends(_actor), session: Session = Depends(db_session)) -> dict:
    if retract:
        from dispatch import revisions

        done = revisions.retract(session, sitrep_id, by=actor, reason=reason)
        return {**sitreps.as_dict(sitreps.get(session, sitrep_id)), "notices": done.notices}
    return sitreps.as_dict(sitreps.withdraw_sitrep(session, sitrep_id, by=actor, reason=reason))


@router.get("/subscribers", dependencies=[requires(P.read)], summary="List subscribers and Slack channels, by id (one page)")
def list_subscribers(request: Request, status: SubscriberStatus | None = None,
                     kind: SubscriberKind | None = None, region: str | None = None,
                     q: str | None = Query(None, description="the address or the name starts with this (any case)"),
                     limit: Limit = 100, after: After = None, session: Session = Depends(db_session)) -> dict:
    page = subscriber_rows.page(session, status=status, kind=kind, region=region, search=q, limit=limit,
                                after=paging.parse_cursor(after))
    return _paged(request, page, page.items)


@router.post("/subscribers", dependencies=[requires(P.subscribers)], summary="Add a subscriber or a Slack channel", status_code=201)
def add_subscriber(body: SubscriberIn, request: Request, session: Session = Depends(db_session)) -> dict:
    added = subscribers.add_subscriber(session, body.address, kind=SubscriberKind(body.kind),
                                       prefs=body.as_preferences(), status=SubscriberStatus(body.status),
                                       webhook_hosts=request.app.state.settings.slack_webhook_hosts,
                                       private_networks=request.app.state.settings.outbound_private_networks)
    return subscribers.as_dict(added)


@router.get("/subscribers/{ident}", dependencies=[requires(P.read)], summary="One subscriber, by id or address")
def get_subscriber(ident: str, session: Session = Depends(db_session)) -> dict:
    return subscribers.as_dict(subscribers.get(session, ident))


@router.patch("/subscribers/{ident}", dependencies=[requires(P.subscribers)], summary="Change preferences or status; fields left out stay as they are")
def update_subscriber(ident: str, body: SubscriberPatch, session: Session = Depends(db_session)) -> dict:
    changed = subscribers.edit_subscriber(session, ident, body.as_preferences(),
                                          status=SubscriberStatus(body.status) if body.status else None)
    return subscribers.as_dict(changed)


@router.delete("/subscribers/{ident}", dependencies=[requires(P.subscribers)], summary="Remove a subscriber and its delivery log", status_code=204)
def remove_subscriber(ident: str, session: Session = Depends(db_session)) -> Response:
    subscribers.remove_subscriber(session, ident)
    return Response(status_code=204)


def _delivery(d: Delivery, address: str | None = None) -> dict:
    return {"id": d.id, "subscriber_id": d.subscriber_id, "address": address, "window": d.window_key,
            "sitreps": d.sitrep_ids, "status": d.status.value, "attempts": d.attempts,
            "created_at": d.created_at.isoformat(), "sent_at": d.sent_at.isoformat() if d.sent_at else None,
            "next_attempt_at": d.next_attempt_at.isoformat() if d.next_attempt_at else None,
            "receipt": d.receipt, "last_error": d.last_error}


@router.get("/deliveries", dependencies=[requires(P.read)], summary="The delivery log, newest first (one page)")
def list_deliveries(request: Request, status: DeliveryStatus | None = None,
                    subscriber: str | None = None, sitrep: int | None = Query(None, ge=1, le=fields.MAX_ID),
                    since: datetime | None = None, until: datetime | None = None,
                    limit: Limit = 100, after: After = None, session: Session = Depends(db_session)) -> dict:
    cursor = paging.parse_cursor(after)
    subscriber_id = subscribers.get(session, subscriber).id if subscriber else None
    page = ledger.log_page(session, status=status, subscriber_id=subscriber_id, sitrep_id=sitrep,
                           since=_utc(since, "since"), until=_utc(until, "until"), limit=limit, after=cursor)
    return _paged(request, page, [_delivery(e.delivery, e.address) for e in page.items])


@router.get("/deliveries/{delivery_id}", dependencies=[requires(P.read)],
            summary="One delivery with every attempt and what came back about it")
def get_delivery(delivery_id: DeliveryId, session: Session = Depends(db_session)) -> dict:
    delivery = session.get(Delivery, delivery_id)
    if delivery is None:
        raise NotFoundError(f"no delivery {delivery_id}")
    data = _delivery(delivery)
    data["attempts_log"] = [{"at": a.at.isoformat(), "outcome": a.outcome, "detail": a.detail}
                            for a in ledger.attempts(session, delivery_id)]
    data["events"] = [events.as_dict(e) for e in events.for_delivery(session, delivery_id)]
    return data


EventKind = Literal["hard_bounce", "soft_bounce", "complaint", "unsubscribe"]


@router.get("/bounces", dependencies=[requires(P.read)],
            summary="Bounces, complaints and mailto unsubscribes that came back, newest first (one page)")
def list_bounces(request: Request, kind: EventKind | None = None, limit: Limit = 100, after: After = None,
                 session: Session = Depends(db_session)) -> dict:
    page = events.page(session, kind=kind, limit=limit, after=paging.parse_cursor(after))
    return _paged(request, page, [events.as_dict(e) for e in page.items])


def _utc(moment: datetime | None, field: str) -> datetime | None:
    """A time without an offset is UTC; one outside what can be stored is a 400 naming the field."""
    return None if moment is None else fields.utc_instant(moment, field=field)


@router.get("/audit", dependencies=[requires(P.read)], summary="The audit log, newest first (one page)")
def list_audit(request: Request, since: datetime | None = None,
               actor: str | None = Query(None, max_length=200), target: str | None = Query(None, max_length=100),
               limit: Limit = 100, after: After = None, session: Session = Depends(db_session)) -> dict:
    page = audit.audit_page(session, since=_utc(since, "since"), actor=actor, target=target, limit=limit,
                            after=paging.parse_cursor(after))
    return _paged(request, page, [audit.as_dict(e) for e in page.items])
