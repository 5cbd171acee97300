"""Schemathesis hooks of the fuzz run (bench/fuzz_api.py loads this file by path).

A fuzzer draws `Idempotency-Key` values from a small space ("0", "a", ...) and sends
the same key with different requests, which the API rightly refuses (422 naming the
header) before it looks at anything else: most writes would never get further. A key
the API would accept is therefore replaced by a fresh UUID just before the call, as
schemathesis advises for values that must be unique; keys the API must refuse (empty,
too long, not printable ASCII) are sent as generated.
"""

from __future__ import annotations

import uuid
from typing import Any

import schemathesis

HEADER = "Idempotency-Key"
MAX_KEY = 255


def acceptable(key: object) -> bool:
    return (
        isinstance(key, str)
        and 1 <= len(key) <= MAX_KEY
        and key.isascii()
        and key.isprintable()
        and key.strip() == key
    )


@schemathesis.hook
def before_call(
    context: schemathesis.HookContext, case: schemathesis.Case[Any], kwargs: dict[str, Any]
) -> None:
    if case.headers and acceptable(case.headers.get(HEADER)):
        case.headers[HEADER] = str(uuid.uuid4())
