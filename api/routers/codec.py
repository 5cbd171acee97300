"""The codec server: the Temporal UI sends the encrypted payloads it shows here and gets
them back decoded (and encodes what an operator types, e.g. a signal's input), so ops
see a case's payloads in the UI while Temporal itself stores only ciphertext.

The UI speaks the protobuf JSON of `Payloads` (`{"payloads": [{"metadata": {...},
"data": "..."}]}`, bytes in base64) and sends `X-Namespace`; browsers reach it across
origins, so the app's CORS policy names the UI's origin (settings.cors_origins). Who may
call it: Rule.OPS (api/access.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from google.protobuf import json_format
from pydantic import BaseModel, ConfigDict, Field
from temporalio.api.common.v1 import Payloads

from api.access import access
from core.codec import CodecError, EncryptionCodec
from domain.access import Rule
from domain.errors import FieldError, InvalidInput

router = APIRouter(prefix="/codec", tags=["ops"])

MAX_PAYLOADS = 1000


class PayloadsBody(BaseModel):
    """`temporal.api.common.v1.Payloads` in protobuf JSON."""

    model_config = ConfigDict(extra="forbid")

    payloads: list[dict[str, Any]] = Field(max_length=MAX_PAYLOADS)


def _codec(request: Request) -> EncryptionCodec:
    codec: EncryptionCodec = request.app.state.codec
    return codec


def _parse(body: PayloadsBody) -> Payloads:
    try:
        return json_format.ParseDict(body.model_dump(), Payloads())
    except json_format.ParseError as exc:
        raise InvalidInput.field("payloads", f"不是有效的 Payloads：{exc}") from None


def _render(payloads: Payloads) -> dict[str, Any]:
    rendered: dict[str, Any] = json_format.MessageToDict(payloads)
    rendered.setdefault("payloads", [])
    return rendered


@router.post(
    "/decode",
    summary="解码 Temporal 载荷（供 Temporal UI 使用）",
    **access(Rule.OPS),
)
async def decode(body: PayloadsBody, request: Request) -> dict[str, Any]:
    codec = _codec(request)
    payloads = _parse(body)
    errors = []
    out = Payloads()
    for index, payload in enumerate(payloads.payloads):
        try:
            out.payloads.append(codec.decrypt(payload))
        except CodecError as exc:
            errors.append(FieldError(f"payloads[{index}]", str(exc)))
    if errors:
        raise InvalidInput("; ".join(f"{e.field}: {e.message}" for e in errors), errors)
    return _render(out)


@router.post(
    "/encode",
    summary="加密 Temporal 载荷（供 Temporal UI 使用）",
    **access(Rule.OPS),
)
async def encode(body: PayloadsBody, request: Request) -> dict[str, Any]:
    codec = _codec(request)
    payloads = _parse(body)
    return _render(Payloads(payloads=await codec.encode(payloads.payloads)))
