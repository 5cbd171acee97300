"""The public data platform: its adapter against its simulator (over ASGI, and one
process as `make run` starts it), the simulator's dials and journal, and the sample
records `make run` loads into it."""

import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.data_platform import (
    DataPlatformClient,
    DataPlatformRefused,
    DataPlatformUnavailable,
    make_data_platform_client,
)
from adapters.http import ExternalSystemRefused, ExternalSystemUnavailable
from cli.devstack import load_data_platform, wait_for_http
from core.settings import PROJECT_ROOT, Settings
from models.data_platform import DATA_PLATFORM_KINDS, EnterpriseRecord, Relation
from models.uscc import make_uscc
from seed.data_platform import data_platform_records, planted_differences
from seed.sample import generate
from simulators.data_platform import DataPlatformConfig, create_app

ALL_KINDS = sorted(DATA_PLATFORM_KINDS)


def _uscc(n: int) -> str:
    return make_uscc("91", "330502", f"T{n:08d}")


A, B, C, D, E, STRANGER = (_uscc(n) for n in range(1, 7))


def _record(
    uscc: str, representative: str, parent: str | None = None, **facts: tuple[Any, date]
) -> dict[str, Any]:
    """A record as sent to `PUT /v1/_simulator/enterprises`; facts as (value, as_of)."""
    return {
        "uscc": uscc,
        "facts": {k: {"value": v, "as_of": on.isoformat()} for k, (v, on) in facts.items()},
        "legal_representative": representative,
        "parent_uscc": parent,
    }


LAST_YEAR = date(2025, 12, 31)
RECORDS = [
    _record(
        A,
        "LR-1",
        tax_paid_fen=(1_250_000, LAST_YEAR),
        credit_rating=("A", LAST_YEAR),
        blacklisted=(False, date(2026, 10, 31)),
        social_security_headcount=(42, date(2026, 10, 31)),
    ),
    _record(B, "LR-1", revenue_fen=(90_000_000, LAST_YEAR)),  # shares A's representative
    _record(C, "LR-3", env_penalty_count=(2, date(2026, 11, 27))),  # D's parent
    _record(D, "LR-4", C, mu_grade=("B", LAST_YEAR)),
    _record(E, "LR-5", C),  # another subsidiary of C
]


@asynccontextmanager
async def _platform(
    config: DataPlatformConfig | None = None, state: Path | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, DataPlatformClient]]:
    """The simulator over ASGI, its journal read at start, holding RECORDS."""
    app = create_app(config, state)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://p") as http,
    ):
        loaded = await http.put("/v1/_simulator/enterprises", json=RECORDS)
        assert loaded.status_code == 200, loaded.text
        yield http, DataPlatformClient(http)


# ----- facts ------------------------------------------------------------------------------


async def test_facts_come_with_their_source_and_the_day_they_hold_for() -> None:
    async with _platform() as (_http, platform):
        before = datetime.now(UTC)
        answer = await platform.facts(A, ["credit_rating", "tax_paid_fen", "mu_grade"])
        after = datetime.now(UTC)
    assert answer.uscc == A and answer.missing == ["mu_grade"]  # A has no grade
    assert [(r.kind, r.value, r.as_of, r.source) for r in answer.readings] == [
        ("credit_rating", "A", LAST_YEAR, "市信用办"),
        ("tax_paid_fen", 1_250_000, LAST_YEAR, "市税务局"),
    ]
    assert answer.retrieved_at.tzinfo is not None and before <= answer.retrieved_at <= after
    assert answer.retrieved_at.utcoffset() == timedelta(0)
    async with _platform() as (_http, platform):
        blacklisted = (await platform.facts(A, ["blacklisted"])).reading("blacklisted")
    assert blacklisted is not None and blacklisted.value is False  # a bool, not 0


async def test_a_firm_the_platform_does_not_know_has_every_kind_missing() -> None:
    async with _platform() as (_http, platform):
        answer = await platform.facts(STRANGER, ALL_KINDS)
    assert answer.readings == [] and answer.missing == ALL_KINDS


