"""Path parameters validated before any handler runs (a bad one is a 422 naming it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator

from domain.uscc import validate_uscc

CreditCode = Annotated[
    str,
    Path(description="unified social credit code (统一社会信用代码), 18 characters"),
    AfterValidator(validate_uscc),
]
