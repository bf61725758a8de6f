"""/webhooks/ses, /webhooks/sendgrid, /webhooks/mailgun, /webhooks/postmark:
the bounces and complaints that mail providers post
(``dispatch.inbound.providers``).

They authenticate by the provider's signature (Postmark: basic auth), not
by a session, so they are listed in ``access.PUBLIC_PATHS``. A provider
that is not configured answers 404; a request that does not verify gets
401 or 403 and changes nothing; a replay answers 200 with
``"replayed": true`` and changes nothing. A verified request answers 200
with what was done, events that name no reader of ours included (counted
as unattributable): a refusal would only make the provider send the same
batch again for days. The log line of each request names the provider,
the outcome and the counts, never a signature, a token or a password.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timezone

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from dispatch.desk import audit
from dispatch.inbound.providers import mailgun, postmark, record, reading, sendgrid, ses, sns_certs

log = logging.getLogger("dispatch.inbound")
router = APIRouter(prefix="/webhooks", include_in_schema=False)
PATHS = ("/webhooks/ses", "/webhooks/sendgrid", "/webhooks/mailgun", "/webhooks/postmark")
BODY_BYTES = reading.MAX_BODY_BYTES


def install(app: FastAPI, *, sns_fetcher: sns_certs.Fetcher | None = None) -> None:
    """``sns_fetcher`` fetches SNS signing certificates and SubscribeURLs
    (default: HTTPS with the system's CAs); tests pass one that serves theirs."""
    app.state.sns_fetcher = sns_fetcher or sns_certs.HttpsFetcher()
    app.state.sns_certificates = sns_certs.Certificates(app.state.sns_fetcher)
    sendgrid_key = app.state.settings.sendgrid_verification_key
    app.state.sendgrid_key = sendgrid.load_key(sendgrid_key) if sendgrid_key else None
    app.include_router(router)


@router.post("/ses")
async def ses_webhook(request: Request):
    state = request.app.state
    if not state.settings.ses_webhook:
        return _not_configured("ses")
    body, headers = await request.body(), request.headers
    return await _handle(request, "ses", lambda now: ses.read(
        body, headers, certificates=state.sns_certificates, allowed_topics=state.settings.ses_topic_arns, now=now))


@router.post("/sendgrid")
async def sendgrid_webhook(request: Request):
    key = request.app.state.sendgrid_key
    if key is None:
        return _not_configured("sendgrid")
    body, headers = await request.body(), request.headers
    return await _handle(request, "sendgrid", lambda now: sendgrid.read(body, headers, public_key=key, now=now))


@router.post("/mailgun")
async def mailgun_webhook(request: Request):
    secret = request.app.state.settings.mailgun_signing_key
    if secret is None:
        return _not_configured("mailgun")
    body, headers = await request.body(), request.headers
    return await _handle(request, "mailgun", lambda now: mailgun.read(
        body, headers, signing_key=secret.get_secret_value(), now=now))


@router.post("/postmark")
async def postmark_webhook(request: Request):
    secret = request.app.state.settings.postmark_webhook_auth
    if secret is None:
        return _not_configured("postmark")
    try:  # before the body is read: a stranger's upload is not worth receiving
        postmark.check_auth(request.headers, expected=secret.get_secret_value())
    except reading.Refused as refused:
        return _refused("postmark", refused)
    body, headers = await request.body(), request.headers
    return await _handle(request, "postmark", lambda now: postmark.read(
        body, headers, expected_auth=secret.get_secret_value()))


async def _handle(request: Request, source: str, read: Callable[[datetime], reading.Verified]) -> JSONResponse:
    return await asyncio.to_thread(_as_provider, request.app, source, read)


def _as_provider(app: FastAPI, source: str, read: Callable[[datetime], reading.Verified]) -> JSONResponse:
    # The audit log says who changed a reader: this provider's webhook.
    with audit.acting_as(audit.Actor("system", f"{source} webhook")):
        return _verify_and_store(app, source, read)


def _verify_and_store(app: FastAPI, source: str, read: Callable[[datetime], reading.Verified]) -> JSONResponse:
    now = datetime.now(timezone.utc)
    try:
        verified = read(now)
    except reading.Refused as refused:
        return _refused(source, refused)
    if verified.subscribe_url is not None:
        return _confirm(app, verified, now=now)
    outcome = record.store(app.state.engine, verified, installation=app.state.installation,
                           soft_limit=app.state.settings.soft_bounce_limit, now=now)
    log.info("webhook source=%s outcome=%s recorded=%d duplicates=%d unattributable=%d ignored=%d%s", source,
             "replayed" if outcome.replayed else "verified", outcome.recorded, outcome.duplicates,
             outcome.unattributable, outcome.ignored, f" note={verified.note}" if verified.note else "")
    return JSONResponse(outcome.as_dict())


def _confirm(app: FastAPI, verified: reading.Verified, *, now: datetime) -> JSONResponse:
    """An SNS subscription to an allowed topic: confirmed by fetching its SubscribeURL, once."""
    if record.seen(app.state.engine, verified.source, verified.nonce):
        log.info("webhook source=%s outcome=replayed %s", verified.source, verified.note)
        return JSONResponse(record.Outcome(replayed=True).as_dict())
    try:
        app.state.sns_fetcher(verified.subscribe_url, max_bytes=sns_certs.MAX_CONFIRM_BYTES,
                              timeout=sns_certs.FETCH_SECONDS)
    except sns_certs.FetchError as exc:
        log.warning("webhook source=%s outcome=unconfirmed %s: SubscribeURL %s", verified.source, verified.note, exc)
        return JSONResponse({"detail": f"the subscription could not be confirmed: SubscribeURL {exc}"},
                            status_code=503)
    record.store(app.state.engine, verified, installation=app.state.installation,
                 soft_limit=app.state.settings.soft_bounce_limit, now=now)
    log.info("webhook source=%s outcome=confirmed %s", verified.source, verified.note)
    return JSONResponse({**record.Outcome().as_dict(), "confirmed": True})


def _refused(source: str, refused: reading.Refused) -> JSONResponse:
    log.info("webhook source=%s outcome=refused status=%d reason=%s", source, refused.status, refused.reason)
    headers = {"WWW-Authenticate": 'Basic realm="dispatch webhooks"'} if refused.status == 401 and \
        source == "postmark" else None
    return JSONResponse({"detail": refused.reason}, status_code=refused.status, headers=headers)


def _not_configured(source: str) -> JSONResponse:
    return JSONResponse({"detail": f"the {source} webhook is not configured here"}, status_code=404)
