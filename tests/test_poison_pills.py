"""One bad item or one bad fact never stops a matching run for everyone else.

Values are planted straight into the database, past every validator: a fact that is a
string for an int kind, one of 10^30, a negative one, and item versions whose stored
rule no longer parses or holds an absurd number. The nightly (full) run completes for
every other item and firm, records each error where the item's department and ops
see it, and the endpoints answer 409 or a clear verdict for the poisoned pair.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import date
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.matching import MatchingActivities
from adapters.message_channel import MessageChannelClient
from core.db import make_engine, make_sessionmaker
from core.temporal_errors import ErrorType
from domain.engine.amounts import compute_amount, parse_amount_rule
from domain.engine.arrays import (
    CompiledItem,
    FactTable,
    ItemFailure,
    match_items,
    unpack,
)
from domain.engine.rules import AllOf, Condition, KnownFact, evaluate, invalid_fact, parse_rule
from domain.matching import match_library
from domain.matching.match_library import Evaluated, Loaded
from domain.policy import library
from domain.policy.versions import UnevaluableVersion, load_published, load_version
from domain.registry.enterprises import known_facts, load_fact_table
from models.eligibility import UnknownReason, Verdict
from models.matching import MatchError, MatchRequest, MatchResult, MatchScope
from models.policy import ItemCreate, PolicyItemVersion, StageWarning, VersionStatus
from models.registry import Fact
from tests.fixtures.api import auth
from tests.fixtures.factories import create_enterprise, create_users, item_payload
from tests.fixtures.stack import Stack
from workflows.matching import MatchOutcome
from workflows.starts import start_match_run

AS_OF = date(2026, 11, 27)
# Talent counts go up to 10^6; tests/test_matching_e2e.py takes bands below 500,000.
TALENT_BANDS = itertools.count(500_000, 2_000)
FRESH = date(2026, 6, 30)
FIXED = parse_amount_rule({"kind": "fixed", "amount_fen": 1_000})
REVENUE = parse_amount_rule({"kind": "rate", "fact": "revenue_fen", "rate": "0.01"})


def _item(code: str, rule: Any, amount: Any = FIXED) -> CompiledItem:
    return CompiledItem(code, 1, parse_rule(rule), amount)


# ----- the engine isolates what it cannot evaluate ------------------------------------


@pytest.mark.parametrize("firms", [3, 100])  # the one-firm path and the array path
def test_an_item_that_cannot_be_evaluated_fails_alone(firms: int) -> None:
    table = FactTable.build(
        (f"firm-{i}", {"credit_rating": KnownFact("A", FRESH)}) for i in range(firms)
    )
    # A condition that raises when compared (`between` a single number): what a rule
    # that slipped past validation would do. Two items share it; a third is sound.
    broken = Condition.model_construct(fact="credit_rating", op="between", value=5, label=None)
    bad_a = CompiledItem("BAD-A", 3, AllOf.model_construct(all=[broken]), FIXED)
    bad_b = CompiledItem("BAD-B", 1, broken, FIXED)
    good = _item("GOOD", {"fact": "credit_rating", "op": "eq", "value": "A"})
    items = [bad_a, good, bad_b]

    loaded = Loaded(items, table, {u: "330502" for u in table.uscc})
    evaluated = Evaluated(loaded, AS_OF, threads=2)
    assert {(f.item_code, f.version) for f in evaluated.failures} == {("BAD-A", 3), ("BAD-B", 1)}
    pairs = evaluated.pairs(good)
    assert pairs is not None and len(pairs) == firms
    assert {p.verdict for p in pairs} == {Verdict.ELIGIBLE}
    assert evaluated.pairs(bad_a) is None and evaluated.pairs(bad_b) is None

    failures: list[ItemFailure] = []
    [result] = match_items(table, items, AS_OF, threads=2, failures=failures)
    assert result.item is good and result.eligible_count == firms
    assert [f.item_code for f in failures] == ["BAD-A", "BAD-B"]
    assert "condition credit_rating between" in failures[0].message
    with pytest.raises(Exception, match="credit_rating"):  # without a list: raised
        match_items(table, items, AS_OF, threads=1)


def test_an_invalid_fact_reads_as_unknown_in_every_evaluator() -> None:
    rule = parse_rule(
        {
            "all": [
                {"fact": "credit_rating", "op": "eq", "value": "A"},
                {"fact": "revenue_fen", "op": "gte", "value": 100},
            ]
        }
    )
    planted = invalid_fact(10**30, "must be between 0 and 1,000,000,000,000,000 分", FRESH)
    facts = {"credit_rating": KnownFact("A", FRESH), "revenue_fen": planted}
    evaluation = evaluate(rule, facts, AS_OF)
    assert evaluation.verdict is Verdict.POSSIBLY_ELIGIBLE  # never passing
    revenue = evaluation.conditions[1]
    assert (revenue.reason, revenue.actual) == (UnknownReason.INVALID, planted.value)
    assert planted.value == "1000000000000000000000000000000"
    amount = compute_amount(REVENUE, facts)
    assert amount.amount_fen is None and "数据无效" in amount.explanation

    table = FactTable.build(
        [("poisoned", facts), ("sound", {**facts, "revenue_fen": KnownFact(500, FRESH)})]
    )
    [result] = match_items(table, [CompiledItem("T", 1, rule, REVENUE)], AS_OF)
    assert unpack(result.passes, 2).tolist() == [False, True]
    assert unpack(result.may_pass, 2).tolist() == [True, True]
    assert table.known_facts(0)["revenue_fen"] == planted
    assert [(u, k) for u, k, _f in table.invalid_facts()] == [("poisoned", "revenue_fen")]


# ----- reading planted rows --------------------------------------------------------------


async def _plant_version(session: AsyncSession, code: str, **columns: Any) -> None:
    """Overwrite stored columns of version 1, past every validator."""
    await session.execute(
        sa.update(PolicyItemVersion)
        .where(col(PolicyItemVersion.item_code) == code, col(PolicyItemVersion.version) == 1)
        .values(**columns)
    )


async def _create_item(session: AsyncSession, code: str, **payload: Any) -> None:
    users = await create_users(session)
    await library.create_item(
        session, users["jxj_staff"], ItemCreate.model_validate(item_payload(code, **payload))
    )


async def test_planted_facts_and_rules_are_read_as_invalid_not_as_errors(
    session: AsyncSession,
) -> None:
    firm = await create_enterprise(
        session,
        facts={
            "revenue_fen": ("lots", "2025"),
            "export_value_fen": (10**30, "2025"),
            "social_security_headcount": (-5, "2026-10"),
            "credit_rating": (7, "2025"),
            "talent_count": (3, "2025"),
        },
    )
    table, _regions = await load_fact_table(session, [firm.uscc])
    invalid = {kind: known for _u, kind, known in table.invalid_facts()}
    assert set(invalid) == {
        "revenue_fen",
        "export_value_fen",
        "social_security_headcount",
        "credit_rating",
    }
    assert invalid["revenue_fen"].invalid == "must be an integer"
    assert invalid["social_security_headcount"].invalid == "must be between 0 and 10,000,000 人"
    facts = await known_facts(session, firm.uscc)
    assert facts["talent_count"] == KnownFact(3, date(2025, 12, 31))
    assert facts["export_value_fen"].invalid is not None

    await _create_item(session, "POISON-V1")
    await _plant_version(session, "POISON-V1", eligibility={"all": "nonsense"})
    with pytest.raises(UnevaluableVersion) as caught:
        await load_version(session, "POISON-V1", 1)
    assert caught.value.status == 409
    assert "this version's rule cannot be evaluated: eligibility.all" in caught.value.detail

    await _create_item(session, "POISON-V2")
    await _plant_version(session, "POISON-V2", amount_rule={"kind": "fixed", "amount_fen": 10**30})
    with pytest.raises(UnevaluableVersion, match=r"amount_rule\.amount_fen"):
        await load_version(session, "POISON-V2", 1)

    if session.get_bind().dialect.name == "sqlite":  # PostgreSQL refuses text that is not JSON
        await session.execute(
            sa.text(
                "UPDATE policy_item_version SET eligibility = '{not json' WHERE item_code = :c"
            ),
            {"c": "POISON-V1"},
        )
        await session.execute(
            sa.text("UPDATE fact SET value = '[[[' WHERE uscc = :u AND kind = 'talent_count'"),
            {"u": firm.uscc},
        )
        with pytest.raises(UnevaluableVersion):
            await load_version(session, "POISON-V1", 1)
        facts = await known_facts(session, firm.uscc)
        assert facts["talent_count"].invalid == "is not a JSON value"

    await session.execute(
        sa.update(PolicyItemVersion)
        .where(col(PolicyItemVersion.item_code).in_(["POISON-V1", "POISON-V2"]))
        .values(status=VersionStatus.PUBLISHED)
    )
    await session.execute(
        sa.text(
            "UPDATE policy_item SET published_version = 1 WHERE code IN ('POISON-V1', 'POISON-V2')"
        )
    )
    items, failures = await load_published(session)
    assert {"POISON-V1", "POISON-V2"} <= {f.item_code for f in failures}
    assert not {"POISON-V1", "POISON-V2"} & {i.item_code for i in items}


# ----- the run activity: data errors do not retry, transport errors do -------------------


async def test_a_data_error_fails_the_run_without_retrying_and_a_transport_error_retries(
    tmp_path: Any,
) -> None:
    async with httpx.AsyncClient() as http:
        channel = MessageChannelClient(http)
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'never-opened.db'}")
        activities = MatchingActivities(make_sessionmaker(engine), channel, 3, 1)
        with pytest.raises(ApplicationError) as caught:
            await ActivityEnvironment().run(
                activities.run_match, MatchRequest(scope=MatchScope.ITEM, item_code=None)
            )
        assert caught.value.non_retryable and caught.value.type == ErrorType.MATCH_DATA_ERROR
        assert "needs item_code" in str(caught.value)
        await engine.dispose()

        nowhere = make_engine("postgresql+asyncpg://nobody@127.0.0.1:9/nothing")
        activities = MatchingActivities(make_sessionmaker(nowhere), channel, 3, 1)
        with pytest.raises(Exception) as transport:
            await ActivityEnvironment().run(
                activities.run_match, MatchRequest(scope=MatchScope.FULL)
            )
        assert not isinstance(transport.value, ApplicationError)  # retried by policy
        assert isinstance(
            transport.value, OSError | sa.exc.OperationalError | sa.exc.InterfaceError
        )
        await nowhere.dispose()


# ----- the nightly run over a poisoned database, end to end ------------------------------


async def _publish(stack: Stack, code: str, **payload: Any) -> None:
    async with stack.sessionmaker.begin() as session:
        users = await create_users(session)
        await library.create_item(
            session, users["jxj_staff"], ItemCreate.model_validate(item_payload(code, **payload))
        )
        await library.submit_version(
            session, users["jxj_staff"], code, 1, head_review_days=3, finance_review_days=5
        )
        await library.publish_version(session, code, 1)


async def _run(env: WorkflowEnvironment, stack: Stack, request: MatchRequest) -> MatchOutcome:
    request.receipt_polls_s = [0.3]
    handle = await start_match_run(
        env.client, stack.settings.task_queue, request, str(uuid.uuid4())
    )
    return await handle.result()


async def _rows(stack: Stack, firms: list[str]) -> dict[tuple[str, str], tuple[Any, ...]]:
    async with stack.sessionmaker() as session:
        rows = await session.scalars(select(MatchResult).where(col(MatchResult.uscc).in_(firms)))
        return {(r.item_code, r.uscc): (r.verdict, r.amount_fen, r.matched_at) for r in rows}


async def test_the_nightly_run_completes_around_poisoned_items_and_facts(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    tag = uuid.uuid4().hex[:5].upper()
    band = next(TALENT_BANDS)  # this test's own firms only
    talent = {"fact": "talent_count", "op": "between", "value": [band, band + 1000]}
    ok, broken, absurd = f"P{tag}-OK", f"P{tag}-BROKEN", f"P{tag}-ABSURD"
    await _publish(
        stack,
        ok,
        eligibility={"all": [talent, {"fact": "revenue_fen", "op": "gte", "value": 100}]},
        amount_rule={"kind": "rate", "fact": "revenue_fen", "rate": "0.01"},
    )
    for code in (broken, absurd):
        await _publish(stack, code, eligibility={"all": [talent]})

    async def firm(revenue: object) -> str:
        facts = {"talent_count": (band + 1, "2025"), "credit_rating": ("D", "2025")}
        async with stack.sessionmaker.begin() as session:
            return (
                await create_enterprise(session, facts={**facts, "revenue_fen": (revenue, "2025")})
            ).uscc

    sound, text, huge, negative = [await firm(v) for v in (10_000, "lots", 10**30, -100)]
    firms = [sound, text, huge, negative]
    # The broken item matched once, while it was sound: those rows must survive.
    await _run(dev_server, stack, MatchRequest(scope=MatchScope.ITEM, item_code=broken))
    before = await _rows(stack, firms)
    assert {u for (code, u) in before if code == broken} == set(firms)

    async with stack.sessionmaker.begin() as session:
        await _plant_version(session, broken, eligibility={"all": "nonsense"})
        await _plant_version(
            session,
            absurd,
            eligibility={"fact": "revenue_fen", "op": "gte", "value": 10**30},
            amount_rule={"kind": "fixed", "amount_fen": 10**30},
        )
    try:
        outcome = await _run(dev_server, stack, MatchRequest(scope=MatchScope.FULL))
        await _check_the_run(stack, outcome, tag, firms, before)
        await _check_the_endpoints(stack, outcome.match.run_id, tag, firms)
        # Once the item reads again, its department's warning closes.
        async with stack.sessionmaker.begin() as session:
            await _plant_version(session, broken, eligibility={"all": [talent]})
        await match_library.run(
            stack.sessionmaker, MatchRequest(scope=MatchScope.ITEM, item_code=broken), "t", AS_OF, 1
        )
        async with stack.sessionmaker() as session:
            warnings = list(
                await session.scalars(
                    select(StageWarning).where(col(StageWarning.subject) == f"match/{broken}")
                )
            )
        assert [w.resolved_at is not None for w in warnings] == [True]
    finally:  # the live database is shared: leave no poison for other tests' runs
        async with stack.sessionmaker.begin() as session:
            await session.execute(
                sa.update(PolicyItemVersion)
                .where(col(PolicyItemVersion.item_code).in_([broken, absurd]))
                .values(status=VersionStatus.SUSPENDED)
            )
            await session.execute(
                sa.delete(Fact).where(
                    col(Fact.uscc).in_([text, huge, negative]), col(Fact.kind) == "revenue_fen"
                )
            )


async def _check_the_run(
    stack: Stack,
    outcome: MatchOutcome,
    tag: str,
    firms: list[str],
    before: dict[tuple[str, str], tuple[Any, ...]],
) -> None:
    ok, broken, absurd = f"P{tag}-OK", f"P{tag}-BROKEN", f"P{tag}-ABSURD"
    sound, text, huge, negative = firms
    summary = outcome.match
    assert summary.item_errors >= 2 and summary.fact_errors >= 3

    rows = await _rows(stack, firms)
    # Every other item and firm: written. The sound firm is eligible with its amount;
    # the poisoned ones possibly eligible (their revenue unknown), with no amount.
    assert rows[(ok, sound)][:2] == ("eligible", 100)
    for poisoned in (text, huge, negative):
        assert rows[(ok, poisoned)][:2] == ("possibly_eligible", None)
    # The broken item's rows are as they were; the absurd item never had any.
    assert {k: v for k, v in rows.items() if k[0] == broken} == {
        k: v for k, v in before.items() if k[0] == broken
    }
    assert not [k for k in rows if k[0] == absurd]

    async with stack.sessionmaker() as session:
        errors = list(
            await session.scalars(
                select(MatchError).where(col(MatchError.run_id) == summary.run_id)
            )
        )
    by_item = {e.item_code: e.message for e in errors if e.item_code}
    assert "eligibility.all" in by_item[broken]
    assert "must be between 0" in by_item[absurd] and "amount_rule.amount_fen" in by_item[absurd]
    by_firm = {e.uscc: e for e in errors if e.uscc in firms}
    assert set(by_firm) == {text, huge, negative}
    assert by_firm[text].fact == "revenue_fen" and "must be an integer" in by_firm[text].message
    assert by_firm[huge].fact == "revenue_fen"  # SQLite reads 10^30 back as a float
    assert "must be" in by_firm[huge].message


async def _check_the_endpoints(stack: Stack, run_id: int, tag: str, firms: list[str]) -> None:
    ok, broken, absurd = f"P{tag}-OK", f"P{tag}-BROKEN", f"P{tag}-ABSURD"
    sound, text, huge, _negative = firms
    api, settings = stack.api, stack.settings
    admin, department = auth(settings, "admin"), auth(settings, "jxj_staff")

    # Ops read the run and its errors; a department does not.
    runs = await api.get("/api/v1/match-runs", headers=admin)
    assert runs.status_code == 200, runs.text
    [listed] = [r for r in runs.json()["items"] if r["id"] == run_id]
    assert listed["scope"] == "full" and listed["item_errors"] >= 2
    run = await api.get(f"/api/v1/match-runs/{run_id}", headers=admin)
    assert run.status_code == 200, run.text
    assert {broken, absurd} <= {e["item_code"] for e in run.json()["errors"]}
    assert {text, huge} <= {e["uscc"] for e in run.json()["errors"]}
    refused = await api.get(f"/api/v1/match-runs/{run_id}", headers=department)
    assert refused.status_code == 403
    assert (await api.get("/api/v1/match-runs/999999999", headers=admin)).status_code == 404

    # The department sees its item's error and the invalid facts its item reads...
    view = await api.get(f"/api/v1/items/{broken}/matches", headers=department)
    assert view.status_code == 200, view.text
    [error] = view.json()["errors"]
    assert error["item_code"] == broken and "eligibility.all" in error["message"]
    view = await api.get(f"/api/v1/items/{ok}/matches", headers=department)
    assert {e["uscc"] for e in view.json()["errors"]} >= {text, huge}
    # ...and was told, once, by a notice.
    notices = (await api.get("/api/v1/me/notices", headers=department)).json()
    about = [n for n in notices if n["subject"] == f"match/{broken}"]
    assert len(about) == 1 and about[0]["title"] == "政策匹配异常预警"

    # The poisoned pairs: 409 for a rule that cannot be evaluated, never 500 ...
    for path in (
        f"/api/v1/items/{broken}/eligibility/{sound}",
        f"/api/v1/items/{broken}/eligibility/{sound}/gaps",
        f"/api/v1/items/{broken}/versions/1/budget-preview",
        f"/api/v1/items/{absurd}/eligibility/{huge}",
        f"/api/v1/items/{absurd}/versions/1/budget-preview",
    ):
        response = await api.get(path, headers=admin)
        assert response.status_code == 409, (path, response.text)
        assert "this version's rule cannot be evaluated" in response.json()["detail"]
    # ... and a clear verdict for a firm whose fact is bad: unknown, reason invalid.
    report = await api.get(f"/api/v1/items/{ok}/eligibility/{huge}", headers=admin)
    assert report.status_code == 200, report.text
    assert report.json()["verdict"] == "possibly_eligible"
    assert report.json()["amount_fen"] is None
    revenue = next(c for c in report.json()["conditions"] if c["fact"] == "revenue_fen")
    assert (revenue["outcome"], revenue["reason"]) == ("unknown", "invalid")
    gaps = await api.get(f"/api/v1/items/{ok}/eligibility/{text}/gaps", headers=admin)
    assert gaps.status_code == 200, gaps.text
    [gap] = gaps.json()["gaps"]
    assert (gap["reason"], gap["actual"]) == ("invalid", "lots")
    assert gap["needed"].startswith("需更正数据后满足")
    preview = await api.get(f"/api/v1/items/{ok}/versions/1/budget-preview", headers=admin)
    assert preview.status_code == 200, preview.text
    assert preview.json()["eligible"] >= 1

    # The firm's own list reads, the broken item's line saying its conditions cannot.
    async with stack.sessionmaker.begin() as session:
        await create_users(session, enterprise_uscc=text)
    mine = await api.get("/api/v1/my/policies", headers=auth(settings, "qiye"))
    assert mine.status_code == 200, mine.text
    listed = {p["item_code"]: p for p in mine.json()["items"]}
    assert listed[ok]["verdict"] == "possibly_eligible"
    [unreadable] = listed[broken]["conditions"]
    assert unreadable["outcome"] == "unknown" and "无法读取" in unreadable["description"]
