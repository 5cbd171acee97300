"""What the smart review accepts from firms and departments: bad input is refused
naming the field, before any case or item is written."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from models.cases import ApplicationRequest, CaseDecision
from models.policy import ItemCreate
from models.review import ReviewChecks
from tests.fixtures.factories import item_payload


def refused(make: Any, **fields: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        make(**fields)
    return str(caught.value)


@pytest.mark.parametrize(
    ("declared", "named"),
    [
        ({"patent_count": 10**30}, "patent_count"),
        ({"tax_paid_fen": -5}, "tax_paid_fen"),
        ({"credit_rating": "Z"}, "credit_rating"),
        ({"credit_rating": "A\x00"}, "credit_rating"),
        ({"tax_paid_fen": 1.5}, "tax_paid_fen"),
        ({"region_code": "330502"}, "region_code"),  # not a figure the platform confirms
    ],
)
def test_declared_figures_are_checked_as_the_importer_checks_facts(
    declared: dict[str, Any], named: str
) -> None:
    message = refused(ApplicationRequest, item_code="ABC", period="2026", declared=declared)
    assert "declared" in message and named in message


@pytest.mark.parametrize("text", ["a\x00b", "a\nb", "a\tb", "a\u202eb", ""])
def test_project_names_and_places_are_one_line_of_text(text: str) -> None:
    for field in ("name", "location"):
        project = {"name": "厂房改造", "location": "吴兴区", field: text}
        assert f"project.{field}" in refused(
            ApplicationRequest, item_code="ABC", period="2026", project=project
        )


def test_invoices_of_control_characters_and_decisions_citing_odd_ids() -> None:
    project = {"name": "x", "location": "y", "invoices": ["044\x001"]}
    assert "invoices" in refused(
        ApplicationRequest, item_code="ABC", period="2026", project=project
    )
    for ids in (["1"], [0], [-1], [2**31]):
        assert "findings" in refused(CaseDecision, action="reject", reason="x", findings=ids)


@pytest.mark.parametrize("group", ["", "   ", "g\x00", "G\nH", "ＧＲＯＵＰ", "a b", "-x"])
def test_an_exclusivity_group_is_a_code(group: str) -> None:
    payload = item_payload("GRP-TEST", amount_rule={"kind": "fixed", "amount_fen": 1})
    payload["exclusivity_group"] = group
    assert "exclusivity_group" in refused(ItemCreate.model_validate, obj=payload)


@pytest.mark.parametrize(
    "checks",
    [
        {"dimensions": ["nope"]},
        {"dimensions": ["invoice", "invoice"]},
        {"name_similarity": 0.4},
        {"investment_tolerance_pct": 101},
        {"firm_group_cap_fen": -1},
        {"evidence_facts": ["region_code"]},
        {"evidence_facts": ["patent_count", "patent_count"]},
        {"extra": 1},
    ],
)
def test_review_checks_refuse_what_they_cannot_mean(checks: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ReviewChecks.model_validate(checks)
