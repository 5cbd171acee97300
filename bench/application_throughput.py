"""Throughput of application cases on the embedded stack, against a bare Temporal baseline.

Runs N cases from submission to the bank's receipt (dev server, SQLite, the worker
as its own process, the budget-system simulator answering at once), with a
scripted caseworker and finance officer approving through the API. Then, on the
same server, N bare workflows with the same number of activities, updates and a
child workflow, but no business logic. Last line:

    cases_per_s=X baseline_per_s=Y ratio=Z
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
from application_chaos import ROOT, Worker, _drive_case, _free_port, _prepare
from temporalio import activity, workflow
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner
from temporalio.worker import Worker as TemporalWorker

from api.main import create_app
from core.devstack import ensure_search_attributes, wait_for_http
from core.settings import Environment, Settings
from models.search_attributes import ALL as SEARCH_ATTRIBUTES

PARENT_ACTIVITIES = 9  # check, 2 deadlines, 5 projections, reservation
CHILD_ACTIVITIES = 3  # instruct, settlement, receipt


@activity.defn
async def noop(n: int) -> int:
    return n


@workflow.defn
class BareChild:
    @workflow.run
    async def run(self) -> None:
        for n in range(CHILD_ACTIVITIES):
            await workflow.execute_activity(noop, n, start_to_close_timeout=timedelta(seconds=30))


@workflow.defn
class BareCase:
    """The same shape as a case: activities, two approvals, a child; nothing else."""

    def __init__(self) -> None:
        self.approvals = 0

    @workflow.run
    async def run(self) -> None:
        for n in range(PARENT_ACTIVITIES):
            await workflow.execute_activity(noop, n, start_to_close_timeout=timedelta(seconds=30))
            if n in (3, 5):
                wanted = 1 if n == 3 else 2
                await workflow.wait_condition(lambda wanted=wanted: self.approvals >= wanted)  # type: ignore[misc]
        await workflow.execute_child_workflow(
            BareChild.run, id=f"{workflow.info().workflow_id}/child"
        )

    @workflow.update
    def approve(self) -> int:
        self.approvals += 1
        return self.approvals

    @workflow.query
    def waiting(self) -> bool:
        return True


async def _bare(env: WorkflowEnvironment, cases: int, concurrency: int) -> float:
    queue = f"bare-{uuid.uuid4()}"
    limit = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with limit:
            handle = await env.client.start_workflow(
                BareCase.run, id=f"bare-{queue}-{n}", task_queue=queue
            )
            for _ in range(2):
                await handle.execute_update(BareCase.approve)
            await handle.result()

    async with TemporalWorker(
        env.client,
        task_queue=queue,
        workflows=[BareCase, BareChild],
        activities=[noop],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        started = time.monotonic()
        await asyncio.gather(*(one(n) for n in range(cases)))
        return cases / (time.monotonic() - started)


async def run(cases: int, concurrency: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="zhida-throughput-"))
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        ui=False,
    )
    await ensure_search_attributes(
        env.client,
        env.client.namespace,
        {k.name: ("Bool" if k.name == "ZhidaOverdue" else "Keyword") for k in SEARCH_ATTRIBUTES},
    )
    sim_port = _free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    simulator = subprocess.Popen(  # noqa: ASYNC220 - once, before the run
        [
            sys.executable,
            "-m",
            "core.cli",
            "simulate",
            "budget",
            "--port",
            str(sim_port),
            "--receipt-delay-s",
            "0",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    settings = Settings(
        environment=Environment.TEST,
        database_url=f"sqlite+aiosqlite:///{work / 'throughput.db'}",
        temporal_address=env.client.service_client.config.target_host,
        temporal_namespace=env.client.namespace,
        task_queue=f"throughput-{uuid.uuid4()}",
        budget_system_url=sim_url,
    )
    worker_env = dict(os.environ)
    worker_env.update(
        ZHIDA_DATABASE_URL=settings.database_url,
        ZHIDA_TEMPORAL_ADDRESS=settings.temporal_address,
        ZHIDA_TEMPORAL_NAMESPACE=settings.temporal_namespace,
        ZHIDA_TASK_QUEUE=settings.task_queue,
        ZHIDA_BUDGET_SYSTEM_URL=sim_url,
        ZHIDA_ENVIRONMENT="test",
    )
    worker = Worker(worker_env, work / "worker.log")
    try:
        await wait_for_http(f"{sim_url}/v1/_simulator/config", within=30)
        firms = await _prepare(settings, cases)
        worker.start()
        app = create_app(settings, temporal=env.client)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=60
            ) as api,
        ):
            limit = asyncio.Semaphore(concurrency)

            async def one(n: int, uscc: str) -> None:
                async with limit:
                    state = await _drive_case(api, settings, env, n, uscc)
                    assert state.stage.value == "paid", state.stage

            started = time.monotonic()
            await asyncio.gather(*(one(n, u) for n, u in enumerate(firms, start=1)))
            elapsed = time.monotonic() - started
        worker.stop()
        cases_per_s = cases / elapsed
        baseline_per_s = await _bare(env, cases, concurrency)
        print(f"cases={cases} seconds={elapsed:.1f} (submission to receipt, approvals via the API)")
        print(
            f"cases_per_s={cases_per_s:.1f} baseline_per_s={baseline_per_s:.1f} "
            f"ratio={cases_per_s / baseline_per_s:.2f}"
        )
    finally:
        worker.stop()
        simulator.terminate()
        simulator.wait(timeout=10)
        await env.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(run(args.cases, args.concurrency))


if __name__ == "__main__":
    main()
