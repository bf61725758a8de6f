"""GET /metrics for Prometheus (dispatch/metrics.py), on the web app and on
`dispatch run --metrics-port`.

With DISPATCH_METRICS_TOKEN set, a scrape must carry it as a bearer token.
Without it, only a client on loopback may read the metrics, and only when
the request did not come through a proxy (a forwarded header is refused):
a TLS proxy on the same host would otherwise make every outside client a
loopback peer.
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from dispatch import metrics

FORWARDED_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


def trusted_client(request: Request) -> bool:
    """The metrics token as a bearer token, or (without a token set) a
    loopback peer with no forwarded header: who may read /metrics and the
    details of /readyz."""
    token = request.app.state.settings.metrics_token
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("utf-8", "replace"),
                                                                  token.get_secret_value().encode("utf-8"))
    if any(name in request.headers for name in FORWARDED_HEADERS):
        return False
    try:
        return ipaddress.ip_address(request.client.host if request.client else "").is_loopback
    except ValueError:
        return False


router = APIRouter(include_in_schema=False)


@router.get("/metrics")
def scrape(request: Request) -> Response:
    """A sync route: the queue is read from the database in the thread pool."""
    if not trusted_client(request):
        raise HTTPException(403, "metrics need DISPATCH_METRICS_TOKEN as a bearer token, or a loopback client")
    state = request.app.state
    registry = getattr(state, "metrics_registry", None)
    if registry is None:
        registry = state.metrics_registry = metrics.registry_for(state.engine)
    return Response(metrics.render(registry), media_type=metrics.CONTENT_TYPE,
                    headers={"Cache-Control": "no-store"})
