"""`Idempotency-Key` on every write, after the IETF draft "The Idempotency-Key HTTP Header
Field" and Stripe's documented behaviour.

- A key belongs to the request that first sent it: the user, the method, the path and
  query, and a SHA-256 of the body (the fingerprint). The same request again gets the
  first answer replayed, status and body, marked `Idempotent-Replayed: true`, and is not
  executed again. Anything else under that key (another body, endpoint or user) is a 422
  naming the header, and nothing is executed; while the first request still runs, a 409.
- Records are kept in the database for 24 hours, since the API runs as several
  processes. Answers a client should retry (5xx, 401, 408, 409, 425, 429) are not kept,
  so the same request sent again runs again.
- A running request holds a lease on its key, renewed while it runs; when the process
  dies the lease runs out and the next identical request takes the key over.
- A route that sends a Temporal update uses `IdempotencyKey`, a hash of the bound key,
  as the update id: a retry that follows a crash between the update and the stored
  answer is still deduplicated by Temporal, and two users' equal keys never meet.

No package did this: those on PyPI keep keys in memory or Redis, or scope them per
caller with no 422 for another user, keep 409s, or dedupe writes sent without a key.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Literal

import sqlalchemy as sa
import structlog
from fastapi import Depends, Header, Request
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import audit_trail
from api.deps import CurrentUser, verified_user_name
from api.errors import problem
from models.audit import AuditEvent
from models.idempotency import IdempotencyRecord
from models.types import utcnow

log = structlog.get_logger()

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
KEY_PATTERN = r"^[ -~]+$"  # printable ASCII, as an RFC 8941 sf-string allows
KEPT_FOR = timedelta(hours=24)
LEASE = timedelta(seconds=60)
RENEW_EVERY_S = 15.0
PURGE_EVERY_S = 600.0
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NOT_KEPT = frozenset({401, 408, 409, 425, 429})  # and every status from 500 on
_UNSTORED_HEADERS = frozenset({b"content-length", b"set-cookie", b"transfer-encoding"})
_STATE = "idempotency"
_DB_ERRORS = (SQLAlchemyError, OSError, TimeoutError)

DESCRIPTION = (
    "Makes a retried write safe. At most 255 printable ASCII characters (a UUID, say). "
    "The key is bound to the user, the method, the path and query, and a SHA-256 of the "
    "body: the same request sent again within 24 hours gets the first response replayed "
    "(with `Idempotent-Replayed: true`) and is not applied twice; the same key with another "
    "user, endpoint or body is a 422 naming this header and nothing is applied; while the "
    "first request still runs, a 409. Responses 5xx, 401, 408, 409, 425 and 429 are not "
    "kept, so sending the same request again runs it again."
)


@dataclass(frozen=True)
class BoundKey:
    """An `Idempotency-Key` with the request it was sent with."""

    key: str
    user: str
    method: str
    path: str
    fingerprint: str

    @property
    def update_id(self) -> str:
        """The Temporal update id of this request: the key and everything it is bound to."""
        return f"idem-{_digest(self.fingerprint.encode(), self.key.encode())}"


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:  # length-prefixed, so no two different lists hash alike
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def bind(key: str, user: str, method: str, path: str, query: str, body: bytes) -> BoundKey:
    fingerprint = _digest(
        user.encode(),
        method.encode(),
        path.encode(),
        query.encode(),
        hashlib.sha256(body).digest(),
    )
    return BoundKey(key, user, method, path, fingerprint)


def key_error(values: list[str]) -> str | None:
    """Why these `Idempotency-Key` header values cannot be used, in the user's words."""
    if len(values) > 1:
        return "只能发送一个"
    key = values[0]
    if not key:
        return "不能为空"
    if len(key) > MAX_KEY_LENGTH:
        return f"最长 {MAX_KEY_LENGTH} 个字符，收到 {len(key)} 个"
    if any(not " " <= c <= "~" for c in key):
        return "只能包含可打印的 ASCII 字符"
    return None


# ----- the store: one short transaction per step, never held while the route runs -----


Sessions = async_sessionmaker[AsyncSession]


async def _claim(
    sessions: Sessions, bound: BoundKey, holder: str
) -> IdempotencyRecord | Literal["claimed", "busy"]:
    """Take the key for this attempt ("claimed"), or return the record that holds it."""
    record = IdempotencyRecord
    for _ in range(3):
        now = utcnow()
        values = {
            "fingerprint": bound.fingerprint,
            "user_name": bound.user,
            "method": bound.method,
            "path": bound.path,
            "holder": holder,
            "locked_until": now + LEASE,
            "status_code": None,
            "response_headers": None,
            "response_body": None,
            "created_at": now,
            "expires_at": now + KEPT_FOR,
        }
        async with sessions() as session:
            try:
                await session.execute(sa.insert(record).values(key=bound.key, **values))
                await session.commit()
                return "claimed"
            except IntegrityError:
                await session.rollback()
            # An expired key is new again; a running one whose lease ran out lost its
            # process, and the same request may take it over.
            taken = await session.execute(
                sa.update(record)
                .where(
                    col(record.key) == bound.key,
                    sa.or_(
                        col(record.expires_at) <= now,
                        sa.and_(
                            col(record.status_code).is_(None),
                            col(record.locked_until) <= now,
                            col(record.fingerprint) == bound.fingerprint,
                        ),
                    ),
                )
                .values(**values)
            )
            if _rowcount(taken) == 1:
                await session.commit()
                log.info("idempotency.taken_over", user=bound.user, path=bound.path)
                return "claimed"
            found = await session.get(IdempotencyRecord, bound.key)
            await session.commit()
            if found is not None:
                return found
    return "busy"  # released and claimed again under our feet each time: try later


