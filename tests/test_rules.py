from datetime import date

import pytest
import yaml

from domain.engine.rules import (
    Condition,
    InvalidRule,
    KnownFact,
    describe,
    evaluate,
    parse_rule,
    rule_to_json,
)
from models.eligibility import Outcome, UnknownReason, Verdict

TODAY = date(2026, 11, 27)

RULE = yaml.safe_load(
    """
all:
  - {fact: credit_rating, op: in, value: [A, B]}
  - {fact: tax_per_mu_fen, op: gte, value: 3000000}
  - not: {fact: blacklisted, op: eq, value: true}
  - any:
      - {fact: industry_code, op: prefix, value: [C34, C35]}
      - {fact: high_tech, op: eq, value: true}
  - {fact: established_on, op: between, value: [2010-01-01, 2024-12-31]}
"""
)

GOOD_FIRM = {
    "credit_rating": KnownFact("A", date(2025, 12, 31)),
    "tax_per_mu_fen": KnownFact(4_000_000, date(2025, 12, 31)),
    "blacklisted": KnownFact(False, date(2026, 10, 31)),
    "industry_code": KnownFact("C3411"),
    "high_tech": KnownFact(False, date(2025, 12, 31)),
    "established_on": KnownFact(date(2015, 6, 1)),
}


def _outcomes(
    facts: dict[str, KnownFact],
) -> tuple[Verdict, dict[str, tuple[Outcome, UnknownReason | None]]]:
    result = evaluate(parse_rule(RULE), facts, TODAY)
    return result.verdict, {c.path: (c.outcome, c.reason) for c in result.conditions}


def test_all_conditions_pass_is_eligible_with_a_reason_per_leaf() -> None:
    verdict, outcomes = _outcomes(GOOD_FIRM)
    assert verdict is Verdict.ELIGIBLE
    assert outcomes == {
        "all[0]": (Outcome.PASS, None),
        "all[1]": (Outcome.PASS, None),
        "all[2].not": (Outcome.PASS, None),
        "all[3].any[0]": (Outcome.PASS, None),
        "all[3].any[1]": (Outcome.FAIL, None),
        "all[4]": (Outcome.PASS, None),
    }


def test_one_failure_makes_not_eligible_even_with_unknowns() -> None:
    facts = {**GOOD_FIRM, "credit_rating": KnownFact("C", date(2025, 12, 31))}
    del facts["tax_per_mu_fen"]
    verdict, outcomes = _outcomes(facts)
    assert verdict is Verdict.NOT_ELIGIBLE
    assert outcomes["all[0]"] == (Outcome.FAIL, None)
    assert outcomes["all[1]"] == (Outcome.UNKNOWN, UnknownReason.MISSING)


def test_missing_fact_is_unknown_and_possibly_eligible() -> None:
    facts = dict(GOOD_FIRM)
    del facts["tax_per_mu_fen"]
    verdict, outcomes = _outcomes(facts)
    assert verdict is Verdict.POSSIBLY_ELIGIBLE
    assert outcomes["all[1]"] == (Outcome.UNKNOWN, UnknownReason.MISSING)


def test_stale_fact_is_unknown_not_pass() -> None:
    facts = {**GOOD_FIRM, "tax_per_mu_fen": KnownFact(9_000_000, date(2022, 12, 31))}
    verdict, outcomes = _outcomes(facts)
    assert verdict is Verdict.POSSIBLY_ELIGIBLE
    assert outcomes["all[1]"] == (Outcome.UNKNOWN, UnknownReason.STALE)


def test_blacklisted_firm_fails_through_not() -> None:
    facts = {**GOOD_FIRM, "blacklisted": KnownFact(True, date(2026, 10, 31))}
    verdict, outcomes = _outcomes(facts)
    assert verdict is Verdict.NOT_ELIGIBLE
    assert outcomes["all[2].not"] == (Outcome.FAIL, None)


def test_any_passes_on_its_second_branch() -> None:
    facts = {
        **GOOD_FIRM,
        "industry_code": KnownFact("F5123"),
        "high_tech": KnownFact(True, date(2025, 12, 31)),
    }
    assert _outcomes(facts)[0] is Verdict.ELIGIBLE


def test_manual_condition_makes_possibly_eligible_at_best() -> None:
    rule = parse_rule(
        {
            "all": [
                {"fact": "size_class", "op": "eq", "value": "small"},
                {"manual": "项目已竣工验收"},
            ]
        }
    )
    result = evaluate(rule, {"size_class": KnownFact("small")}, TODAY)
    assert result.verdict is Verdict.POSSIBLY_ELIGIBLE
    assert result.conditions[1].reason is UnknownReason.MANUAL
    assert result.conditions[1].description == "项目已竣工验收"


def test_not_of_unknown_stays_unknown() -> None:
    rule = parse_rule({"not": {"fact": "blacklisted", "op": "eq", "value": True}})
    assert evaluate(rule, {}, TODAY).verdict is Verdict.POSSIBLY_ELIGIBLE


def test_rule_round_trips_through_json() -> None:
    rule = parse_rule(RULE)
    assert parse_rule(rule_to_json(rule)) == rule
    assert rule_to_json(rule)["all"][4]["value"] == ["2010-01-01", "2024-12-31"]


@pytest.mark.parametrize(
    ("raw", "path", "message"),
    [
        (
            {"all": [{"fact": "nope", "op": "eq", "value": 1}]},
            "eligibility.all[0].fact",
            "unknown fact",
        ),
        (
            {"all": [{"fact": "mu_grade", "op": "gte", "value": "A"}]},
            "eligibility.all[0].value",
            "does not apply",
        ),
        (
            {"all": [{"fact": "mu_grade", "op": "eq", "value": "E"}]},
            "eligibility.all[0].value",
            "must be one of",
        ),
        (
            {"any": [{"not": {"fact": "tax_per_mu_fen", "op": "between", "value": [5, 1]}}]},
            "eligibility.any[0].not.value",
            "low <= high",
        ),
        (
            {"all": [{"fact": "revenue_fen", "op": "gte", "value": "lots"}]},
            "eligibility.all[0].value",
            "integer",
        ),
        (
            {"all": [{"fact": "revenue_fen", "op": "in", "value": []}]},
            "eligibility.all[0].value",
            "non-empty list",
        ),
        (
            {"all": [{"fact": "revenue_fen", "op": "like", "value": 1}]},
            "eligibility.all[0].op",
            "Input should be",
        ),
        ({"all": [{"colour": "red"}]}, "eligibility.all[0]", "needs one of the keys"),
        ({"all": []}, "eligibility.all", "at least 1 item"),
        (
            {"all": [{"fact": "established_on", "op": "gte", "value": "2020-13-01"}]},
            "eligibility.all[0].value",
            "date",
        ),
    ],
)
def test_invalid_rules_name_the_path_of_the_bad_node(raw: object, path: str, message: str) -> None:
    with pytest.raises(InvalidRule) as caught:
        parse_rule(raw, "eligibility")
    assert any(e.path == path and message in e.message for e in caught.value.errors), (
        caught.value.errors
    )


def test_money_conditions_read_in_yuan() -> None:
    rule = parse_rule({"fact": "tax_per_mu_fen", "op": "gte", "value": 3_000_000})
    assert isinstance(rule, Condition)
    assert describe(rule) == "亩均税收 ≥ 30,000.00元/亩"
    listed = parse_rule({"fact": "revenue_fen", "op": "in", "value": [100, 250]})
    assert isinstance(listed, Condition)
    assert describe(listed) == "营业收入 属于 1.00元、2.50元"
