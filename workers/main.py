"""The worker that hosts zhida's workflows and activities on the main task queue."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from datetime import timedelta

import httpx
import structlog
import uvloop
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Interceptor, UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities.cases import CaseActivities
from activities.commitment import CommitmentActivities
from activities.facts import FactSyncActivities
from activities.harvest import HarvestActivities
from activities.matching import MatchingActivities
from activities.payments import PaymentActivities
from activities.policy import PolicyLibraryActivities
from activities.recognition import RecognitionActivities
from activities.review import ReviewActivities
from adapters.budget_system import BudgetSystemClient
from adapters.data_platform import DataPlatformClient
from adapters.message_channel import MessageChannelClient
from adapters.policy_feed import PolicyFeedClient
from core.db import make_engine, make_sessionmaker
from core.logging import configure_logging
from core.settings import Settings, get_settings
from core.temporal import connect
from core.workdays import WorkingCalendar, calendar_from
from workers.costs import ActivityCosts, count_statements
from workflows.all import ALL_WORKFLOWS

log = structlog.get_logger()


def build_worker(
    client: Client,
    task_queue: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    calendar: WorkingCalendar,
    budget_system: BudgetSystemClient,
    channel: MessageChannelClient,
    data_platform: DataPlatformClient,
    policy_feed: PolicyFeedClient | None = None,
    push_per_week: int = 3,
    match_threads: int = 2,
    sandboxed: bool = True,
    interceptors: Sequence[Interceptor] = (),
) -> Worker:
    library = PolicyLibraryActivities(sessionmaker, calendar)
    cases = CaseActivities(sessionmaker, calendar)
    payments = PaymentActivities(sessionmaker, budget_system)
    matching = MatchingActivities(sessionmaker, channel, push_per_week, match_threads)
    recognition = RecognitionActivities(sessionmaker, channel, data_platform)
    commitment = CommitmentActivities(sessionmaker, budget_system)
    review = ReviewActivities(sessionmaker, data_platform)
    facts = FactSyncActivities(sessionmaker, data_platform)
    # A worker given no feed (a test or bench of cases alone) does not harvest.
    intake = (
        [] if policy_feed is None else [HarvestActivities(sessionmaker, policy_feed).harvest_page]
    )
    return Worker(
        client,
        task_queue=task_queue,
        # On shutdown, activities in flight may finish their transaction instead of being
        # cancelled half-way through it (on SQLite that would leave the write lock held).
        graceful_shutdown_timeout=timedelta(seconds=10),
        workflows=ALL_WORKFLOWS,
        interceptors=interceptors,
        workflow_runner=SandboxedWorkflowRunner() if sandboxed else UnsandboxedWorkflowRunner(),
        activities=[
            library.working_deadline,
            library.record_review,
            library.publish_version,
            library.raise_overdue,
            library.expire_lapsed_versions,
            cases.check_application,
            cases.project_case,
            cases.enter_review,
            cases.raise_case_overdue,
            cases.reserve_budget,
            cases.close_case,
            cases.record_payment_failure,
            cases.warn_awaiting_budget,
            payments.send_instruction,
            payments.prepare_retry,
            payments.await_settlement,
            payments.record_receipt,
            payments.record_returned_payment,
            matching.run_match,
            matching.plan_pushes,
            matching.send_pushes,
            matching.collect_receipts,
            recognition.identify_batch,
            recognition.abandon_batch,
            recognition.apply_verification,
            recognition.case_page,
            recognition.finish_starting,
            recognition.batch_progress,
            recognition.open_batch_cases,
            recognition.close_batch,
            recognition.open_recognition_case,
            recognition.record_account,
            recognition.notify_firm,
            commitment.check_commitment,
            commitment.gather_evidence,
            commitment.record_prepayment,
            commitment.settle,
            commitment.open_recovery,
            commitment.collect_recovery,
            commitment.grant_plan,
            commitment.waive,
            commitment.record_default,
            commitment.close_recovery,
            commitment.notify,
            review.review_case,
            review.decide_findings,
            facts.sync_facts_page,
            *intake,
        ],
    )


async def run_worker(settings: Settings) -> None:
    engine = make_engine(settings.database_url, echo=settings.sql_echo)
    if settings.profile_activities:
        count_statements(engine)
    client = await connect(settings, identity="zhida-worker")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with (
        httpx.AsyncClient(
            base_url=settings.budget_system_url, timeout=settings.budget_system_timeout_s
        ) as budget_http,
        httpx.AsyncClient(
            base_url=settings.message_channel_url, timeout=settings.message_channel_timeout_s
        ) as channel_http,
        httpx.AsyncClient(
            base_url=settings.data_platform_url, timeout=settings.data_platform_timeout_s
        ) as platform_http,
        httpx.AsyncClient(
            base_url=settings.policy_feed_url, timeout=settings.policy_feed_timeout_s
        ) as feed_http,
    ):
        worker = build_worker(
            client,
            settings.task_queue,
            make_sessionmaker(engine),
            calendar_from(settings),
            BudgetSystemClient(budget_http),
            MessageChannelClient(channel_http),
            DataPlatformClient(platform_http),
            PolicyFeedClient(feed_http),
            push_per_week=settings.push_per_week,
            match_threads=settings.match_threads,
            sandboxed=settings.workflow_sandbox,
            interceptors=[ActivityCosts()] if settings.profile_activities else [],
        )
        log.info(
            "worker.started",
            task_queue=settings.task_queue,
            namespace=settings.temporal_namespace,
            sandboxed=settings.workflow_sandbox,
        )
        async with worker:
            await stop.wait()
    await engine.dispose()
    log.info("worker.stopped")


def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    # libuv's event loop: a worker's loop wakes for every activity task, workflow
    # activation and database round trip (aiosqlite answers from its thread), and
    # asyncio's own loop spent about a fifth of the worker's CPU on that.
    uvloop.run(run_worker(settings))


if __name__ == "__main__":
    main()
