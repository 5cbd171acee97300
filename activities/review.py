"""Activities of the smart review: evidence from the public data platform and the
duplicate-funding check, for one case."""

from __future__ import annotations

from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.errors import business_errors
from adapters.data_platform import DataPlatformClient, DataPlatformRefused, DataPlatformUnavailable
from core.db import reader_of
from core.workdays import SHANGHAI
from domain import review
from domain.review import evidence as weighing
from domain.review.findings import record_decision
from models.data_platform import FactsAnswer
from models.review import FindingDecision, ReviewOutcome, ReviewRequest

log = structlog.get_logger()

# The platform is asked again (Temporal retries the activity, the review waits) this many
# times before the review goes on with the facts marked unavailable, for a person.
PLATFORM_ATTEMPTS = 4


class ReviewActivities:
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], data_platform: DataPlatformClient
    ) -> None:
        self._sessionmaker = sessionmaker
        self._reader = reader_of(sessionmaker)
        self._platform = data_platform

    @activity.defn
    async def review_case(self, request: ReviewRequest) -> ReviewOutcome:
        today = datetime.now(SHANGHAI).date()
        with business_errors():
            async with self._reader() as session:
                plan = await review.plan(session, request)
        answer, related, problems = await self._ask_platform(plan)
        async with self._sessionmaker.begin() as session:
            await review.record(session, plan)
        async with self._sessionmaker.begin() as session:
            findings = await review.check(session, plan, related)
        evidence = weighing.weigh(
            plan.kinds,
            answer,
            plan.declared,
            today,
            plan.checks.declared_tolerance_pct,
            unavailable="; ".join(problems),
        )
        to_verify = weighing.to_verify(evidence)
        if plan.needs_relations and problems:
            to_verify.append("需人工核实：关联企业关系无法从公共数据平台获取，关联企业拆分未核查")
        log.info(
            "review.done",
            case_id=request.case_id,
            point=request.point,
            findings=len(findings),
            unknown=len(to_verify),
        )
        return ReviewOutcome(evidence=evidence, findings=findings, to_verify=to_verify)

    async def _ask_platform(
        self, plan: review.ReviewPlan
    ) -> tuple[FactsAnswer | None, dict[str, str], list[str]]:
        """The platform's facts and the firm's related parties; while the platform is down
        the activity fails (and is retried), up to PLATFORM_ATTEMPTS, then goes on
        without them, saying why."""
        uscc = plan.request.uscc
        try:
            answer = await self._platform.facts(uscc, plan.kinds) if plan.kinds else None
            related: dict[str, str] = {}
            if plan.needs_relations:
                parties = await self._platform.related_parties(uscc)
                if parties is not None:
                    related = {p.uscc: p.relation.value for p in parties.related}
            return answer, related, []
        except DataPlatformUnavailable as exc:
            if activity.info().attempt < PLATFORM_ATTEMPTS:
                raise
            log.warning("review.platform_unavailable", case_id=plan.request.case_id, error=str(exc))
            return None, {}, [f"多次请求未获应答（{exc}）"]
        except DataPlatformRefused as exc:
            log.warning("review.platform_refused", case_id=plan.request.case_id, error=str(exc))
            return None, {}, [f"请求被拒绝（{exc.reason}）"]

    @activity.defn
    async def decide_findings(self, decision: FindingDecision) -> None:
        async with self._sessionmaker.begin() as session:
            await record_decision(session, decision)
        log.info(
            "review.findings_decided",
            case_id=decision.case_id,
            findings=decision.finding_ids,
            status=decision.status.value,
        )
