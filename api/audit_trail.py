"""The audit trail of requests: every write request (POST, PUT, PATCH, DELETE under
/api/) leaves one `audit_event` row, whatever its outcome, with who sent it, from where
and what it was about (domain/audit/trail.py). Routes say what a request is about with
`about(request, subject)`; the access check leaves the signed-in user on the request.

The row is written after the response, in a transaction of its own: a request that
failed is logged too. A request with an `Idempotency-Key` has it written with the key's
answer, in the same transaction, before the response (api/idempotency.py): on SQLite
every transaction queues for the one write lock, and this is one fewer per write.
Sensitive reads and exports are logged by their routes instead, inside the request's
transaction, so that one that cannot be logged is not served.
"""

from __future__ import annotations

import structlog
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import verified_user_name
from api.errors import correlation_id
from domain.audit import trail
from models.audit import AuditEvent, AuditKind
from models.reference import Actor

log = structlog.get_logger()

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ACTOR = "audit_actor"
SUBJECT = "audit_subject"
DETAILS = "audit_details"
RECORDED = "audit_recorded"
_CASE_PARAMS = ("category", "item_code", "period", "uscc")


def signed_in(request: Request, actor: Actor) -> None:
    request.state.audit_actor = actor


def about(request: Request, subject: str, details: dict[str, object] | None = None) -> None:
    """What the request is about (a case id, `user/NAME`), and what the trail should keep
    of it beyond method and path (a reason given)."""
    request.state.audit_subject = subject
    if details is not None:
        request.state.audit_details = details


def origin(request: Request) -> trail.Origin:
    return trail.Origin(
        method=request.method,
        path=request.url.path,
        correlation_id=correlation_id.get() or "-",
        client=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )


class AuditTrailMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in WRITES
            or not scope["path"].startswith("/api/")
        ):
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            await self._record(scope, status)

    async def _record(self, scope: Scope, status: int) -> None:
        if scope.get("state", {}).get(RECORDED):
            return  # written with the Idempotency-Key's answer (api/idempotency.py)
        event = await event_of(scope, status)
        if event is None:
            return
        try:
            async with scope["app"].state.bookkeeping.begin() as session:
                session.add(event)
        except Exception as exc:  # the response is gone; say loudly that the row is missing
            log.error("audit.write_not_logged", path=scope["path"], status=status, error=str(exc))


async def event_of(scope: Scope, status: int) -> AuditEvent | None:
    """The trail's row for a write request that ended with `status`; None for a request
    the trail does not keep, or whose row cannot be written (the database is down)."""
    if scope["method"] not in WRITES or not scope["path"].startswith("/api/"):
        return None
    state = scope.get("state", {})
    if state.get("unavailable") == "database":
        # The request failed because the database is down: the row cannot be written
        # either, and trying would hold the answer up by another connect timeout.
        log.error("audit.write_not_logged", path=scope["path"], reason="database down")
        return None
    actor: Actor | str | None = state.get(ACTOR)
    headers = Headers(scope=scope)
    if actor is None and "authorization" in headers:
        # Refused before the access check ran (415, 405, a body that cannot be
        # parsed...): the sender is still known, if the token is good.
        actor = await verified_user_name(scope["app"].state, headers["authorization"]) or None
    subject: str | None = state.get(SUBJECT) or _case_of(scope.get("path_params", {}))
    client = scope.get("client")
    where = trail.Origin(
        method=scope["method"],
        path=scope["path"],
        correlation_id=correlation_id.get() or "-",
        client=client[0] if client else None,
        user_agent=headers.get("user-agent"),
    )
    return trail.event(AuditKind.WRITE, actor, where, status, subject, state.get(DETAILS))


def recorded(scope: Scope) -> None:
    """Say that the request's row is written (with its Idempotency-Key's answer)."""
    scope.setdefault("state", {})[RECORDED] = True


def _case_of(params: dict[str, object]) -> str | None:
    if all(name in params for name in _CASE_PARAMS):
        return "/".join(str(params[name]) for name in _CASE_PARAMS)
    return None
