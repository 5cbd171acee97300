"""Money: integer fen (分) everywhere, never a float.

One bound for every amount the platform stores or computes: 10^15 fen (ten trillion
yuan) fits PostgreSQL `bigint` and numpy int64 with room for sums of many thousands of
amounts, and is far beyond any subsidy, quota or company figure a city handles.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

MAX_FEN = 10**15

Fen = Annotated[
    int,
    Field(
        ge=0,
        le=MAX_FEN,
        strict=True,
        description="an amount in fen (分, 1/100 yuan), a whole number from 0 to 10^15",
        examples=[5_000_000],
    ),
]
PositiveFen = Annotated[
    int,
    Field(
        ge=1,
        le=MAX_FEN,
        strict=True,
        description="an amount in fen (分, 1/100 yuan), a whole number from 1 to 10^15",
        examples=[5_000_000],
    ),
]


def format_yuan(fen: int) -> str:
    """Display form of an amount in fen, e.g. 1234567 -> '12,345.67元'."""
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}{yuan:,}.{cents:02d}元"


def yuan_text(fen: int | None) -> str | None:
    """`format_yuan` for optional amounts: the text people read beside `*_fen` fields."""
    return None if fen is None else format_yuan(fen)
