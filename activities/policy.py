"""Activities of the policy library: database writes and the working-day calendar."""

from __future__ import annotations

from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.errors import business_errors
from core.workdays import SHANGHAI, WorkingCalendar
from domain import notices
from domain.notices import texts
from domain.policy import library
from models.policy_change import DeadlineRequest, PolicyChangeInput, ReviewOutcome, StageOverdue

log = structlog.get_logger()


class PolicyLibraryActivities:
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], calendar: WorkingCalendar
    ) -> None:
        self._sessionmaker = sessionmaker
        self._calendar = calendar

    @activity.defn
    async def working_deadline(self, request: DeadlineRequest) -> datetime:
        return self._calendar.add_working_days(request.start, request.working_days)

    @activity.defn
    async def record_review(self, outcome: ReviewOutcome) -> None:
        with business_errors():
            async with self._sessionmaker.begin() as session:
                await library.record_review(
                    session,
                    outcome.item_code,
                    outcome.version,
                    outcome.stage.value,
                    outcome.approved,
                    outcome.actor,
                    outcome.comment,
                    outcome.subject,
                )
        log.info(
            "policy_change.reviewed",
            item_code=outcome.item_code,
            version=outcome.version,
            stage=outcome.stage.value,
            approved=outcome.approved,
            actor=outcome.actor.name,
        )

    @activity.defn
    async def publish_version(self, change: PolicyChangeInput) -> None:
        with business_errors():
            async with self._sessionmaker.begin() as session:
                await library.publish_version(session, change.item_code, change.version)
        log.info("policy_change.published", item_code=change.item_code, version=change.version)

    @activity.defn
    async def expire_lapsed_versions(self, now: datetime) -> list[str]:
        async with self._sessionmaker.begin() as session:
            expired = await library.expire_lapsed_versions(session, now.astimezone(SHANGHAI).date())
        log.info("policy_library.expired", versions=expired)
        return expired

    @activity.defn
    async def raise_overdue(self, overdue: StageOverdue) -> None:
        text = texts.change_overdue(
            overdue.item_code, overdue.version, overdue.stage.value, overdue.due_at
        )
        async with self._sessionmaker.begin() as session:
            await notices.raise_stage_warning(
                session,
                subject=overdue.subject,
                stage=overdue.stage.value,
                department_code=overdue.department_code,
                due_at=overdue.due_at,
                text=text,
            )
        log.warning(
            "policy_change.overdue",
            item_code=overdue.item_code,
            version=overdue.version,
            stage=overdue.stage.value,
            department_code=overdue.department_code,
        )
