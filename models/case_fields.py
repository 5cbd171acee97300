"""Fields that the payloads of every case kind share: a firm's materials, a reason, a
period."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, StringConstraints
from pydantic import Field as PydanticField

MAX_MATERIALS_BYTES = 64 * 1024


def _materials_size(materials: dict[str, str]) -> dict[str, str]:
    size = sum(len(k.encode()) + len(v.encode()) for k, v in materials.items())
    if size > MAX_MATERIALS_BYTES:
        raise ValueError(f"materials take {size} bytes; at most {MAX_MATERIALS_BYTES}")
    return materials


Materials = Annotated[
    dict[
        Annotated[str, StringConstraints(min_length=1, max_length=64)],
        Annotated[str, StringConstraints(max_length=4000)],
    ],
    PydanticField(
        max_length=50,
        description="what the firm submits: up to 50 named texts (e.g. file references), "
        "keys up to 64 characters, values up to 4,000, 64 KiB in all",
        examples=[{"invoice_list": "发票清单-2026-001.pdf", "contact": "张三 0572-1234567"}],
    ),
    AfterValidator(_materials_size),
]
Reason = Annotated[str, StringConstraints(max_length=2000)]
PERIOD_PATTERN = r"^(\d{4}(-(Q[1-4]|0[1-9]|1[0-2]))?|once)$"

__all__ = ["MAX_MATERIALS_BYTES", "PERIOD_PATTERN", "Materials", "Reason"]