async def _renew(sessions: Sessions, key: str, holder: str) -> bool:
    async with sessions.begin() as session:
        result = await session.execute(
            sa.update(IdempotencyRecord)
            .where(
                col(IdempotencyRecord.key) == key,
                col(IdempotencyRecord.holder) == holder,
                col(IdempotencyRecord.status_code).is_(None),
            )
            .values(locked_until=utcnow() + LEASE)
        )
        return _rowcount(result) == 1


async def _complete(
    sessions: Sessions,
    key: str,
    holder: str,
    status: int,
    headers: list[list[str]],
    body: bytes,
    also: AuditEvent | None = None,
) -> bool:
    """Keep the answer of the key's request, with its audit row (`also`) if given."""
    async with sessions.begin() as session:
        if also is not None:
            session.add(also)
        result = await session.execute(
            sa.update(IdempotencyRecord)
            .where(
                col(IdempotencyRecord.key) == key,
                col(IdempotencyRecord.holder) == holder,
                col(IdempotencyRecord.status_code).is_(None),
            )
            .values(
                status_code=status,
                response_headers=headers,
                response_body=body,
                holder=None,
                locked_until=None,
            )
        )
        return _rowcount(result) == 1


async def _release(
    sessions: Sessions, key: str, holder: str, also: AuditEvent | None = None
) -> None:
    """Give the key up for the request to be sent again, with its audit row (`also`)."""
    async with sessions.begin() as session:
        if also is not None:
            session.add(also)
        await session.execute(
            sa.delete(IdempotencyRecord).where(
                col(IdempotencyRecord.key) == key,
                col(IdempotencyRecord.holder) == holder,
                col(IdempotencyRecord.status_code).is_(None),
            )
        )


async def purge_expired(sessions: Sessions, now: datetime) -> int:
    async with sessions.begin() as session:
        result = await session.execute(
            sa.delete(IdempotencyRecord).where(col(IdempotencyRecord.expires_at) <= now)
        )
        return _rowcount(result)


def _rowcount(result: object) -> int:
    count: int = getattr(result, "rowcount", 0)
    return count


# ----- the middleware -------------------------------------------------------------------