async def test_an_invalid_credit_code_or_an_unknown_kind_is_refused_by_name() -> None:
    async with _platform() as (http, platform):
        for path, named in (
            (f"/v1/enterprises/{A}/facts?kinds=tax_paid_fen,turnover_fen", "turnover_fen"),
            (f"/v1/enterprises/{A}/facts?kinds=tax_paid_fen,,mu_grade", "empty"),
            ("/v1/enterprises/91330502NOTACODE/facts?kinds=tax_paid_fen", "91330502NOTACODE"),
            ("/v1/enterprises/91330502NOTACODE/related-parties", "91330502NOTACODE"),
        ):
            reply = await http.get(path)
            assert reply.status_code == 422 and named in reply.json()["detail"], path
        too_many = ",".join(ALL_KINDS * 6)  # 60 names, but only 10 kinds once each
        assert (await http.get(f"/v1/enterprises/{A}/facts?kinds={too_many}")).status_code == 200
        fifty_one = ",".join(f"kind_{n}" for n in range(51))
        reply = await http.get(f"/v1/enterprises/{A}/facts?kinds={fifty_one}")
        assert reply.status_code == 422 and "at most 50" in reply.json()["detail"]
        bad_batch = await http.post("/v1/related-parties:batchGet", json={"usccs": [A, "X1"]})
        assert bad_batch.status_code == 422
        assert bad_batch.json()["detail"][0]["loc"] == ["body", "usccs", 1]

        with pytest.raises(DataPlatformRefused) as unknown_kind:
            await platform.facts(A, ["tax_paid_fen", "turnover_fen"])
        assert unknown_kind.value.status_code == 422
        assert unknown_kind.value.reason == "HTTP 422：unknown kind: turnover_fen"
        with pytest.raises(DataPlatformRefused) as invalid:
            await platform.facts("91330502NOTACODE", ["tax_paid_fen"])
        assert "91330502NOTACODE" in invalid.value.reason
        with pytest.raises(DataPlatformRefused):
            await platform.related_parties("91330502NOTACODE")
    assert issubclass(DataPlatformRefused, ExternalSystemRefused)
    assert issubclass(DataPlatformUnavailable, ExternalSystemUnavailable)


# ----- related parties --------------------------------------------------------------------


def _relations(parties: Any) -> list[tuple[str, Relation]]:
    return [(p.uscc, p.relation) for p in parties.related]


async def test_related_parties_are_derived_from_the_records_both_ways() -> None:
    async with _platform() as (http, platform):
        a, b, c, d = [await platform.related_parties(u) for u in (A, B, C, D)]
        assert a is not None and b is not None and c is not None and d is not None
        assert _relations(a) == [(B, Relation.LEGAL_REPRESENTATIVE)]
        assert _relations(b) == [(A, Relation.LEGAL_REPRESENTATIVE)]
        assert a.legal_representative == b.legal_representative == "LR-1"
        assert _relations(c) == [(D, Relation.SUBSIDIARY), (E, Relation.SUBSIDIARY)]
        assert _relations(d) == [(C, Relation.PARENT)] and d.parent_uscc == C
        assert c.parent_uscc is None and c.retrieved_at.tzinfo is not None
        assert await platform.related_parties(STRANGER) is None  # a 404

        # A record changed: the relations follow (D leaves C for A, and takes B's
        # representative).
        moved = _record(D, "LR-1", A)
        assert (await http.put("/v1/_simulator/enterprises", json=[moved])).status_code == 200
        c_after, a_after = await platform.related_parties(C), await platform.related_parties(A)
        assert c_after is not None and _relations(c_after) == [(E, Relation.SUBSIDIARY)]
        assert a_after is not None and _relations(a_after) == [
            (B, Relation.LEGAL_REPRESENTATIVE),
            (D, Relation.LEGAL_REPRESENTATIVE),
            (D, Relation.SUBSIDIARY),
        ]
        held = await http.get(f"/v1/_simulator/enterprises/{D}")
        assert EnterpriseRecord.model_validate(held.json()) == EnterpriseRecord(**moved)


