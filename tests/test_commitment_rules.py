"""The arithmetic of commitments: settlement of achieved against committed targets, the
prepayment, and a recovery order's interest, credits and instalment plan."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.commitment.settlement import settle
from domain.money.interest import add_months, balance, instalment_plan, plan_broken_on
from models.commitment import Credit, CreditKind, PlannedInstalment
from models.commitment_terms import CommitmentTerms

INVESTMENT, TAX, HEADCOUNT = (
    "renovation_investment_fen",
    "tax_paid_fen",
    "social_security_headcount",
)
RATE = Decimal("0.0005")
DUE = date(2028, 3, 31)


def terms(
    method: str = "proportional", threshold: int = 60, combine: str = "weighted"
) -> CommitmentTerms:
    return CommitmentTerms.model_validate(
        {
            "targets": [{"fact": INVESTMENT, "weight": 3}, {"fact": TAX}, {"fact": HEADCOUNT}],
            "settlement": {"method": method, "threshold_pct": threshold, "combine": combine},
            "prepaid_pct": 50,
            "prepaid_cap_fen": 1_000_000,
        }
    )


COMMITTED = {INVESTMENT: 10_000_000, TAX: 1_000_000, HEADCOUNT: 100}


def test_every_target_met_or_exceeded_pays_the_committed_amount_and_no_more() -> None:
    result = settle(
        terms(), COMMITTED, {INVESTMENT: 20_000_000, TAX: 1_000_000, HEADCOUNT: 100}, 3_000_000
    )
    assert (result.share_bp, result.final_fen) == (10_000, 3_000_000)
    assert result.targets[0].share_bp == 10_000  # 200% counts as 100%
    assert "已完成" in result.targets[0].explanation and "全额兑现" in result.explanation


def test_proportional_settlement_weighs_the_targets() -> None:
    # 50% of the investment (weight 3), 100% tax, 80% headcount: (150 + 100 + 80) / 5 = 66%.
    achieved = {INVESTMENT: 5_000_000, TAX: 1_000_000, HEADCOUNT: 80}
    result = settle(terms(), COMMITTED, achieved, 3_000_000)
    assert result.share_bp == 6_600
    assert result.final_fen == 1_980_000
    assert [t.share_bp for t in result.targets] == [5_000, 10_000, 8_000]
    assert "按完成率比例兑现" in result.explanation
    assert "承诺 100,000.00元，实际 50,000.00元" in result.targets[0].explanation
    assert "承诺 100人，实际 80人" in result.targets[2].explanation


def test_below_the_threshold_nothing_is_due() -> None:
    achieved = {INVESTMENT: 5_000_000, TAX: 500_000, HEADCOUNT: 50}  # 50%
    result = settle(terms(), COMMITTED, achieved, 3_000_000)
    assert (result.share_bp, result.final_fen) == (5_000, 0)
    assert "低于门槛 60%" in result.explanation


def test_all_or_nothing_and_the_lowest_share() -> None:
    achieved = {INVESTMENT: 9_000_000, TAX: 1_000_000, HEADCOUNT: 61}
    assert settle(terms("all_or_nothing"), COMMITTED, achieved, 3_000_000).final_fen == 3_000_000
    lowest = settle(terms(combine="min"), COMMITTED, achieved, 3_000_000)
    assert (lowest.share_bp, lowest.final_fen) == (6_100, 1_830_000)


@given(
    st.integers(0, 10**13), st.integers(0, 10**12), st.integers(0, 10**6), st.integers(1, 10**12)
)
def test_the_final_amount_never_exceeds_the_committed_one(
    investment: int, tax: int, headcount: int, committed_fen: int
) -> None:
    achieved = {INVESTMENT: investment, TAX: tax, HEADCOUNT: headcount}
    for method in ("proportional", "all_or_nothing"):
        result = settle(terms(method), COMMITTED, achieved, committed_fen)
        assert 0 <= result.final_fen <= committed_fen
        assert 0 <= result.share_bp <= 10_000


def test_the_prepayment_is_the_share_within_the_cap() -> None:
    assert terms().prepayment(1_500_000) == 750_000
    assert terms().prepayment(5_000_000) == 1_000_000  # the cap


def test_terms_refuse_a_target_that_is_not_numeric_or_named_twice() -> None:
    with pytest.raises(ValidationError, match="not a numeric fact"):
        CommitmentTerms.model_validate({"targets": [{"fact": "credit_rating"}]})
    with pytest.raises(ValidationError, match="different fact"):
        CommitmentTerms.model_validate({"targets": [{"fact": TAX}, {"fact": TAX}]})


# ----- recovery ----------------------------------------------------------------------------


def repayment(on: date, amount: int) -> Credit:
    return Credit(kind=CreditKind.REPAYMENT, on=on, amount_fen=amount, reference=str(on))


def test_on_time_there_is_no_interest() -> None:
    b = balance(1_000_000, DUE, RATE, [repayment(DUE, 1_000_000)], DUE + timedelta(days=40))
    assert (b.interest_fen, b.outstanding_fen, b.days_late) == (0, 0, 0)


def test_interest_runs_from_the_day_after_the_deadline_simple_never_compounded() -> None:
    b = balance(1_000_000, DUE, RATE, [], DUE + timedelta(days=1))
    assert (b.interest_fen, b.days_late) == (500, 1)
    # A year late: 365 × 500 fen, on the principal only (compounding would give more).
    year = balance(1_000_000, DUE, RATE, [], DUE + timedelta(days=365))
    assert year.interest_fen == 182_500
    assert year.outstanding_fen == 1_182_500


def test_a_credit_pays_the_interest_first_then_the_principal() -> None:
    # 10 days late: 5,000 fen interest; 400,000 pays it and 395,000 of the principal.
    credits = [repayment(DUE + timedelta(days=10), 400_000)]
    b = balance(1_000_000, DUE, RATE, credits, DUE + timedelta(days=10))
    assert (b.interest_outstanding_fen, b.principal_outstanding_fen) == (0, 605_000)
    # Interest then runs on what principal is left: 10 more days on 605,000.
    later = balance(1_000_000, DUE, RATE, credits, DUE + timedelta(days=20))
    assert later.interest_fen == 5_000 + 3_025
    assert later.outstanding_fen == 605_000 + 3_025


def test_a_credit_before_the_deadline_stops_interest_on_what_it_paid() -> None:
    credits = [repayment(DUE - timedelta(days=5), 600_000)]
    b = balance(1_000_000, DUE, RATE, credits, DUE + timedelta(days=2))
    assert b.interest_fen == 400_000 * 5 // 10_000 * 2


@given(
    st.integers(1, 10**10),
    st.lists(st.tuples(st.integers(-30, 400), st.integers(1, 10**9)), max_size=6),
    st.integers(0, 500),
)
def test_interest_is_never_more_than_simple_interest_on_the_whole_principal(
    principal: int, paid: list[tuple[int, int]], days: int
) -> None:
    credits = [repayment(DUE + timedelta(days=d), a) for d, a in paid]
    b = balance(principal, DUE, RATE, credits, DUE + timedelta(days=days))
    assert 0 <= b.interest_fen <= principal * RATE * days
    assert b.outstanding_fen == b.principal_outstanding_fen + b.interest_outstanding_fen
    assert b.principal_outstanding_fen <= principal
    counted = sum(c.amount_fen for c in credits if c.on <= DUE + timedelta(days=days))
    # Whatever was credited went to interest or principal, and nothing is owed twice.
    assert b.outstanding_fen >= principal + b.interest_fen - counted


def test_an_instalment_plan_sums_to_the_principal_month_by_month() -> None:
    plan = instalment_plan(1_000_000, 3, date(2028, 1, 31))
    assert [p.amount_fen for p in plan] == [333_333, 333_333, 333_334]
    assert [p.due_on for p in plan] == [date(2028, 1, 31), date(2028, 2, 29), date(2028, 3, 31)]
    assert add_months(date(2028, 12, 15), 2) == date(2029, 2, 15)


def test_a_kept_plan_bears_no_interest_and_a_missed_instalment_breaks_it() -> None:
    plan = [
        PlannedInstalment(due_on=DUE, amount_fen=500_000),
        PlannedInstalment(due_on=add_months(DUE, 1), amount_fen=500_000),
    ]
    kept = [repayment(DUE, 500_000), repayment(add_months(DUE, 1), 500_000)]
    b = balance(1_000_000, DUE, RATE, kept, DUE + timedelta(days=60), plan)
    assert (b.interest_fen, b.outstanding_fen, b.plan_broken_on) == (0, 0, None)
    # The first instalment half paid: broken on its date; interest on all that is left.
    short = [repayment(DUE, 200_000)]
    assert plan_broken_on(plan, short, DUE + timedelta(days=1)) == DUE
    assert plan_broken_on(plan, short, DUE) is None  # not yet: the day is not over
    broken = balance(1_000_000, DUE, RATE, short, DUE + timedelta(days=10), plan)
    assert broken.plan_broken_on == DUE
    assert broken.interest_fen == 800_000 * 5 // 10_000 * 10
    assert broken.outstanding_fen == 800_000 + broken.interest_fen
