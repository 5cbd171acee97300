"""Amount rules (奖补金额): fixed, rate × fact with floor and cap, or tiers.

Every result is integer fen. A rate is a decimal; the product is rounded to whole
fen with the rule's stated rounding (default: half up, as 四舍五入).

Every amount a rule names is `Fen` (0 to MAX_FEN), every tier threshold lies in its
fact's range, and a rate rule that could pay more than MAX_FEN (rate × the largest
value its fact may take) must state a `cap_fen`: no rule can produce an amount
outside 0..MAX_FEN.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, ROUND_UP, Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from domain.engine.rules import InvalidRule, KnownFact, RuleError, format_path
from models.facts import FACT_KINDS, FactType, fact_range
from models.money import MAX_FEN, Fen, format_yuan


class Rounding(enum.StrEnum):
    HALF_UP = "half_up"
    HALF_EVEN = "half_even"
    DOWN = "down"
    UP = "up"


_DECIMAL_ROUNDING = {
    Rounding.HALF_UP: ROUND_HALF_UP,
    Rounding.HALF_EVEN: ROUND_HALF_EVEN,
    Rounding.DOWN: ROUND_DOWN,
    Rounding.UP: ROUND_UP,
}


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _numeric_fact(fact: str) -> str:
    kind = FACT_KINDS.get(fact)
    if kind is None:
        raise ValueError(f"unknown fact '{fact}'")
    if kind.type is not FactType.INT:
        raise ValueError(f"fact '{fact}' is not numeric")
    return fact


class FixedAmount(_Rule):
    kind: Literal["fixed"]
    amount_fen: Fen


class RateAmount(_Rule):
    """rate × fact, then clamped to [floor_fen, cap_fen]."""

    kind: Literal["rate"]
    fact: str
    rate: Decimal = Field(gt=0, le=1_000_000, max_digits=20, decimal_places=10)
    floor_fen: Fen | None = None
    cap_fen: Fen | None = None
    rounding: Rounding = Rounding.HALF_UP

    @model_validator(mode="after")
    def _check(self) -> RateAmount:
        _numeric_fact(self.fact)
        floor, cap = self.floor_fen, self.cap_fen
        if floor is not None and cap is not None and floor > cap:
            raise ValueError("floor_fen must not exceed cap_fen")
        _low, high = fact_range(FACT_KINDS[self.fact])
        if cap is None and high * self.rate > MAX_FEN:
            raise ValueError(
                f"cap_fen is required: rate × the largest {self.fact} ({high:,}) "
                f"could exceed {MAX_FEN:,} fen"
            )
        return self


MAX_TIERS = 50


class Tier(_Rule):
    at_least: int = Field(strict=True)
    amount_fen: Fen


class TieredAmount(_Rule):
    """The amount of the highest tier whose threshold the fact reaches; none below all."""

    kind: Literal["tiers"]
    fact: str
    tiers: list[Tier] = Field(min_length=1, max_length=MAX_TIERS)

    @model_validator(mode="after")
    def _check(self) -> TieredAmount:
        _numeric_fact(self.fact)
        thresholds = [t.at_least for t in self.tiers]
        if thresholds != sorted(set(thresholds)):
            raise ValueError("tiers must have strictly increasing at_least")
        low, high = fact_range(FACT_KINDS[self.fact])
        for threshold in thresholds:
            if not low <= threshold <= high:
                raise ValueError(f"at_least for '{self.fact}' must be between {low:,} and {high:,}")
        return self


AmountRule = Annotated[FixedAmount | RateAmount | TieredAmount, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[AmountRule] = TypeAdapter(AmountRule)


def parse_amount_rule(raw: object, root: str = "amount_rule") -> AmountRule:
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise InvalidRule(
            [
                RuleError(
                    format_path(_without_tag(e["loc"]), root),
                    str(e["msg"]).removeprefix("Value error, "),
                )
                for e in exc.errors()
            ]
        ) from None


def _without_tag(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    return loc[1:] if loc and loc[0] in {"fixed", "rate", "tiers"} else loc


def amount_rule_to_json(rule: AmountRule) -> object:
    return _ADAPTER.dump_python(rule, mode="json", exclude_none=True)


@dataclass(frozen=True)
class AmountResult:
    amount_fen: int | None
    explanation: str


def amount_fen_of(rule: AmountRule, facts: Mapping[str, KnownFact]) -> int | None:
    """The amount `compute_amount` gives, without its explanation (the one-firm hot path)."""
    if isinstance(rule, FixedAmount):
        return rule.amount_fen
    known = facts.get(rule.fact)
    if known is None or known.invalid is not None:
        return None
    if isinstance(known.value, bool) or not isinstance(known.value, int):
        return None
    if isinstance(rule, RateAmount):
        return _bounded(rule, _rated(rule, known.value))
    tier = _tier_reached(rule, known.value)
    return 0 if tier is None else tier.amount_fen


def _rated(rule: RateAmount, base: int) -> int:
    raw = (Decimal(base) * rule.rate).quantize(Decimal(1), _DECIMAL_ROUNDING[rule.rounding])
    return max(int(raw), 0)


def _bounded(rule: RateAmount, amount: int) -> int:
    if rule.floor_fen is not None and amount < rule.floor_fen:
        amount = rule.floor_fen
    if rule.cap_fen is not None and amount > rule.cap_fen:
        amount = rule.cap_fen
    return min(amount, MAX_FEN)  # the bound holds by validation


def _tier_reached(rule: TieredAmount, base: int) -> Tier | None:
    reached = [t for t in rule.tiers if base >= t.at_least]
    return reached[-1] if reached else None


def compute_amount(rule: AmountRule, facts: Mapping[str, KnownFact]) -> AmountResult:
    if isinstance(rule, FixedAmount):
        return AmountResult(rule.amount_fen, f"定额 {format_yuan(rule.amount_fen)}")
    known = facts.get(rule.fact)
    label = FACT_KINDS[rule.fact].label
    if known is not None and known.invalid is not None:
        return AmountResult(None, f"{label}数据无效（{known.invalid}），无法计算金额")
    if known is None or isinstance(known.value, bool) or not isinstance(known.value, int):
        return AmountResult(None, f"缺少{label}，无法计算金额")
    base = known.value
    shown = format_quantity(rule.fact, base)
    if isinstance(rule, RateAmount):
        rated = _rated(rule, base)
        amount = _bounded(rule, rated)
        per = FACT_KINDS[rule.fact].unit or "单位"
        each = format_yuan(int(rule.rate)) if rule.rate == int(rule.rate) else f"{rule.rate}分"
        note = f"{label} {shown} × 每{per} {each} = {format_yuan(rated)}"
        if FACT_KINDS[rule.fact].unit == "分":
            note = f"{label} {shown} × {rule.rate} = {format_yuan(rated)}"
        floored = rated
        if rule.floor_fen is not None and rated < rule.floor_fen:
            floored = rule.floor_fen
            note += f"，按下限 {format_yuan(floored)}"
        if rule.cap_fen is not None and floored > rule.cap_fen:
            note += f"，按上限 {format_yuan(rule.cap_fen)}"
        return AmountResult(amount, note)
    tier = _tier_reached(rule, base)
    if tier is None:
        return AmountResult(0, f"{label} 未达到最低档")
    threshold = format_quantity(rule.fact, tier.at_least)
    return AmountResult(
        tier.amount_fen, f"{label} {shown} ≥ {threshold}，{format_yuan(tier.amount_fen)}"
    )


def format_quantity(fact: str, value: int) -> str:
    unit = FACT_KINDS[fact].unit
    if unit.startswith("分"):
        return format_yuan(value) + unit[1:]
    return f"{value}{unit}"
