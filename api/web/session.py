"""Who is signed in to the pages, and what protects their forms.

The platform token the user pasted at sign-in is kept in an HttpOnly, SameSite=Strict
cookie on /ui (Secure in production); each page sends it to the API as a bearer token,
and the API says who the user is (`GET /api/v1/me`). Forms that write carry an
`Idempotency-Key` drawn into the page, and every POST must come from the platform's own
origin (CSRF). The outcome of a form is told on the next page by a one-shot cookie
(Post/Redirect/Get)."""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from starlette.responses import Response

from api.web.client import ApiError, FieldMessage, PlatformClient
from core.settings import Environment, Settings
from domain.access import READERS, STAFF
from models.reference import Role

TOKEN_COOKIE = "zhida_ui_token"
FLASH_COOKIE = "zhida_ui_flash"
COOKIE_PATH = "/ui"
# A platform token is a few hundred characters; a provider's (RS256, with claims) may be
# a couple of thousand. A browser keeps at most about 4 KiB per cookie.
MAX_TOKEN_CHARS = 3800
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]+")
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9-]{8,64}")
_FLASH_BYTES = 3000


@dataclass(frozen=True)
class Viewer:
    """The signed-in user, as the API described them."""

    name: str
    role: Role
    department_code: str | None = None
    region_code: str | None = None
    enterprise_uscc: str | None = None

    @property
    def is_firm(self) -> bool:
        return self.role is Role.ENTERPRISE

    @property
    def is_staff(self) -> bool:
        """Has a unit's inbox and decides cases."""
        return self.role in STAFF

    @property
    def is_reader(self) -> bool:
        """Reads dashboards and case lists, within their scope."""
        return self.role in READERS


@dataclass(frozen=True)
class NavLink:
    href: str
    label: str
    key: str


def navigation(viewer: Viewer) -> list[NavLink]:
    """Only the pages the role can use."""
    if viewer.is_firm:
        return [
            NavLink("/ui/my/policies", "我的政策", "my-policies"),
            NavLink("/ui/my/cases", "我的案件", "my-cases"),
            NavLink("/ui/my/notices", "消息通知", "my-notices"),
        ]
    links: list[NavLink] = []
    if viewer.is_staff:
        links.append(NavLink("/ui/inbox", "待办案件", "inbox"))
    if viewer.is_reader:
        links += [
            NavLink("/ui/cases", "案件查询", "cases"),
            NavLink("/ui/batches", "认定批次", "batches"),
            NavLink("/ui/dashboard", "绩效看板", "dashboard"),
            NavLink("/ui/warnings", "预警", "warnings"),
            NavLink("/ui/time-to-money", "兑付时长", "time-to-money"),
            NavLink("/ui/bulletin", "亮晒比拼", "bulletin"),
            NavLink("/ui/policy-effect", "政策绩效", "policy-effect"),
        ]
    return links


def start_page(viewer: Viewer) -> str | None:
    """Where each role starts; None for a role with no page (operations)."""
    if viewer.is_firm:
        return "/ui/my/policies"
    if viewer.is_staff:
        return "/ui/inbox"
    if viewer.is_reader:
        return "/ui/dashboard"
    return None


def token_of(request: Request) -> str | None:
    token = request.cookies.get(TOKEN_COOKIE)
    return token if token and acceptable_token(token) else None


def acceptable_token(token: str) -> bool:
    """A token that can travel in a cookie and a header (JWTs are base64url and dots)."""
    return len(token) <= MAX_TOKEN_CHARS and _TOKEN.fullmatch(token) is not None


async def signed_in(request: Request) -> tuple[PlatformClient, Viewer]:
    """The API as the signed-in user, and who they are; a 401 when nobody is (the pages
    send them to sign in)."""
    token = token_of(request)
    if token is None:
        raise ApiError(401, "请先登录")
    api = PlatformClient(request, token)
    viewer = viewer_of(await api.get("/api/v1/me"))
    request.state.viewer = viewer
    request.state.names = await names_of(request, api)
    return api, viewer


