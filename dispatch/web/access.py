"""Every route declares who may use it: ``requires(Permission.X)`` on each
admin page and API endpoint, or its path in ``PUBLIC_PATHS`` (reader pages,
sign-in). ``undeclared_routes`` lists any route that does neither;
tests/test_roles.py fails on it, so a new route cannot forget its role."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials

from dispatch import admins, db
from dispatch.desk import audit, roles
from dispatch.desk.roles import Permission, Role
from dispatch.models import utcnow
from dispatch.web.security import _bearer, current_admin

# Reader-facing and sign-in routes: anyone may use them (their own signed
# links, CSRF and throttles guard them). Listed, never inferred.
PUBLIC_PATHS = frozenset({
    "/", "/subscribe", "/confirm/{token}", "/preferences/{token}", "/unsubscribe/{token}",
    "/resubscribe/{token}", "/admin/login", "/api/docs", "/api/openapi.json", "/docs/oauth2-redirect",
    # The archive and feeds decide access themselves (DISPATCH_ARCHIVE: a
    # reader's signed link or cookie, public, or off; a signed-in admin sees all).
    "/archive", "/archive/{sitrep_id}", "/view/{token}", "/feeds/sitreps.atom", "/feeds/reader/{token}.atom",
    # Probes for load balancers and orchestrators; /metrics wants its bearer
    # token (DISPATCH_METRICS_TOKEN) or a loopback client.
    "/healthz", "/readyz", "/metrics",
    # Mail providers' bounce and complaint webhooks: each request proves
    # itself by the provider's signature, or Postmark's basic auth
    # (dispatch.web.provider_webhooks); a provider not configured answers 404.
    "/webhooks/ses", "/webhooks/sendgrid", "/webhooks/mailgun", "/webhooks/postmark",
})


@dataclass(frozen=True)
class Principal:
    kind: str  # user | token
    name: str
    role: Role


def principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
    """Who is asking: the API token of an /api request, else the signed-in admin."""
    if request.url.path.startswith("/api/"):
        if credentials is not None and credentials.scheme.lower() == "bearer":
            with db.session_scope(request.app.state.engine) as session:
                token = admins.find_token(session, credentials.credentials)
                if token is not None:
                    token.last_used_at = utcnow()
                    return Principal("token", token.name, Role(token.role))
        raise HTTPException(401, "a valid API token is required (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})
    admin = current_admin(request)
    request.state.admin = admin
    return Principal("user", admin.username, Role(admin.role))


def requires(permission: Permission):
    """A route dependency: 403 unless the asker's role holds ``permission``.
    Async on purpose: it runs in the request's own context, so the actor it
    sets is the one every later flush of this request records."""
    async def role_required(request: Request, who: Principal = Depends(principal)) -> Principal:
        reason = roles.refusal(who.role, permission)
        if reason is not None:
            raise HTTPException(403, reason)
        audit.set_actor(audit.Actor(who.kind, who.name))
        request.state.principal = who
        return who

    role_required.permission = permission
    return Depends(role_required)


def declared_permissions(route) -> set[Permission]:
    """The permissions a route's dependencies require (searched through the whole tree)."""
    found: set[Permission] = set()
    stack = list(getattr(getattr(route, "dependant", None), "dependencies", []))
    while stack:
        dep = stack.pop()
        permission = getattr(dep.call, "permission", None)
        if isinstance(permission, Permission):
            found.add(permission)
        stack.extend(dep.dependencies)
    return found


def all_routes(app) -> list:
    """Every route the app answers, included routers flattened (FastAPI ≥ 0.16x
    keeps an included router as one entry of ``app.routes``; older ones
    copy its routes in)."""
    found, stack = [], list(reversed(app.routes))
    while stack:
        route = stack.pop()
        expand = getattr(route, "effective_candidates", None)
        if callable(expand):
            stack.extend(reversed(expand()))
        else:
            found.append(route)
    return found


def undeclared_routes(app) -> list[str]:
    """Routes that neither require a permission nor are listed as public."""
    missing = []
    for route in all_routes(app):
        path = getattr(route, "path", "")
        if path in PUBLIC_PATHS:
            continue
        if not declared_permissions(route):
            missing.append(f"{','.join(sorted(getattr(route, 'methods', None) or ['*']))} {path}")
    return missing