async def test_related_parties_of_many_firms_are_asked_a_thousand_at_a_time() -> None:
    many = [_uscc(1000 + n) for n in range(1203)]
    group = [_record(uscc, f"LR-G{n // 2}") for n, uscc in enumerate(many)]  # pairs share
    asked: list[httpx.Request] = []

    async def count(request: httpx.Request) -> None:
        asked.append(request)

    app = create_app()
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://p") as admin,
        httpx.AsyncClient(
            transport=transport, base_url="http://p", event_hooks={"request": [count]}
        ) as http,
    ):
        assert (await admin.put("/v1/_simulator/enterprises", json=group)).status_code == 200
        strangers = [_uscc(9000 + n) for n in range(5)]
        wanted = [*many[:600], *strangers, *many[600:], many[0]]  # the first asked again
        parties = await DataPlatformClient(http).related_parties_many(wanted)
        assert [p.uscc for p in parties] == many  # in the order asked, each once
        assert _relations(parties[0]) == [(many[1], Relation.LEGAL_REPRESENTATIVE)]
        pages = [len(json.loads(r.content)["usccs"]) for r in asked]
        assert pages == [1000, 208]  # 1208 firms asked, each once
        assert len({p.retrieved_at for p in parties}) == 2
        too_many = await admin.post("/v1/related-parties:batchGet", json={"usccs": many})
        assert too_many.status_code == 422
        assert await DataPlatformClient(http).related_parties_many([]) == []


# ----- dials ------------------------------------------------------------------------------


async def test_a_busy_platform_is_unavailable_for_every_question() -> None:
    async with _platform(DataPlatformConfig(failure_rate=1.0)) as (_http, platform):
        with pytest.raises(DataPlatformUnavailable, match="HTTP 503"):
            await platform.facts(A, ["tax_paid_fen"])
        with pytest.raises(DataPlatformUnavailable, match="HTTP 503"):
            await platform.related_parties(A)
        with pytest.raises(DataPlatformUnavailable, match="HTTP 503"):
            await platform.related_parties_many([A])


async def test_an_old_snapshot_moves_every_as_of_back() -> None:
    async with _platform() as (http, platform):
        fresh = await platform.facts(A, ALL_KINDS)
        await http.put("/v1/_simulator/config", json={"stale_rate": 1.0})
        stale = await platform.facts(A, ALL_KINDS)
        await http.put("/v1/_simulator/config", json={"stale_rate": 1.0, "stale_days": 30})
        month_old = await platform.facts(A, ALL_KINDS)
    assert len(fresh.readings) == 4 and stale.missing == fresh.missing
    assert [(r.kind, r.value, r.as_of + timedelta(days=800)) for r in stale.readings] == [
        (r.kind, r.value, r.as_of) for r in fresh.readings
    ]
    assert [r.as_of + timedelta(days=30) for r in month_old.readings] == [
        r.as_of for r in fresh.readings
    ]


async def test_withheld_figures_are_missing_and_a_seed_replays_which() -> None:
    async with _platform(DataPlatformConfig(missing_rate=1.0)) as (http, platform):
        answer = await platform.facts(A, ALL_KINDS)
        assert answer.readings == [] and answer.missing == ALL_KINDS
        runs = []
        for _run in range(2):
            await http.put("/v1/_simulator/config", json={"missing_rate": 0.5, "seed": 3})
            runs.append([(await platform.facts(A, ALL_KINDS)).missing for _ in range(5)])
    assert runs[0] == runs[1] and len({tuple(m) for m in runs[0]}) > 1


# ----- a malformed answer is no answer ---------------------------------------------------


def _answering(body: Any) -> httpx.AsyncClient:
    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=body)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://x")


