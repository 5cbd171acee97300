"""The rule language and amount rules as JSON Schema in the OpenAPI document.

Items carry their eligibility rule and amount rule as free JSON (or YAML text) that
`domain.engine.rules` and `domain.engine.amounts` validate with path-named errors; the document
describes the same shapes, generated from the same pydantic models, so a client
generated from it knows what to send. See docs/rules.md for worked examples.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from domain.engine.amounts import AmountRule
from domain.engine.rules import RuleNode
from models.facts import FACT_KINDS
from models.policy import AMOUNT_RULE_SCHEMA, ELIGIBILITY_RULE_SCHEMA

_REF = "#/components/schemas/Rule{model}"

ELIGIBILITY_EXAMPLE = {
    "all": [
        {"fact": "credit_rating", "op": "in", "value": ["A", "B"]},
        {"fact": "tax_per_mu_fen", "op": "gte", "value": 3_000_000},
        {"not": {"fact": "blacklisted", "op": "eq", "value": True}},
        {
            "any": [
                {"fact": "high_tech", "op": "eq", "value": True},
                {"fact": "specialised_level", "op": "in", "value": ["province", "national"]},
            ]
        },
    ]
}
AMOUNT_EXAMPLE = {
    "kind": "rate",
    "fact": "renovation_investment_fen",
    "rate": "0.1",
    "cap_fen": 200_000_000,
}


def rule_schemas() -> dict[str, Any]:
    """Component schemas: EligibilityRule and AmountRule, and the nodes they refer to."""
    components: dict[str, Any] = {}
    for name, adapter, description, example in (
        (
            ELIGIBILITY_RULE_SCHEMA,
            TypeAdapter(RuleNode),
            "An eligibility rule: a tree of all / any / not over conditions on named "
            "facts (fact, op, value) and manual conditions (free text a person checks). "
            "Evaluated three-valued: pass, fail, or unknown when a fact is missing, too old "
            "or manual. Limits: depth, node count and list sizes are bounded.",
            ELIGIBILITY_EXAMPLE,
        ),
        (
            AMOUNT_RULE_SCHEMA,
            TypeAdapter(AmountRule),
            "An amount rule in integer fen: fixed; rate × a numeric fact, rounded, with "
            "optional floor and cap; or tiers (the amount of the highest threshold reached).",
            AMOUNT_EXAMPLE,
        ),
    ):
        schema: dict[str, Any] = adapter.json_schema(ref_template=_REF)
        for node, definition in schema.pop("$defs", {}).items():
            components[f"Rule{node}"] = definition
        components[name] = {**schema, "description": description, "examples": [example]}
    condition = components.get("RuleCondition", {}).get("properties", {}).get("fact")
    if condition is not None:
        condition["enum"] = sorted(FACT_KINDS)
        condition["description"] = "a fact of the catalogue: " + "; ".join(
            f"{k.name} ({k.label}{', ' + k.unit if k.unit else ''})" for k in FACT_KINDS.values()
        )
    return components


def add_rule_schemas(document: dict[str, Any]) -> None:
    document.setdefault("components", {}).setdefault("schemas", {}).update(rule_schemas())
