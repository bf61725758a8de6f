"""The JSON API for event webhooks (dispatch/events): list, add, remove."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field
from sqlmodel import Session

from dispatch import fields
from dispatch.events import catalogue, endpoints
from dispatch.web.pages import db_session
from dispatch.desk.roles import Permission as P
from dispatch.web import access
from dispatch.web.access import requires

router = APIRouter(prefix="/api", tags=["dispatch"], dependencies=[Depends(access.principal)])
WebhookId = Annotated[int, Path(ge=1, le=fields.MAX_ID)]


class WebhookIn(BaseModel):
    url: str = Field(max_length=endpoints.MAX_URL)
    events: list[str] = Field(min_length=1, max_length=len(catalogue.TYPES))


@router.get("/webhooks", dependencies=[requires(P.manage)], summary="List event webhooks (secrets masked)")
def list_webhooks(session: Session = Depends(db_session)) -> list[dict]:
    return [endpoints.as_dict(h) for h in endpoints.all_webhooks(session)]


@router.post("/webhooks", dependencies=[requires(P.manage)], summary="Add an event webhook; the answer carries its signing secret, once",
             status_code=201)
def add_webhook(body: WebhookIn, request: Request, session: Session = Depends(db_session)) -> dict:
    hook = endpoints.add(session, body.url, events=body.events,
                         private_networks=request.app.state.settings.outbound_private_networks)
    return endpoints.as_dict(hook, with_secret=True)


@router.delete("/webhooks/{webhook_id}", dependencies=[requires(P.manage)], summary="Remove an event webhook and its undelivered events",
               status_code=204)
def remove_webhook(webhook_id: WebhookId, session: Session = Depends(db_session)) -> None:
    endpoints.remove(session, webhook_id)