@pytest.mark.parametrize(
    ("body", "call"),
    [
        ({"uscc": A, "readings": []}, "facts"),  # no `missing`
        (
            {  # a bool where the kind is a number
                "uscc": A,
                "readings": [
                    {"kind": "tax_paid_fen", "value": True, "as_of": "2025-12-31", "source": "税"}
                ],
                "missing": [],
            },
            "facts",
        ),
        ({"uscc": B, "readings": [], "missing": ["tax_paid_fen"]}, "facts"),  # another firm
        ({"uscc": A, "readings": [], "missing": []}, "facts"),  # a kind left out
        ({"uscc": A, "legal_representative": "LR", "related": []}, "related"),
        ({"parties": [], "unknown": [B]}, "many"),  # about another firm
        ("not an object", "many"),
    ],
)
async def test_a_malformed_answer_is_unavailable(body: Any, call: str) -> None:
    calls: dict[str, Callable[[DataPlatformClient], Any]] = {
        "facts": lambda p: p.facts(A, ["tax_paid_fen"]),
        "related": lambda p: p.related_parties(A),
        "many": lambda p: p.related_parties_many([A]),
    }
    async with _answering(body) as http:
        with pytest.raises(DataPlatformUnavailable):
            await calls[call](DataPlatformClient(http))


def test_the_client_is_built_from_the_settings() -> None:
    settings = Settings(data_platform_timeout_s=2.5)
    assert settings.data_platform_url == "http://127.0.0.1:8300"
    client = make_data_platform_client(settings)
    assert str(client._http.base_url) == "http://127.0.0.1:8300"
    assert client._http.timeout == httpx.Timeout(2.5)


# ----- the journal ------------------------------------------------------------------------


async def test_records_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "data-platform.jsonl"
    async with _platform(state=state) as (_http, platform):
        first = await platform.facts(A, ALL_KINDS)
    assert state.exists()
    app = create_app(state_file=state)  # nothing loaded this time
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://p") as http,
    ):
        platform = DataPlatformClient(http)
        again = await platform.facts(A, ALL_KINDS)
        assert again.readings == first.readings and again.missing == first.missing
        c = await platform.related_parties(C)  # the relations are indexed again
        assert c is not None and _relations(c) == [
            (D, Relation.SUBSIDIARY),
            (E, Relation.SUBSIDIARY),
        ]
        # The same records sent again write nothing more.
        size = state.stat().st_size
        reply = await http.put("/v1/_simulator/enterprises", json=RECORDS)
        assert reply.json() == {"received": 5, "changed": 0}
        assert state.stat().st_size == size


async def test_zhida_simulate_data_platform_survives_sigkill_and_hangs_on_demand(
    tmp_path: Path,
) -> None:
    """The simulator as `make run` starts it: the command line, a state file; killed
    outright between two runs."""
    state = tmp_path / "data-platform-simulator.json"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        *[sys.executable, "-m", "cli.main", "simulate", "data-platform", "--port", str(port)],
        *["--state-file", str(state)],
    ]
    url = f"http://127.0.0.1:{port}"
    for run in range(2):
        process = subprocess.Popen(command, cwd=PROJECT_ROOT)  # noqa: ASYNC220
        try:
            await wait_for_http(f"{url}/v1/_simulator/config", within=60)
            async with httpx.AsyncClient(base_url=url, timeout=5) as http:
                platform = DataPlatformClient(http)
                if run == 0:
                    await http.put("/v1/_simulator/enterprises", json=RECORDS)
                d = await platform.related_parties(D)
                assert d is not None and _relations(d) == [(C, Relation.PARENT)]
                answer = await platform.facts(A, ["tax_paid_fen"])
                assert answer.readings[0].value == 1_250_000
                if run == 1:
                    dials = {"hang_rate": 1.0, "hang_s": 5}
                    assert (await http.put("/v1/_simulator/config", json=dials)).is_success
            if run == 1:
                async with httpx.AsyncClient(base_url=url, timeout=0.5) as impatient:
                    with pytest.raises(DataPlatformUnavailable, match="ReadTimeout"):
                        await DataPlatformClient(impatient).facts(A, ["tax_paid_fen"])
        finally:
            process.kill()  # SIGKILL: no shutdown hook writes anything
            process.wait()


