"""Rules are bounded (depth, size, list lengths) and money in amount rules is `Fen`:
no rule can be too large to evaluate or produce an amount beyond MAX_FEN."""

from typing import Any

import pytest

from domain.engine.amounts import compute_amount, parse_amount_rule
from domain.engine.rules import (
    MAX_LIST_VALUES,
    MAX_RULE_DEPTH,
    MAX_RULE_NODES,
    InvalidRule,
    KnownFact,
    parse_rule,
)
from models.money import MAX_FEN

LEAF = {"fact": "credit_rating", "op": "eq", "value": "A"}


def _nested(depth: int) -> dict[str, Any]:
    """`depth` levels: all → all → … → a condition."""
    node: dict[str, Any] = LEAF
    for _ in range(depth - 1):
        node = {"all": [node]}
    return node


def _errors(raw: object, root: str = "eligibility") -> list[tuple[str, str]]:
    with pytest.raises(InvalidRule) as caught:
        parse_rule(raw, root)
    return [(e.path, e.message) for e in caught.value.errors]


def test_a_rule_at_the_depth_limit_parses_and_one_deeper_is_refused_at_its_path() -> None:
    parse_rule(_nested(MAX_RULE_DEPTH))
    [(path, message)] = _errors(_nested(MAX_RULE_DEPTH + 1))
    assert path == "eligibility" + ".all[0]" * MAX_RULE_DEPTH
    assert message == f"a rule nests at most {MAX_RULE_DEPTH} levels deep"


def test_the_first_too_deep_node_in_reading_order_is_named() -> None:
    raw = {"any": [LEAF, {"not": _nested(MAX_RULE_DEPTH)}]}
    [(path, _message)] = _errors(raw)
    assert path == "eligibility.any[1].not" + ".all[0]" * (MAX_RULE_DEPTH - 2)


def test_no_depth_of_input_escapes_as_a_recursion_error() -> None:
    node: dict[str, Any] = LEAF
    for _ in range(100_000):
        node = {"not": node}
    [(path, _message)] = _errors(node)
    assert path.startswith("eligibility.not.not")


def test_a_rule_of_too_many_nodes_is_refused() -> None:
    parse_rule({"any": [LEAF] * (MAX_RULE_NODES - 1)})
    assert _errors({"any": [LEAF] * MAX_RULE_NODES}) == [
        ("eligibility", f"a rule has at most {MAX_RULE_NODES} conditions and groups")
    ]
    # Also when spread over groups, and with a million children at once.
    spread = {"all": [{"any": [LEAF] * 100} for _ in range(5)]}
    assert _errors(spread)[0][0] == "eligibility"
    assert _errors({"all": [LEAF] * 1_000_000}, "")[0][0] == "$"


@pytest.mark.parametrize("op", ["in", "not_in", "prefix"])
def test_list_operators_take_a_bounded_number_of_values(op: str) -> None:
    fact, value = ("industry_code", "C") if op == "prefix" else ("credit_rating", "A")
    parse_rule({"fact": fact, "op": op, "value": [value] * MAX_LIST_VALUES})
    [(path, message)] = _errors(
        {"all": [{"fact": fact, "op": op, "value": [value] * (MAX_LIST_VALUES + 1)}]}
    )
    assert path == "eligibility.all[0].value"
    assert message == f"operator '{op}' takes at most {MAX_LIST_VALUES} values"


def test_manual_text_and_prefixes_are_bounded() -> None:
    assert _errors({"all": [{"manual": "核" * 501}]})[0][0] == "eligibility.all[0].manual"
    [(path, message)] = _errors({"fact": "industry_code", "op": "prefix", "value": ["C" * 17]})
    assert (path, message) == (
        "eligibility.value",
        "prefixes must be strings of 1 to 16 characters",
    )


@pytest.mark.parametrize(
    ("raw", "path", "message"),
    [
        ({"kind": "fixed", "amount_fen": MAX_FEN + 1}, "amount_rule.amount_fen", "less than"),
        ({"kind": "fixed", "amount_fen": "500"}, "amount_rule.amount_fen", "valid integer"),
        (
            {"kind": "rate", "fact": "rd_expense_fen", "rate": "0.1", "cap_fen": 10**30},
            "amount_rule.cap_fen",
            "less than",
        ),
        (
            {"kind": "rate", "fact": "rd_expense_fen", "rate": "0.1", "floor_fen": -1},
            "amount_rule.floor_fen",
            "greater than",
        ),
        (
            {"kind": "rate", "fact": "revenue_fen", "rate": "1.5"},
            "amount_rule",
            "cap_fen is required: rate × the largest revenue_fen (1,000,000,000,000,000)",
        ),
        (
            {"kind": "rate", "fact": "tax_per_mu_fen", "rate": "1001"},
            "amount_rule",
            "cap_fen is required",
        ),
        (
            {"kind": "rate", "fact": "revenue_fen", "rate": "1e-40"},
            "amount_rule.rate",
            "digits",
        ),
        (
            {
                "kind": "tiers",
                "fact": "revenue_fen",
                "tiers": [{"at_least": -5, "amount_fen": 1}],
            },
            "amount_rule",
            "at_least for 'revenue_fen' must be between 0 and 1,000,000,000,000,000",
        ),
        (
            {
                "kind": "tiers",
                "fact": "talent_count",
                "tiers": [{"at_least": 1, "amount_fen": 1}, {"at_least": 10**7, "amount_fen": 2}],
            },
            "amount_rule",
            "must be between 0 and 1,000,000",
        ),
        (
            {
                "kind": "tiers",
                "fact": "revenue_fen",
                "tiers": [{"at_least": 1, "amount_fen": MAX_FEN + 1}],
            },
            "amount_rule.tiers[0].amount_fen",
            "less than",
        ),
    ],
)
def test_money_in_amount_rules_is_fen_and_no_rule_can_pay_beyond_the_bound(
    raw: object, path: str, message: str
) -> None:
    with pytest.raises(InvalidRule) as caught:
        parse_amount_rule(raw)
    assert any(e.path == path and message in e.message for e in caught.value.errors), (
        caught.value.errors
    )


def test_a_rate_that_stays_within_the_bound_needs_no_cap_and_a_capped_one_stops_there() -> None:
    uncapped = parse_amount_rule({"kind": "rate", "fact": "revenue_fen", "rate": "1"})
    top = {"revenue_fen": KnownFact(MAX_FEN)}
    assert compute_amount(uncapped, top).amount_fen == MAX_FEN
    capped = parse_amount_rule(
        {"kind": "rate", "fact": "revenue_fen", "rate": "1000000", "cap_fen": 5_000_000}
    )
    assert compute_amount(capped, top).amount_fen == 5_000_000
