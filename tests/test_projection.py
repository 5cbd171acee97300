"""The list projection kept case by case: what each projection leaves behind must be
what a full recount gives, however the projections of a firm's cases follow each other
(the projection skips the firm's sums when the case adds nothing new to them, and
resolves stage warnings only when the stage changed)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from domain import notices
from domain.cases import projection
from domain.notices import texts
from models.cases import CaseFirm, CaseStage, CaseState
from models.policy import StageWarning
from models.types import utcnow
from tests.fixtures.factories import create_enterprise

ITEM = "HZ-PROJ-01"


def _state(uscc: str, period: str, stage: CaseStage, **changes: object) -> CaseState:
    fields: dict[str, object] = {
        "case_id": f"application/{ITEM}/{period}/{uscc}",
        "item_code": ITEM,
        "version": 1,
        "period": period,
        "uscc": uscc,
        "stage": stage,
        "waiting_for_role": None,
        "waiting_for_department": None,
        "due_at": None,
        "overdue": False,
        "verdict": None,
        "computed_amount_fen": 100_000,
        "approved_amount_fen": None,
        "paid_amount_fen": 0,
        "instalment": 1,
        "corrections": [],
        "timeline": [],
    }
    return CaseState.model_validate({**fields, **changes})


async def _firm_rows(session: AsyncSession) -> list[tuple[object, ...]]:
    rows = await session.scalars(select(CaseFirm).order_by(col(CaseFirm.year)))
    return [(f.item_code, f.uscc, f.year, f.region_code, f.approved, f.paid) for f in rows]


async def test_a_firms_sums_follow_each_projection_as_a_full_recount_would(
    session: AsyncSession,
) -> None:
    firm = await create_enterprise(session, region_code="330502")
    uscc = firm.uscc
    q1, q2, q3 = "2026-Q1", "2026-Q2", "2027-Q1"
    later = utcnow() + timedelta(days=9)
    steps = [
        _state(uscc, q1, CaseStage.DEPARTMENT_REVIEW, due_at=utcnow()),
        _state(uscc, q1, CaseStage.DEPARTMENT_REVIEW, due_at=later),  # a new deadline only
        _state(uscc, q2, CaseStage.DEPARTMENT_REVIEW),
        _state(uscc, q1, CaseStage.FINANCE_REVIEW, approved_amount_fen=90_000),
        _state(uscc, q2, CaseStage.FINANCE_REVIEW, approved_amount_fen=50_000),
        _state(uscc, q2, CaseStage.WITHDRAWN, approved_amount_fen=50_000),  # approved, unpaid
        _state(uscc, q1, CaseStage.PAYMENT, approved_amount_fen=90_000),
        _state(uscc, q1, CaseStage.PAID, approved_amount_fen=90_000, paid_amount_fen=90_000),
        _state(uscc, q1, CaseStage.PAID, approved_amount_fen=90_000, paid_amount_fen=90_000),
        _state(uscc, q3, CaseStage.DEPARTMENT_REVIEW),  # another year: its own sums
        _state(uscc, q3, CaseStage.REJECTED),
    ]
    for n, state in enumerate(steps):
        await projection.project(session, state)
        await session.flush()
        kept = await _firm_rows(session)
        await projection.count_all_firms(session)
        await session.flush()
        session.expire_all()
        assert kept == await _firm_rows(session), f"after step {n}: {state.period} {state.stage}"
    assert await _firm_rows(session) == [
        (ITEM, uscc, 2026, "330502", True, True),
        (ITEM, uscc, 2027, "330502", False, False),
    ]


@pytest.mark.parametrize("again_at", [CaseStage.FINANCE_REVIEW, CaseStage.PAYMENT])
async def test_a_stage_warning_stays_open_while_the_case_is_at_its_stage(
    session: AsyncSession, again_at: CaseStage
) -> None:
    firm = await create_enterprise(session)
    state = _state(firm.uscc, "2026-Q1", CaseStage.FINANCE_REVIEW, approved_amount_fen=1)
    await projection.project(session, state)
    await notices.raise_stage_warning(
        session,
        subject=state.case_id,
        stage=CaseStage.FINANCE_REVIEW.value,
        department_code="czj",
        due_at=utcnow(),
        text=texts.case_overdue(ITEM, "finance_review", utcnow(), state.case_id),
    )
    await projection.project(session, state.model_copy(update={"stage": again_at}))
    await session.flush()
    warning = await session.scalar(
        select(StageWarning).where(col(StageWarning.subject) == state.case_id)
    )
    assert warning is not None
    await session.refresh(warning)
    assert (warning.resolved_at is None) == (again_at is CaseStage.FINANCE_REVIEW)
