from collections.abc import Mapping

import pytest

from domain.engine.amounts import amount_fen_of, compute_amount, parse_amount_rule
from domain.engine.rules import InvalidRule, KnownFact
from models.money import format_yuan


def _amount(rule: Mapping[str, object], **facts: int) -> int | None:
    """The amount with its explanation, checked against the bare amount of the one-firm
    hot path: the two must never differ."""
    known = {k: KnownFact(v) for k, v in facts.items()}
    parsed = parse_amount_rule(rule)
    amount = compute_amount(parsed, known).amount_fen
    assert amount_fen_of(parsed, known) == amount
    return amount


def test_fixed_amount() -> None:
    assert _amount({"kind": "fixed", "amount_fen": 100_000_000}) == 100_000_000


@pytest.mark.parametrize(
    ("rounding", "base", "expected"),
    [
        ("half_up", 12_345, 1_235),  # 1234.5 -> 1235 (四舍五入)
        ("half_even", 12_345, 1_234),  # banker's rounding to the even fen
        ("half_even", 12_355, 1_236),
        ("down", 12_349, 1_234),
        ("up", 12_341, 1_235),
    ],
)
def test_rate_rounds_to_whole_fen_as_stated(rounding: str, base: int, expected: int) -> None:
    rule = {"kind": "rate", "fact": "rd_expense_fen", "rate": "0.1", "rounding": rounding}
    assert _amount(rule, rd_expense_fen=base) == expected


def test_rate_is_exact_decimal_not_float() -> None:
    # 0.07 * 100 is 7.000000000000001 in binary floating point.
    rule = {"kind": "rate", "fact": "rd_expense_fen", "rate": "0.07", "rounding": "up"}
    assert _amount(rule, rd_expense_fen=100) == 7


def test_rate_floor_and_cap() -> None:
    rule = {
        "kind": "rate",
        "fact": "rd_expense_fen",
        "rate": "0.1",
        "floor_fen": 1_000,
        "cap_fen": 50_000,
    }
    assert _amount(rule, rd_expense_fen=5_000) == 1_000
    assert _amount(rule, rd_expense_fen=100_000) == 10_000
    assert _amount(rule, rd_expense_fen=10_000_000) == 50_000
    parsed = parse_amount_rule(rule)
    notes = [
        compute_amount(parsed, {"rd_expense_fen": KnownFact(base)}).explanation
        for base in (5_000, 100_000, 10_000_000)
    ]
    assert "按下限 10.00元" in notes[0] and "上限" not in notes[0]
    assert "下限" not in notes[1] and "上限" not in notes[1]
    assert "按上限 500.00元" in notes[2] and "下限" not in notes[2]


def test_tiers_pick_the_highest_reached() -> None:
    rule = {
        "kind": "tiers",
        "fact": "tax_per_mu_fen",
        "tiers": [{"at_least": 100, "amount_fen": 1}, {"at_least": 200, "amount_fen": 2}],
    }
    assert _amount(rule, tax_per_mu_fen=99) == 0
    assert _amount(rule, tax_per_mu_fen=100) == 1
    assert _amount(rule, tax_per_mu_fen=10_000) == 2


def test_missing_fact_gives_no_amount_and_says_why() -> None:
    rule = parse_amount_rule({"kind": "rate", "fact": "rd_expense_fen", "rate": "0.1"})
    result = compute_amount(rule, {})
    assert result.amount_fen is None
    assert "研发费用" in result.explanation


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"kind": "fixed", "amount_fen": 1.5}, "amount_rule.amount_fen"),
        ({"kind": "fixed", "amount_fen": -1}, "amount_rule.amount_fen"),
        ({"kind": "rate", "fact": "mu_grade", "rate": "0.1"}, "amount_rule"),
        ({"kind": "rate", "fact": "rd_expense_fen", "rate": "x"}, "amount_rule.rate"),
        (
            {
                "kind": "tiers",
                "fact": "revenue_fen",
                "tiers": [{"at_least": 2, "amount_fen": 1}, {"at_least": 1, "amount_fen": 2}],
            },
            "amount_rule",
        ),
        ({"kind": "lottery"}, "amount_rule"),
    ],
)
def test_invalid_amount_rules_name_the_field(raw: object, path: str) -> None:
    with pytest.raises(InvalidRule) as caught:
        parse_amount_rule(raw)
    assert caught.value.errors[0].path == path


def test_format_yuan() -> None:
    assert format_yuan(123_456_789) == "1,234,567.89元"
    assert format_yuan(5) == "0.05元"
    assert format_yuan(-250) == "-2.50元"
