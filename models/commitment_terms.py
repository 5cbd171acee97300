"""A commitment item's terms (承诺类条款): the targets a firm commits to, how achieved
targets become the final amount, the prepayment, the letter firms sign, and the terms of
recovery. Kept apart from the case payloads (models/commitment.py) because the policy
library's item content carries them."""

from __future__ import annotations

import enum
import hashlib
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from pydantic import Field as PydanticField

from models.facts import FACT_KINDS, FactType
from models.money import Fen

MAX_TARGETS = 10


def letter_hash(text: str) -> str:
    """The SHA-256 of a commitment letter's text (UTF-8): what a signature signs."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


DEFAULT_LETTER = (
    "本企业自愿申请本政策事项的事中预付资金，并郑重承诺：\n"
    "一、所填报的项目信息和承诺指标真实、准确、完整；\n"
    "二、在承诺的完成日期前完成项目建设并达到承诺指标，按时提交完工材料；\n"
    "三、未达到承诺指标的，按照政策规定的结算规则核定最终奖补金额，"
    "已预付金额超过最终金额的部分在规定期限内全额退回，逾期按日计收资金占用费；\n"
    "四、未按期退回的，同意从本企业此后应得的各类财政奖补资金中抵扣，"
    "并同意将违约情况记入企业信用记录。"
)


# ----- the item's terms ---------------------------------------------------------------


class CommitmentTarget(BaseModel):
    """One target a firm commits to: a numeric fact (e.g. revenue_fen, tax_paid_fen,
    social_security_headcount, renovation_investment_fen), weighed in the settlement."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fact: str = PydanticField(description="a numeric fact kind, e.g. renovation_investment_fen")
    weight: int = PydanticField(default=1, ge=1, le=100)

    @field_validator("fact")
    @classmethod
    def _numeric_fact(cls, value: str) -> str:
        kind = FACT_KINDS.get(value)
        if kind is None or kind.type is not FactType.INT:
            raise ValueError(f"'{value}' is not a numeric fact")
        return value

    @property
    def label(self) -> str:
        return FACT_KINDS[self.fact].label


class SettlementMethod(enum.StrEnum):
    # The final amount follows the achieved share (capped at the committed amount).
    PROPORTIONAL = "proportional"
    # At or above the threshold the committed amount in full, below it nothing.
    ALL_OR_NOTHING = "all_or_nothing"


class SettlementRule(BaseModel):
    """How achieved targets become the final amount (see domain/commitment/settlement.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: SettlementMethod = SettlementMethod.PROPORTIONAL
    threshold_pct: int = PydanticField(
        default=60,
        ge=0,
        le=100,
        description="below this achieved share (percent) the final amount is nothing",
    )
    combine: Literal["weighted", "min"] = PydanticField(
        default="weighted",
        description="weighted: the targets' shares averaged by weight; min: the lowest share",
    )


class CommitmentTerms(BaseModel):
    """How a commitment item's cases run (set on the item version)."""

    model_config = ConfigDict(extra="forbid")

    targets: list[CommitmentTarget] = PydanticField(min_length=1, max_length=MAX_TARGETS)
    settlement: SettlementRule = PydanticField(default_factory=SettlementRule)
    prepaid_pct: int = PydanticField(
        default=50, ge=0, le=100, description="share of the committed amount prepaid (事中预付)"
    )
    prepaid_cap_fen: Fen | None = PydanticField(default=None, description="the prepayment's cap")
    letter: str = PydanticField(
        default=DEFAULT_LETTER,
        min_length=20,
        max_length=20_000,
        description="the commitment letter (承诺书) firms sign; its SHA-256 is what they sign",
    )
    reminder_days: list[int] = PydanticField(
        default_factory=lambda: [30, 7],
        max_length=5,
        description="days before the completion date at which the firm is reminded",
    )
    max_project_days: int = PydanticField(
        default=1095,
        ge=30,
        le=1830,
        description="the latest completion date, in days after applying",
    )
    completion_grace_days: int = PydanticField(
        default=30, ge=0, le=365, description="days after the completion date to submit"
    )
    max_extension_days: int = PydanticField(
        default=365, ge=0, le=1095, description="how far the one extension may move the date"
    )
    recovery_days: int = PydanticField(
        default=30, ge=1, le=365, description="days from a recovery notice to its deadline"
    )
    recovery_grace_days: int = PydanticField(
        default=15, ge=0, le=365, description="days past the deadline before default"
    )
    daily_interest_rate: Decimal = PydanticField(
        default=Decimal("0.0005"),
        ge=0,
        le=Decimal("0.01"),
        max_digits=8,
        decimal_places=6,
        description="late interest per day on the unpaid principal, simple (万分之五: 0.0005)",
    )
    max_instalments: int = PydanticField(
        default=12, ge=2, le=36, description="the most monthly instalments finance may grant"
    )

    @field_validator("reminder_days")
    @classmethod
    def _reminders(cls, value: list[int]) -> list[int]:
        if any(not 1 <= d <= 365 for d in value):
            raise ValueError("each reminder is 1 to 365 days before the completion date")
        return sorted(set(value), reverse=True)

    @model_validator(mode="after")
    def _distinct_targets(self) -> CommitmentTerms:
        facts = [t.fact for t in self.targets]
        if len(set(facts)) != len(facts):
            raise ValueError("each target names a different fact")
        return self

    @property
    def letter_sha256(self) -> str:
        return letter_hash(self.letter)

    def prepayment(self, committed_fen: int) -> int:
        """The prepayment: the item's share of the committed amount, within its cap."""
        amount = committed_fen * self.prepaid_pct // 100
        if self.prepaid_cap_fen is not None:
            amount = min(amount, self.prepaid_cap_fen)
        return amount
