import json

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from domain.registry.enterprises import known_facts, latest_facts, load_fact_table
from domain.registry.importer import ImportRejected, import_content
from models.registry import BankAccount, Enterprise, Fact
from tests.fixtures.factories import new_uscc

FETCHED = "2026-11-20T08:00:00+08:00"


def _jsonl(*rows: dict[str, object]) -> bytes:
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode()


def _firm(uscc: str, **over: object) -> dict[str, object]:
    return {
        "record": "enterprise",
        "uscc": uscc,
        "name": "湖州测试纺织有限公司",
        "region_code": "330502",
        "industry_code": "C1711",
        "size_class": "small",
        "established_on": "2012-03-04",
        **over,
    }


def _fact(uscc: str, kind: str, value: object, period: str = "2025") -> dict[str, object]:
    return {
        "record": "fact",
        "uscc": uscc,
        "kind": kind,
        "value": value,
        "period": period,
        "source": "亩均论英雄平台",
        "fetched_at": FETCHED,
    }


async def _count(session: AsyncSession, table: type) -> int:
    return int(await session.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


async def test_jsonl_import_then_reimport_changes_nothing(session: AsyncSession) -> None:
    uscc = new_uscc()
    content = _jsonl(
        _firm(uscc),
        _fact(uscc, "mu_grade", "A"),
        _fact(uscc, "tax_per_mu_fen", 4_200_000),
        {
            "record": "account",
            "uscc": uscc,
            "bank_name": "湖州银行",
            "account_name": "湖州测试纺织有限公司",
            "account_number": "6222000011112222333",
            "is_default": True,
        },
    )
    first = await import_content(session, content, "jsonl")
    assert (first.enterprises_created, first.facts_created, first.accounts_created) == (1, 2, 1)
    again = await import_content(session, content, "jsonl")
    assert again.unchanged == 4
    assert (
        again.enterprises_created,
        again.facts_created,
        again.facts_updated,
        again.accounts_created,
    ) == (0, 0, 0, 0)
    facts = await known_facts(session, uscc)
    assert facts["mu_grade"].value == "A"
    assert facts["tax_per_mu_fen"].value == 4_200_000


async def test_csv_of_one_kind_is_recognised_by_its_header(session: AsyncSession) -> None:
    a, b = new_uscc(), new_uscc("330503")
    csv = (
        "uscc,name,region_code,industry_code,size_class,established_on\n"
        f"{a},甲公司,330502,C3411,medium,2010-01-01\n"
        f"{b},乙公司,330503,F5123,micro,2020-05-05\n"
    ).encode()
    report = await import_content(session, csv, "csv")
    assert report.enterprises_created == 2
    facts_csv = (
        "uscc,kind,value,period,source,fetched_at\n"
        f"{a},social_security_headcount,120,2026-10,社保平台,{FETCHED}\n"
        f"{a},high_tech,true,2025,科技平台,{FETCHED}\n"
    ).encode()
    report = await import_content(session, facts_csv, "csv")
    assert report.facts_created == 2
    facts = await known_facts(session, a)
    assert facts["social_security_headcount"].value == 120
    assert facts["high_tech"].value is True


async def test_newer_period_supersedes_older(session: AsyncSession) -> None:
    uscc = new_uscc()
    await import_content(
        session, _jsonl(_firm(uscc), _fact(uscc, "mu_grade", "C", "2024")), "jsonl"
    )
    await import_content(session, _jsonl(_fact(uscc, "mu_grade", "A", "2025")), "jsonl")
    await import_content(
        session, _jsonl(_fact(uscc, "mu_grade", "D", "2023")), "jsonl"
    )  # late, older
    latest = await latest_facts(session, [uscc])
    assert latest[uscc]["mu_grade"].value == "A"
    assert latest[uscc]["mu_grade"].period == "2025"
    assert await session.scalar(sa.select(sa.func.count()).where(col(Fact.uscc) == uscc)) == 3


async def test_periods_ending_on_the_same_day_resolve_to_the_fact_written_last(
    session: AsyncSession,
) -> None:
    """A year, its fourth quarter and its December end on the same day: the firm's page,
    the rule evaluator and the engine's column table all read the one written last."""
    uscc = new_uscc()
    await import_content(
        session, _jsonl(_firm(uscc), _fact(uscc, "mu_grade", "A", "2025")), "jsonl"
    )
    await import_content(session, _jsonl(_fact(uscc, "mu_grade", "C", "2025-Q4")), "jsonl")
    await import_content(session, _jsonl(_fact(uscc, "mu_grade", "B", "2025-12")), "jsonl")
    await import_content(session, _jsonl(_fact(uscc, "mu_grade", "D", "2025-11")), "jsonl")

    latest = await latest_facts(session, [uscc])
    assert (latest[uscc]["mu_grade"].value, latest[uscc]["mu_grade"].period) == ("B", "2025-12")
    assert (await known_facts(session, uscc))["mu_grade"].value == "B"
    table, _ = await load_fact_table(session, [uscc])
    grades = table.columns["mu_grade"]
    assert grades.dictionary[grades.values[table.row_of[uscc]]] == "B"


async def test_bad_rows_reject_the_whole_file_and_write_nothing(session: AsyncSession) -> None:
    good, bad_check = new_uscc(), new_uscc()
    bad_check = bad_check[:-1] + ("0" if bad_check[-1] != "0" else "1")
    before = {t: await _count(session, t) for t in (Enterprise, Fact, BankAccount)}
    content = _jsonl(
        _firm(good),
        _fact(good, "mu_grade", "A"),
        _firm(bad_check),
        _fact(good, "mu_grade", "E"),
        _fact(good, "tax_per_mu_fen", "很多"),
        _firm(new_uscc(), region_code="999999"),
        {
            "record": "fact",
            "uscc": new_uscc(),
            "kind": "revenue_fen",
            "value": 1,
            "period": "2025",
            "source": "x",
            "fetched_at": FETCHED,
        },
        {"record": "invoice"},
    )
    with pytest.raises(ImportRejected) as caught:
        await import_content(session, content, "jsonl")
    errors = {e.field: e.message for e in caught.value.errors}
    assert errors == {
        "line 3.uscc": errors["line 3.uscc"],
        "line 4.value": "must be one of A, B, C, D",
        "line 5.value": "must be an integer",
        "line 8.record": "must be enterprise, fact or account",
    }
    assert errors["line 3.uscc"].startswith("check character is")
    assert {t: await _count(session, t) for t in (Enterprise, Fact, BankAccount)} == before


async def test_reference_errors_are_reported_per_row(session: AsyncSession) -> None:
    stranger = new_uscc()
    content = _jsonl(_firm(new_uscc(), region_code="999999"), _fact(stranger, "revenue_fen", 1))
    with pytest.raises(ImportRejected) as caught:
        await import_content(session, content, "jsonl")
    messages = {e.field: e.message for e in caught.value.errors}
    assert messages["line 1.region_code"] == "unknown region 999999"
    assert messages["line 2.uscc"] == f"enterprise {stranger} is not registered"


async def test_malformed_json_line_is_reported(session: AsyncSession) -> None:
    with pytest.raises(ImportRejected) as caught:
        await import_content(session, b'{"record": "enterprise"\n', "jsonl")
    assert caught.value.errors[0].field == "line 1"
