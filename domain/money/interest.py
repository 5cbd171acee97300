"""What a recovery order (追回) stands at on a day: principal, late interest, credits.

Late interest runs from the day after the deadline, on the principal still unpaid, at
the item's daily rate: simple, never compounded (interest never bears interest). It is
counted to the day the money arrives, inclusive, and each stretch between two credits
is rounded down to the fen. A credit (repayment, offset or waiver) pays the interest
due first, then the principal (Civil Code art. 561).

Under an instalment plan (granted before the deadline) nothing is late while every
instalment is paid by its date. The first instalment not covered by its date breaks the
plan: the whole balance falls due that day and interest runs from the day after.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import date
from decimal import ROUND_FLOOR, Decimal

from models.commitment import Credit, PlannedInstalment, RecoveryBalance
from models.money import format_yuan


def add_months(day: date, months: int) -> date:
    """The same day of the month `months` later (the month's last day where it is short)."""
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def instalment_plan(principal_fen: int, count: int, first_due: date) -> list[PlannedInstalment]:
    """`count` monthly instalments from `first_due`, equal but for the last, which takes
    the remainder; they sum to the principal."""
    base = principal_fen // count
    amounts = [base] * (count - 1) + [principal_fen - base * (count - 1)]
    return [
        PlannedInstalment(due_on=add_months(first_due, i), amount_fen=amount)
        for i, amount in enumerate(amounts)
    ]


def plan_broken_on(
    plan: Sequence[PlannedInstalment], credits: Sequence[Credit], as_of: date
) -> date | None:
    """The due date of the first instalment not covered by then, if it has passed."""
    due_so_far = 0
    for instalment in plan:
        if instalment.due_on >= as_of:
            return None  # not yet passed: nothing can be missed from here on
        due_so_far += instalment.amount_fen
        paid = sum(c.amount_fen for c in credits if c.on <= instalment.due_on)
        if paid < due_so_far:
            return instalment.due_on
    return None


def balance(
    principal_fen: int,
    due_on: date,
    daily_rate: Decimal,
    credits: Sequence[Credit],
    as_of: date,
    plan: Sequence[PlannedInstalment] = (),
) -> RecoveryBalance:
    """The order on `as_of`: interest accrued, credits applied, what is still owed."""
    broken = plan_broken_on(plan, credits, as_of) if plan else None
    # The day after which interest runs: the deadline, or the missed instalment's date
    # (None: a plan that holds, under which nothing is late).
    late_after: date | None = broken if plan else due_on
    principal, interest_due, accrued = principal_fen, 0, 0
    counted_to = late_after  # interest is counted through this day
    for credit in sorted((c for c in credits if c.on <= as_of), key=lambda c: c.on):
        if late_after is not None and counted_to is not None and credit.on > counted_to:
            more = _interest(principal, daily_rate, (credit.on - counted_to).days)
            accrued, interest_due, counted_to = accrued + more, interest_due + more, credit.on
        to_interest = min(credit.amount_fen, interest_due)
        interest_due -= to_interest
        principal -= min(credit.amount_fen - to_interest, principal)
    if late_after is not None and counted_to is not None and as_of > counted_to:
        more = _interest(principal, daily_rate, (as_of - counted_to).days)
        accrued, interest_due = accrued + more, interest_due + more
    outstanding = principal + interest_due
    late = late_after is not None and as_of > late_after and outstanding > 0
    days_late = (as_of - late_after).days if late and late_after is not None else 0
    credited = sum(c.amount_fen for c in credits if c.on <= as_of)
    return RecoveryBalance(
        principal_fen=principal_fen,
        interest_fen=accrued,
        credited_fen=credited,
        principal_outstanding_fen=principal,
        interest_outstanding_fen=interest_due,
        outstanding_fen=outstanding,
        days_late=days_late,
        plan_broken_on=broken,
        explanation=_explain(principal_fen, daily_rate, accrued, credited, outstanding, broken),
    )


def _interest(principal: int, daily_rate: Decimal, days: int) -> int:
    if principal <= 0 or days <= 0:
        return 0
    return int((principal * daily_rate * days).to_integral_value(rounding=ROUND_FLOOR))


def _explain(
    principal: int,
    rate: Decimal,
    interest: int,
    credited: int,
    outstanding: int,
    broken: date | None,
) -> str:
    parts = [f"应退本金 {format_yuan(principal)}"]
    if interest:
        parts.append(f"逾期资金占用费（日利率 {rate}，单利）{format_yuan(interest)}")
    if credited:
        parts.append(f"已收回、抵扣或核销 {format_yuan(credited)}（先抵资金占用费，后抵本金）")
    if broken is not None:
        parts.append(f"分期计划于 {broken.isoformat()} 未按期缴纳，余额全部到期")
    parts.append(f"尚欠 {format_yuan(outstanding)}")
    return "；".join(parts)