@dataclass(frozen=True)
class Names:
    """Regions' and units' names by code, for pages that list codes (reference data,
    read through the API and kept for a few minutes per process)."""

    regions: dict[str, str] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    loaded_at: float = 0.0

    def region(self, code: str | None) -> str:
        return self.regions.get(code or "", code or "—")

    def unit(self, code: str | None) -> str:
        return self.units.get(code or "", code or "—")


NAMES_TTL_S = 300.0


async def names_of(request: Request, api: PlatformClient) -> Names:
    known: Names | None = getattr(request.app.state, "web_names", None)
    if known is not None and time.monotonic() - known.loaded_at < NAMES_TTL_S:
        return known
    regions = await api.get("/api/v1/regions")
    units = await api.get("/api/v1/departments")
    known = Names(
        regions={r["code"]: r["name"] for r in regions},
        units={d["code"]: d["name"] for d in units},
        loaded_at=time.monotonic(),
    )
    request.app.state.web_names = known
    return known


def viewer_of(me: dict[str, Any]) -> Viewer:
    return Viewer(
        name=str(me["name"]),
        role=Role(me["role"]),
        department_code=me.get("department_code"),
        region_code=me.get("region_code"),
        enterprise_uscc=me.get("enterprise_uscc"),
    )


def keep_token(response: Response, settings: Settings, token: str) -> None:
    response.set_cookie(
        TOKEN_COOKIE,
        token,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=settings.environment is Environment.PRODUCTION,
    )


def forget_token(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        TOKEN_COOKIE,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=settings.environment is Environment.PRODUCTION,
    )


def same_origin(request: Request) -> bool:
    """Whether a POST comes from a page of this very origin: its `Origin`, else its
    `Referer` (the pages send `Referrer-Policy: same-origin`, so the browser sends both
    to us). Neither, or `null`, is refused."""
    own = (request.url.scheme, request.headers.get("host", "").lower())
    origin = request.headers.get("origin")
    if origin is None:
        origin = request.headers.get("referer")
    if not origin or origin == "null":
        return False
    parts = urlsplit(origin)
    return (parts.scheme, parts.netloc.lower()) == own


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def idempotency_key(form_value: object) -> str | None:
    """The key the page drew into its form, when it is one we could have drawn."""
    if isinstance(form_value, str) and _IDEMPOTENCY_KEY.fullmatch(form_value):
        return form_value
    return None


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a page of ours, never another site."""
    if (
        target
        and target.startswith("/ui/")
        and not target.startswith("//")
        and "\\" not in target
        and all(ch.isprintable() for ch in target)
    ):
        return target
    return "/ui/"


@dataclass
class Flash:
    """What the last form did, shown once on the page it returned to."""

    kind: str  # "success" | "error"
    message: str
    errors: list[FieldMessage] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)  # what the user typed, to refill

    def field_errors(self, name: str) -> list[str]:
        return [e.message for e in self.errors if e.field == name or e.field.endswith(f".{name}")]


def set_flash(response: Response, settings: Settings, flash: Flash) -> None:
    errors = [{"field": e.field[:200], "message": e.message[:300]} for e in flash.errors[:20]]
    values = {k: v[:1000] for k, v in flash.values.items()}
    encoded = _encode(flash.kind, flash.message[:500], errors, values)
    while len(encoded) > _FLASH_BYTES and (errors or values):
        # A cookie holds about 4 KiB: what was typed goes first, then half the errors.
        values = {}
        errors = errors[: len(errors) // 2]
        encoded = _encode(flash.kind, flash.message[:500], errors, values)
    response.set_cookie(
        FLASH_COOKIE,
        encoded,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=settings.environment is Environment.PRODUCTION,
    )


def _encode(kind: str, message: str, errors: list[dict[str, str]], values: dict[str, str]) -> str:
    payload = {"k": kind, "m": message, "e": errors, "v": values}
    raw = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_flash(request: Request) -> Flash | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        errors = [FieldMessage(str(e["field"]), str(e["message"])) for e in data.get("e", [])]
        values = {str(k): str(v) for k, v in dict(data.get("v", {})).items()}
        kind = "success" if data.get("k") == "success" else "error"
        return Flash(kind, str(data.get("m", "")), errors, values)
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
        return None


def drop_flash(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        FLASH_COOKIE,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=settings.environment is Environment.PRODUCTION,
    )
