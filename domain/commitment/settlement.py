"""Settlement (结算): achieved against committed targets gives the final amount.

Each target's share is achieved / committed, in basis points, capped at 100% (doing more
than committed earns nothing extra: the final amount never exceeds the committed one).
The shares combine by weight (or the lowest counts, as the item says). Below the item's
threshold share the final amount is nothing; otherwise the committed amount in full
(all-or-nothing, or every target met) or in proportion, rounded down to the fen. Every
step is explained in Chinese, target by target, like eligibility conditions are.
"""

from __future__ import annotations

from models.commitment import Settlement, TargetOutcome
from models.commitment_terms import CommitmentTerms, SettlementMethod
from models.facts import FACT_KINDS
from models.money import format_yuan

FULL = 10_000  # basis points


def share_text(bp: int) -> str:
    return f"{bp / 100:.2f}%"


def figure_text(fact: str, value: int) -> str:
    kind = FACT_KINDS[fact]
    if kind.unit == "分":
        return format_yuan(value)
    return f"{value:,}{kind.unit}"


def settle(
    terms: CommitmentTerms, committed: dict[str, int], achieved: dict[str, int], committed_fen: int
) -> Settlement:
    """The final amount of a commitment, with its reasons."""
    outcomes = []
    for target in terms.targets:
        promised, done = committed[target.fact], achieved[target.fact]
        share = min(FULL, done * FULL // promised) if promised > 0 else FULL
        verdict = "已完成" if share >= FULL else f"完成 {share_text(share)}"
        outcomes.append(
            TargetOutcome(
                fact=target.fact,
                label=target.label,
                weight=target.weight,
                committed=promised,
                achieved=done,
                share_bp=share,
                explanation=f"{target.label}：承诺 {figure_text(target.fact, promised)}，"
                f"实际 {figure_text(target.fact, done)}，{verdict}",
            )
        )
    rule = terms.settlement
    if rule.combine == "min":
        share = min(o.share_bp for o in outcomes)
        how = f"各项指标完成率取最低 {share_text(share)}"
    else:
        weights = sum(o.weight for o in outcomes)
        share = sum(o.share_bp * o.weight for o in outcomes) // weights
        how = f"各项指标按权重加权完成率 {share_text(share)}"
    threshold = rule.threshold_pct * 100
    if share < threshold:
        final = 0
        why = f"低于门槛 {rule.threshold_pct}%，不予兑现"
    elif share >= FULL or rule.method is SettlementMethod.ALL_OR_NOTHING:
        final = committed_fen
        why = "全额兑现" if share >= FULL else f"达到门槛 {rule.threshold_pct}%，全额兑现"
    else:
        final = committed_fen * share // FULL
        why = f"按完成率比例兑现：{format_yuan(committed_fen)} × {share_text(share)}"
    return Settlement(
        committed_fen=committed_fen,
        share_bp=share,
        final_fen=final,
        targets=outcomes,
        explanation=f"{how}；{why}，最终金额 {format_yuan(final)}",
    )
