"""Every fact kind has a plausible range; every door refuses what lies outside it, and a
rule condition is held to the same range."""

import json
from datetime import date

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from domain.engine.rules import InvalidRule, parse_rule
from domain.registry.importer import ImportRejected, import_content
from models.facts import FACT_KINDS, FactType, coerce_fact_value, fact_range
from models.money import MAX_FEN
from tests.fixtures.factories import new_uscc

FETCHED = "2026-11-20T08:00:00+08:00"


def test_every_numeric_kind_declares_a_range_within_the_money_bound() -> None:
    for kind in FACT_KINDS.values():
        if kind.type is FactType.INT:
            low, high = fact_range(kind)
            assert 0 <= low < high <= MAX_FEN, kind.name
    assert fact_range(FACT_KINDS["revenue_fen"]) == (0, MAX_FEN)
    assert fact_range(FACT_KINDS["tax_per_mu_fen"]) == (0, 10**12)
    assert fact_range(FACT_KINDS["social_security_headcount"]) == (0, 10**7)
    assert fact_range(FACT_KINDS["energy_saved_tce"]) == (0, 10**9)
    assert fact_range(FACT_KINDS["talent_count"]) == (0, 10**6)


@pytest.mark.parametrize(
    ("kind", "raw", "message"),
    [
        ("revenue_fen", -1, "must be between 0 and 1,000,000,000,000,000 分"),
        ("revenue_fen", "-250", "must be between 0 and 1,000,000,000,000,000 分"),
        ("revenue_fen", MAX_FEN + 1, "must be between 0 and 1,000,000,000,000,000 分"),
        ("export_value_fen", 10**30, "must be between 0"),
        ("revenue_fen", "9" * 5000, "must be an integer"),  # never handed to int()
        ("revenue_fen", 1.5, "must be an integer"),
        ("revenue_fen", True, "must be an integer"),
        ("social_security_headcount", -3, "must be between 0 and 10,000,000 人"),
        ("social_security_headcount", 10**7 + 1, "must be between 0 and 10,000,000 人"),
        ("tax_per_mu_fen", 10**12 + 1, "must be between 0 and 1,000,000,000,000 分/亩"),
        ("energy_saved_tce", 10**9 + 1, "must be between 0 and 1,000,000,000 吨标准煤"),
        ("talent_count", -1, "must be between 0 and 1,000,000 人"),
        ("established_on", "1899-12-31", "must be between 1900-01-01 and 2099-12-31"),
        ("established_on", date(2100, 1, 1), "must be between 1900-01-01 and 2099-12-31"),
        ("industry_code", "C" * 65, "at most 64 characters"),
    ],
)
def test_values_outside_a_kind_are_refused_with_a_clear_message(
    kind: str, raw: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        coerce_fact_value(FACT_KINDS[kind], raw)


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        ("revenue_fen", 0),
        ("revenue_fen", MAX_FEN),
        ("revenue_fen", str(MAX_FEN)),
        ("social_security_headcount", 10**7),
        ("established_on", "1900-01-01"),
        ("established_on", "2099-12-31"),
    ],
)
def test_the_bounds_themselves_are_accepted(kind: str, raw: object) -> None:
    coerce_fact_value(FACT_KINDS[kind], raw)


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ({"fact": "revenue_fen", "op": "gte", "value": -1}, "must be between 0"),
        ({"fact": "revenue_fen", "op": "gte", "value": 10**30}, "must be between 0"),
        ({"fact": "social_security_headcount", "op": "in", "value": [5, -5]}, "between 0"),
        ({"fact": "talent_count", "op": "between", "value": [0, 10**7]}, "between 0 and 1,000,000"),
        ({"fact": "established_on", "op": "gte", "value": "1800-01-01"}, "1900-01-01"),
    ],
)
def test_rule_values_are_held_to_the_facts_range(condition: object, message: str) -> None:
    with pytest.raises(InvalidRule) as caught:
        parse_rule({"all": [condition]}, "eligibility")
    [error] = caught.value.errors
    assert error.path == "eligibility.all[0].value"
    assert message in error.message


def _jsonl(*rows: dict[str, object]) -> bytes:
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode()


def _fact(uscc: str, kind: str, value: object) -> dict[str, object]:
    return {
        "record": "fact",
        "uscc": uscc,
        "kind": kind,
        "value": value,
        "period": "2025",
        "source": "湖州市公共数据平台",
        "fetched_at": FETCHED,
    }


async def test_the_importer_refuses_negative_and_absurd_figures_naming_each_line(
    session: AsyncSession,
) -> None:
    uscc = new_uscc()
    firm: dict[str, object] = {
        "record": "enterprise",
        "uscc": uscc,
        "name": "湖州测试有限公司",
        "region_code": "330502",
        "industry_code": "C1711",
        "size_class": "small",
        "established_on": "1850-03-04",
    }
    content = _jsonl(
        firm,
        _fact(uscc, "revenue_fen", -100),
        _fact(uscc, "social_security_headcount", "-3"),
        _fact(uscc, "export_value_fen", 10**30),
        _fact(uscc, "tax_paid_fen", 5_000),
    )
    with pytest.raises(ImportRejected) as caught:
        await import_content(session, content, "jsonl")
    errors = {e.field: e.message for e in caught.value.errors}
    assert set(errors) == {
        "line 1.established_on",
        "line 2.value",
        "line 3.value",
        "line 4.value",
    }
    assert errors["line 2.value"] == "must be between 0 and 1,000,000,000,000,000 分"
    assert errors["line 3.value"] == "must be between 0 and 10,000,000 人"
    assert "1900-01-01" in errors["line 1.established_on"]


@pytest.mark.parametrize("value", ["500", 500.0, True])
def test_rule_values_on_numeric_facts_are_strict_integers(value: object) -> None:
    with pytest.raises(InvalidRule) as caught:
        parse_rule({"fact": "revenue_fen", "op": "gte", "value": value}, "eligibility")
    assert [(e.path, e.message) for e in caught.value.errors] == [
        ("eligibility.value", "value for 'revenue_fen': must be an integer")
    ]
