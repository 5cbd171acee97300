"""The matching engine agrees with the single-pair evaluator, pair by pair.

Hypothesis generates rules (every operator each fact type allows, nested all/any/not,
manual conditions), amount rules and firms (facts missing, stale, invalid or current,
values anywhere in their kind's range), and the vectorised engine and the one-firm
evaluator must give exactly what `domain.engine.rules.evaluate` and
`domain.engine.amounts.compute_amount` give.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from domain.engine.amounts import Rounding, compute_amount, parse_amount_rule
from domain.engine.arrays import (
    OUTCOME_CODE,
    CompiledItem,
    FactTable,
    FirmMatcher,
    MaskContext,
    PairMatch,
    RowEvaluator,
    match_firm,
    match_items,
    match_table,
    unpack,
)
from domain.engine.rules import (
    Condition,
    InvalidRule,
    KnownFact,
    RuleNode,
    evaluate,
    invalid_fact,
    parse_rule,
)
from domain.matching.match_library import condition_views
from models.eligibility import Outcome, Verdict
from models.facts import FACT_KINDS, FactKind, FactType, fact_range
from models.money import MAX_FEN

AS_OF = date(2026, 11, 27)
TEXT_POOLS = {
    "region_code": ["330502", "330503", "330521", "NTH"],
    "industry_code": ["C1711", "C3411", "C3841", "F5123", "I6513"],
}
INT_POOL = [0, 1, 2, 5, 7, 100, 5_000, 10**12, MAX_FEN]
# What a database may hold past every validator: read as invalid, never trusted.
BAD_VALUES = ["lots", 10**30, -5, None, 1.5, {"nested": [1]}]


def _value(kind: FactKind) -> st.SearchStrategy[Any]:
    if kind.type is FactType.BOOL:
        return st.booleans()
    if kind.type is FactType.DATE:
        return st.dates(date(2018, 1, 1), date(2027, 12, 31))
    if kind.type is FactType.INT:
        low, high = fact_range(kind)
        pool = [v for v in INT_POOL if low <= v <= high] + [high]
        return st.sampled_from(pool) | st.integers(low, min(high, 10**6))
    if kind.choices is not None:
        return st.sampled_from(kind.choices)
    return st.sampled_from(TEXT_POOLS[kind.name])


@st.composite
def known_fact(draw: st.DrawFn, kind: FactKind) -> KnownFact:
    value = draw(_value(kind))
    if kind.profile:
        return KnownFact(value)
    # Around the staleness boundary of this kind, on either side.
    age = draw(st.integers(0, (kind.max_age_days or 400) + 60))
    if draw(st.integers(0, 9)) == 0:
        return invalid_fact(draw(st.sampled_from(BAD_VALUES)), "planted", AS_OF - timedelta(age))
    return KnownFact(value, AS_OF - timedelta(days=age))


@st.composite
def firm(draw: st.DrawFn) -> dict[str, KnownFact]:
    facts = {}
    for name, kind in FACT_KINDS.items():
        if draw(st.integers(0, 9)) < 7:  # about a third of facts missing
            facts[name] = draw(known_fact(kind))
    return facts


@st.composite
def condition(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(list(FACT_KINDS.values())))
    ops = {
        FactType.INT: ["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "between"],
        FactType.DATE: ["eq", "ne", "gt", "gte", "lt", "lte", "between"],
        FactType.STR: ["eq", "ne", "in", "not_in", "prefix"],
        FactType.BOOL: ["eq", "ne"],
    }[kind.type]
    if kind.choices is not None:
        ops = [op for op in ops if op not in {"gt", "gte", "lt", "lte"}]
    op = draw(st.sampled_from(ops))
    values = _value(kind)
    value: Any
    if op in {"in", "not_in"}:
        value = draw(st.lists(values, min_size=1, max_size=3))
    elif op == "between":
        value = sorted(draw(st.lists(values, min_size=2, max_size=2)))
    elif op == "prefix":
        pool = TEXT_POOLS.get(kind.name) or list(kind.choices or ())
        value = draw(st.lists(st.sampled_from(pool).map(lambda t: t[: max(1, len(t) // 2)])))
        value = value or ["C"]
    else:
        value = draw(values)
    if isinstance(value, list):
        value = [v.isoformat() if isinstance(v, date) else v for v in value]
    elif isinstance(value, date):
        value = value.isoformat()
    return {"fact": kind.name, "op": op, "value": value}


rules = st.recursive(
    condition() | st.just({"manual": "现场核查"}),
    lambda children: (
        st.lists(children, min_size=1, max_size=3).map(lambda c: {"all": c})
        | st.lists(children, min_size=1, max_size=3).map(lambda c: {"any": c})
        | children.map(lambda c: {"not": c})
    ),
    max_leaves=8,
)

numeric_facts = [k.name for k in FACT_KINDS.values() if k.type is FactType.INT]


def _rate_rule(
    fact: str, rate: Decimal, floor: int | None, cap: int | None, rounding: str
) -> dict[str, Any]:
    if cap is None and fact_range(FACT_KINDS[fact])[1] * rate > MAX_FEN:
        cap = MAX_FEN  # the rule could pay beyond MAX_FEN: it must state a cap
    return {
        "kind": "rate",
        "fact": fact,
        "rate": str(rate),
        **({"floor_fen": floor} if floor is not None else {}),
        **({"cap_fen": max(cap, floor or 0)} if cap is not None else {}),
        "rounding": rounding,
    }


amount_rules = st.one_of(
    st.builds(
        lambda a: {"kind": "fixed", "amount_fen": a}, st.integers(0, 10**9) | st.just(MAX_FEN)
    ),
    st.builds(
        _rate_rule,
        st.sampled_from(numeric_facts),
        st.decimals(Decimal("0.0001"), Decimal("50"), places=4)
        | st.sampled_from([Decimal("1000000"), Decimal("0.0000000001")]),
        st.none() | st.integers(0, 10**6),
        st.none() | st.integers(0, 10**8) | st.just(MAX_FEN),
        st.sampled_from([r.value for r in Rounding]),
    ),
    st.builds(
        lambda fact, thresholds, prizes: {
            "kind": "tiers",
            "fact": fact,
            "tiers": [
                {"at_least": t, "amount_fen": p}
                for t, p in zip(sorted(set(thresholds)), prizes, strict=False)
            ],
        },
        st.sampled_from(numeric_facts),
        st.lists(st.integers(0, 10**6), min_size=1, max_size=4),
        st.lists(st.integers(0, 10**8) | st.just(MAX_FEN), min_size=4, max_size=4),
    ),
)


def _parse(raw: Any) -> RuleNode:
    try:
        return parse_rule(raw)
    except InvalidRule:
        assume(False)
        raise


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw_rules=st.lists(rules, min_size=1, max_size=3),
    raw_amount=amount_rules,
    firms=st.lists(firm(), min_size=1, max_size=25),
)
def test_engine_agrees_with_the_single_pair_evaluator(
    raw_rules: list[Any], raw_amount: dict[str, Any], firms: list[dict[str, KnownFact]]
) -> None:
    amount_rule = parse_amount_rule(raw_amount)
    items = [CompiledItem(f"T-{i}", 1, _parse(raw), amount_rule) for i, raw in enumerate(raw_rules)]
    # A firm without a record of a kind the platform alone records has its `absent`
    # value (models.facts.FactKind): both evaluators read the facts the table gives.
    absent = {k.name: KnownFact(k.absent) for k in FACT_KINDS.values() if k.absent is not None}
    firms = [{**absent, **facts} for facts in firms]
    table = FactTable.build((f"firm-{i}", facts) for i, facts in enumerate(firms))
    # Every numeric fact compared in buckets (`domain.engine.arrays.Buckets`), and
    # none: a run buckets a fact once enough conditions use it.
    for bucketed_from in (1, 10**9):
        context = MaskContext(table, AS_OF, bucketed_from)
        results = match_items(table, items, AS_OF, threads=2, context=context)
        _agrees(table, firms, items, amount_rule, context, results)
    # One firm at a time, compiled: the same pairs as item by item, which `_agrees`
    # holds to the single-pair evaluator.
    matcher = FirmMatcher(items, AS_OF)
    for row, facts in enumerate(firms):
        assert matcher.match(f"firm-{row}", facts) == match_firm(f"firm-{row}", facts, items, AS_OF)


def _agrees(
    table: FactTable,
    firms: list[dict[str, KnownFact]],
    items: list[CompiledItem],
    amount_rule: Any,
    context: MaskContext,
    results: list[Any],
) -> None:
    for item, result in zip(items, results, strict=True):
        passes, may_pass = unpack(result.passes, len(table)), unpack(result.may_pass, len(table))
        matched = result.matched(table)
        outcomes = dict(
            zip(
                matched.rows.tolist(),
                context.leaf_outcomes(item.rule, matched.rows),
                strict=True,
            )
        )
        eligible_amounts = iter(
            zip(result.eligible_amounts, result.eligible_amount_known, strict=True)
        )
        for row, facts in enumerate(firms):
            expected = evaluate(item.rule, facts, AS_OF)
            engine = (
                Verdict.ELIGIBLE
                if passes[row]
                else Verdict.POSSIBLY_ELIGIBLE
                if may_pass[row]
                else Verdict.NOT_ELIGIBLE
            )
            assert engine is expected.verdict, (row, facts)
            assert RowEvaluator(facts, AS_OF).verdict(item.plan) is expected.verdict
            # The table gives back exactly the facts it was built from.
            assert table.known_facts(row) == facts
            if expected.verdict is Verdict.NOT_ELIGIBLE:
                continue
            codes = "".join(OUTCOME_CODE[c.outcome] for c in expected.conditions)
            assert outcomes[row] == codes
            amount = compute_amount(amount_rule, facts).amount_fen
            where = int(np.searchsorted(matched.rows, row))
            got = int(matched.amount_fen[where]) if matched.amount_known[where] else None
            assert got == amount
            if expected.verdict is Verdict.ELIGIBLE:
                value, known = next(eligible_amounts)
                assert (int(value) if known else None) == amount

    # The library rows of the array path and of the one-firm path are the same.
    def rows(pairs: Iterable[PairMatch]) -> set[tuple[str, str, Verdict, int | None, str]]:
        return {(p.item.item_code, p.uscc, p.verdict, p.amount_fen, p.outcomes) for p in pairs}

    one_by_one = [
        pair
        for i, facts in enumerate(firms)
        for pair in match_firm(f"firm-{i}", facts, items, AS_OF)
    ]
    assert rows(match_table(table, items, AS_OF)) == rows(one_by_one)


def test_a_large_rate_base_is_computed_exactly() -> None:
    """Where base × rate's numerator passes int64, the engine switches to exact
    integers rather than wrapping round, and a product beyond int64 is capped exactly."""
    facts = {"revenue_fen": KnownFact(MAX_FEN, date(2025, 12, 31))}
    table = FactTable.build([("big", facts)])
    rule_json = {"fact": "revenue_fen", "op": "gt", "value": 0}
    for raw, expected in (
        ({"kind": "rate", "fact": "revenue_fen", "rate": "0.1234567891"}, 123_456_789_100_000),
        ({"kind": "rate", "fact": "revenue_fen", "rate": "1000000", "cap_fen": MAX_FEN}, MAX_FEN),
    ):
        rule = parse_amount_rule(raw)
        item = CompiledItem("BIG", 1, parse_rule(rule_json), rule)
        [result] = match_items(table, [item], AS_OF)
        assert int(result.eligible_amounts[0]) == compute_amount(rule, facts).amount_fen == expected


def test_buckets_cut_for_one_run_are_not_used_for_another_condition() -> None:
    """A context reused for a condition its buckets were not cut for compares the
    values themselves (`Buckets.cover`)."""
    table = FactTable.build((f"firm-{n}", {"talent_count": KnownFact(n, AS_OF)}) for n in range(10))
    fixed = parse_amount_rule({"kind": "fixed", "amount_fen": 100})
    rule = parse_rule({"fact": "talent_count", "op": "gte", "value": 8})
    first = CompiledItem("T-8", 1, rule, fixed)
    context = MaskContext(table, AS_OF, bucketed_from=1)
    context.prepare([first.plan], threads=1)
    later = parse_rule({"fact": "talent_count", "op": "gte", "value": 3})
    assert isinstance(later, Condition)
    passes, _ = context.leaf(later)
    assert unpack(passes, len(table)).tolist() == [n >= 3 for n in range(10)]


def test_stored_outcomes_read_back_as_conditions_and_a_rule_that_does_not_read_says_so() -> None:
    two = {
        "all": [
            {"fact": "mu_grade", "op": "in", "value": ["A", "B"]},
            {"fact": "credit_rating", "op": "in", "value": ["A"]},
        ]
    }
    stored = OUTCOME_CODE[Outcome.PASS] + OUTCOME_CODE[Outcome.UNKNOWN]
    for _ in range(2):  # read again: described once, the same
        views = condition_views(two, stored)
        assert [v.outcome for v in views] == [Outcome.PASS, Outcome.UNKNOWN]
        assert [v.path for v in views] == ["all[0]", "all[1]"]
        assert "亩均" in views[0].description
    # Another rule is described on its own; letters that do not fit, or a rule that does
    # not read, give one line saying so.
    one = {"fact": "credit_rating", "op": "in", "value": ["A"]}
    assert [v.outcome for v in condition_views(one, OUTCOME_CODE[Outcome.FAIL])] == [Outcome.FAIL]
    for rule, letters in ((two, OUTCOME_CODE[Outcome.PASS]), ({"fact": "no_such_fact"}, stored)):
        [unreadable] = condition_views(rule, letters)
        assert (unreadable.path, unreadable.outcome) == ("$", Outcome.UNKNOWN)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=st.lists(firm(), min_size=0, max_size=6),
    after=st.dictionaries(st.integers(0, 9), firm(), max_size=6),
    leaving=st.sets(st.integers(0, 9), max_size=3),
)
def test_a_patched_table_reads_as_one_built_from_the_facts_after(
    before: list[dict[str, KnownFact]],
    after: dict[int, dict[str, KnownFact]],
    leaving: set[int],
) -> None:
    """`FactTable.patched` (a kept copy brought up to date with the firms read again)
    against a table built from scratch: the same firms, each with the same facts,
    whatever their text dictionaries, invalid facts and absent kinds."""
    old = {f"firm-{i}": facts for i, facts in enumerate(before)}
    fresh = {f"firm-{i}": facts for i, facts in after.items() if i not in leaving}
    gone = {f"firm-{i}" for i in leaving}
    table = FactTable.build(old.items()).patched(FactTable.build(fresh.items()), gone)
    after_all = {u: facts for u, facts in {**old, **fresh}.items() if u not in gone}
    expected = FactTable.build(after_all.items())
    expected_firms = set(after_all)
    assert set(table.uscc) == expected_firms == set(expected.uscc)
    assert table.uscc == sorted(table.uscc)  # as a whole read orders them
    assert len(table.row_of) == len(table)
    for uscc in expected_firms:
        assert table.known_facts(table.row_of[uscc]) == expected.known_facts(
            expected.row_of[uscc]
        ), uscc