# ----- the sample records `make run` loads ------------------------------------------------

TODAY = date(2026, 11, 28)


def _registry(count: int) -> dict[str, dict[str, Any]]:
    return {
        e["uscc"]: {f["kind"]: (f["value"], f["period_end"]) for f in facts}
        for e, facts, _account in generate(count, TODAY)
    }


def test_the_sample_platform_agrees_with_the_registry_but_for_the_planted_differences() -> None:
    registry = _registry(300)
    records = list(data_platform_records(300, TODAY))
    assert records == list(data_platform_records(300, TODAY))  # deterministic
    planted = planted_differences(300, TODAY)
    assert [r.uscc for r in records] == list(registry)
    first = records[0].uscc  # the demo enterprise's firm is left as the registry has it
    singled_out = [planted.tax_understated, planted.blacklisted, planted.env_penalised]
    pairs = [*planted.shared_representatives, planted.parent_and_subsidiary]
    everyone = [*singled_out, *(u for pair in pairs if pair for u in pair)]
    assert None not in everyone and len(set(everyone)) == 9 and first not in everyone

    differences = []
    for record in records:
        held = registry[record.uscc]
        assert set(record.facts) == {k for k in held if k in DATA_PLATFORM_KINDS} | {
            "patent_count",
            "env_penalty_count",
        }
        for kind, fact in record.facts.items():
            if kind in held and (fact.value, fact.as_of) != held[kind]:
                differences.append((record.uscc, kind, held[kind][0], fact.value))
        if record.facts["env_penalty_count"].value:
            differences.append((record.uscc, "env_penalty_count", 0, 2))
    declared = registry[planted.tax_understated or ""]["tax_paid_fen"][0]
    assert sorted(differences) == sorted(
        [
            (planted.tax_understated, "tax_paid_fen", declared, round(declared * 0.7)),
            (planted.blacklisted, "blacklisted", False, True),
            (planted.env_penalised, "env_penalty_count", 0, 2),
        ]
    )

    by_uscc = {r.uscc: r for r in records}
    for one, other in planted.shared_representatives:
        assert by_uscc[one].legal_representative == by_uscc[other].legal_representative
    assert len({r.legal_representative for r in records}) == 300 - 2
    parent, subsidiary = planted.parent_and_subsidiary or ("", "")
    assert [r.uscc for r in records if r.parent_uscc] == [subsidiary]
    assert by_uscc[subsidiary].parent_uscc == parent


def test_a_small_sample_plants_what_fits() -> None:
    planted = planted_differences(5, TODAY)
    assert planted.env_penalised is not None
    assert planted.shared_representatives == () and planted.parent_and_subsidiary is None
    assert len(list(data_platform_records(1, TODAY))) == 1


async def test_make_run_loads_the_sample_into_the_platform_once() -> None:
    app = create_app()
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://p") as http,
    ):
        loaded = await load_data_platform(http, data_platform_records(250, TODAY), chunk=100)
        assert loaded == 250
        assert await load_data_platform(http, data_platform_records(250, TODAY)) == 0
        planted = planted_differences(250, TODAY)
        platform = DataPlatformClient(http)
        penalised = await platform.facts(planted.env_penalised or "", ["env_penalty_count"])
        assert penalised.readings[0].value == 2
        assert penalised.readings[0].source == "市生态环境局"
        parent, subsidiary = planted.parent_and_subsidiary or ("", "")
        parties = await platform.related_parties(parent)
        assert parties is not None and _relations(parties) == [(subsidiary, Relation.SUBSIDIARY)]