class IdempotencyMiddleware:
    """Binds, replays or refuses each write that carries an `Idempotency-Key`. It sees the
    final status and body, after the app's error handlers; install it inside any limit on
    body size, since it holds the body to hash it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._purged_at = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITES:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        keys = headers.getlist(HEADER)
        if not keys:
            await self.app(scope, receive, send)
            return
        error = key_error(keys)
        if error is not None:
            await _invalid_key(error)(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client went away before sending its request
        bound = bind(
            keys[0],
            await _user(scope, headers),
            scope["method"],
            scope.get("root_path", "") + scope["path"],
            scope.get("query_string", b"").decode("latin-1"),
            body,
        )
        # The claim comes before the work, so it fails fast with the request's own
        # pool (a 503 to retry); what follows the work (lease, answer) has a pool of its
        # own that waits, so that a write done keeps its record (api/main.py).
        holder = secrets.token_hex(16)
        try:
            found = await _claim(scope["app"].state.sessionmaker, bound, holder)
        except _DB_ERRORS as exc:
            log.error("idempotency.store_unavailable", error=str(exc))
            await _store_unavailable()(scope, receive, send)
            return
        if found != "claimed":
            await _answer_holder(found, bound)(scope, receive, send)
            return
        scope.setdefault("state", {})[_STATE] = bound
        sessions: Sessions = scope["app"].state.bookkeeping
        await self._run(scope, _replay_body(body, receive), send, sessions, bound, holder)

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        sessions: Sessions,
        bound: BoundKey,
        holder: str,
    ) -> None:
        starts: list[Message] = []
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                starts.append(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        lease = asyncio.create_task(_keep_lease(sessions, bound, holder))
        try:
            await self.app(scope, receive, capture)
        except BaseException:
            lease.cancel()
            await _release_quietly(sessions, bound, holder)
            raise
        lease.cancel()
        if not starts:
            await _release_quietly(sessions, bound, holder)
            return
        started = starts[0]
        status: int = started["status"]
        body = b"".join(chunks)
        # The request's audit row goes in the same transaction: one fewer per write.
        event = await audit_trail.event_of(scope, status)
        try:
            if status >= 500 or status in NOT_KEPT:
                await _release(sessions, bound.key, holder, also=event)
            else:
                kept = [
                    [name.decode("latin-1"), value.decode("latin-1")]
                    for name, value in started.get("headers", [])
                    if name.lower() not in _UNSTORED_HEADERS
                ]
                if not await _complete(sessions, bound.key, holder, status, kept, body, also=event):
                    log.warning("idempotency.lease_lost", user=bound.user, path=bound.path)
            if event is not None:
                audit_trail.recorded(scope)
            await self._purge(sessions)
        except _DB_ERRORS as exc:
            # The answer stands; without a record a retry after the lease runs again
            # (and a Temporal update is deduplicated by its id).
            log.error("idempotency.store_failed", error=str(exc), path=bound.path)
        await send(started)
        await send({"type": "http.response.body", "body": body})

    async def _purge(self, sessions: Sessions) -> None:
        if time.monotonic() - self._purged_at < PURGE_EVERY_S:
            return
        self._purged_at = time.monotonic()
        purged = await purge_expired(sessions, utcnow())
        if purged:
            log.info("idempotency.purged", records=purged)


async def _user(scope: Scope, headers: Headers) -> str:
    """The user the bearer token names, verified (a stored answer is replayed without the
    route running, so a name must never be taken on trust); "" for none or an invalid
    one (the route then answers 401, which is not kept)."""
    return await verified_user_name(scope["app"].state, headers.get("authorization"))


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay_body(body: bytes, receive: Receive) -> Receive:
    """The body once for the app, then the client's own messages (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _keep_lease(sessions: Sessions, bound: BoundKey, holder: str) -> None:
    while True:
        await asyncio.sleep(RENEW_EVERY_S)
        try:
            if not await _renew(sessions, bound.key, holder):
                log.warning("idempotency.lease_lost", user=bound.user, path=bound.path)
                return
        except _DB_ERRORS as exc:
            log.warning("idempotency.renew_failed", error=str(exc), path=bound.path)


async def _release_quietly(sessions: Sessions, bound: BoundKey, holder: str) -> None:
    try:
        await _release(sessions, bound.key, holder)
    except _DB_ERRORS as exc:  # the lease runs out by itself
        log.error("idempotency.release_failed", error=str(exc), path=bound.path)


def _answer_holder(found: IdempotencyRecord | Literal["busy"], bound: BoundKey) -> Response:
    """The answer when another request holds the key: its stored response, or a refusal."""
    if found != "busy" and found.fingerprint != bound.fingerprint:
        log.info("idempotency.key_reused", user=bound.user, path=bound.path)
        return problem(
            422,
            "输入无效",
            f"{HEADER}: 已用于另一个请求（用户、接口或请求内容不同）；本次请求未执行，"
            "新的请求请使用新的键",
            "idempotency_key_reused",
            [{"field": HEADER, "message": "已用于另一个请求"}],
        )
    if found == "busy" or found.status_code is None:
        response = problem(
            409,
            "与当前状态冲突",
            f"{HEADER}: 使用这个键的请求仍在处理中；请稍后用同一个键重试",
            "idempotency_key_in_progress",
            [{"field": HEADER, "message": "请求仍在处理中"}],
        )
        response.headers.setdefault("Retry-After", "1")
        return response
    log.info("idempotency.replayed", user=bound.user, path=bound.path)
    replay = Response(content=found.response_body or b"", status_code=found.status_code)
    replay.raw_headers.extend(
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in found.response_headers or []
    )
    replay.headers[REPLAYED] = "true"
    return replay


def _invalid_key(message: str) -> Response:
    return problem(
        422,
        "输入无效",
        f"{HEADER}: {message}",
        "invalid_input",
        [{"field": HEADER, "message": message}],
    )


def _store_unavailable() -> Response:
    response = problem(
        503,
        "服务暂不可用",
        f"暂时无法记录 {HEADER}，请求未执行；请稍后用同一个键重试",
        "unavailable",
    )
    response.headers.setdefault("Retry-After", "2")
    return response


# ----- the route side -------------------------------------------------------------------


async def idempotency_key(
    request: Request,
    user: CurrentUser,
    key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            min_length=1,
            max_length=MAX_KEY_LENGTH,
            pattern=KEY_PATTERN,
            description=DESCRIPTION,
        ),
    ] = None,
) -> str | None:
    """The id under which this request sends a Temporal update: derived from the key, the
    user, the endpoint and the body; None when the request carries no key."""
    if key is None:
        return None
    bound = request.scope.get("state", {}).get(_STATE)
    if not isinstance(bound, BoundKey) or bound.user != user.name:
        raise RuntimeError("IdempotencyMiddleware is not installed")
    return bound.update_id


IdempotencyKey = Annotated[str | None, Depends(idempotency_key)]
