"""Throughput of application cases on the embedded stack, against a bare Temporal baseline.

Runs N cases from submission to the bank's receipt (dev server, SQLite, the worker
as its own process, the budget-system simulator answering at once), with a
scripted caseworker and finance officer approving through the API. Then, on the
same server, N bare workflows with the same number of activities, updates and a
child workflow, but no business logic. Both runs share the machine's cores with the
dev server, so the ratio is about CPU per case: the lines before the last say how
many milliseconds of CPU each case cost the dev server, the worker, the simulators
and this process (the API and the scripted users; for the bare run, its worker too).
Last line:

    cases_per_s=X baseline_per_s=Y ratio=Z

With --profile the cases run one at a time, with no bare run, and the worker logs what
each activity costs it (workers/costs.py); the table printed says, per activity, how
often a case runs it and its mean statements, CPU and wall time, and how much of the
worker's CPU per case the activities account for (the rest: workflow tasks, queries,
polling).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import time
import uuid
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import httpx
import uvloop
from application_chaos import POLL_S, _drive_case, _prepare
from stack import bench_stack, cpu_per_case, cpu_seconds
from temporalio import activity, workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner
from temporalio.worker import Worker as TemporalWorker

from api.main import create_app
from core.temporal import exit_after_client

# A case paid straight through: check, smart review, two review entries (deadline and
# projection), reservation, two projections (payment, paid).
PARENT_ACTIVITIES = 7
REVIEW_ENTRIES = (2, 3)  # after these activities, the case waits for an approval
CHILD_ACTIVITIES = 3  # instruct, settlement, receipt
REVIEWS = ("department_review", "finance_review")


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
        self.stage = "check"

    @workflow.run
    async def run(self) -> None:
        for n in range(PARENT_ACTIVITIES):
            await workflow.execute_activity(noop, n, start_to_close_timeout=timedelta(seconds=30))
            if n in REVIEW_ENTRIES:
                wanted = REVIEW_ENTRIES.index(n) + 1
                self.stage = REVIEWS[wanted - 1]
                await workflow.wait_condition(lambda wanted=wanted: self.approvals >= wanted)  # type: ignore[misc]
                self.stage = "disbursement"
        await workflow.execute_child_workflow(
            BareChild.run, id=f"{workflow.info().workflow_id}/child"
        )

    @workflow.update
    def approve(self) -> int:
        self.approvals += 1
        return self.approvals

    @workflow.query
    def waiting_at(self) -> str:
        return self.stage


async def _bare(env: WorkflowEnvironment, cases: int, concurrency: int) -> tuple[float, str]:
    """Cases per second of the bare workflow, and its CPU per case by process."""
    queue = f"bare-{uuid.uuid4()}"
    limit = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with limit:
            handle = await env.client.start_workflow(
                BareCase.run, id=f"bare-{queue}-{n}", task_queue=queue
            )
            for stage in REVIEWS:
                # Driven as the cases are (`_drive_case`): wait for the stage by query
                # every half second, then approve.
                while await handle.query(BareCase.waiting_at) != stage:  # noqa: ASYNC110
                    await asyncio.sleep(POLL_S)
                await handle.execute_update(BareCase.approve)
            await handle.result()

    async with TemporalWorker(
        env.client,
        task_queue=queue,
        workflows=[BareCase, BareChild],
        activities=[noop],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        started, before = time.monotonic(), cpu_seconds()
        await asyncio.gather(*(one(n) for n in range(cases)))
        elapsed, cpu = time.monotonic() - started, cpu_per_case(before, cpu_seconds(), cases)
        return cases / elapsed, cpu


def activity_costs(log: Path, cases: int) -> list[str]:
    """The worker's `activity.cost` lines summed up by activity, a line each, dearest first."""
    fields = ("statements", "cpu_ms", "wall_ms")
    sums: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(("calls", *fields), 0.0))
    for line in log.read_text().splitlines():
        if "activity.cost" not in line:
            continue
        values = dict(re.findall(r"(\w+)=(\S+)", line))
        row = sums[values["activity"]]
        row["calls"] += 1
        for name in fields:
            row[name] += float(values[name])
    ranked = sorted(sums.items(), key=lambda pair: -pair[1]["cpu_ms"])
    lines = [
        f"activity {name}: per_case={row['calls'] / cases:.1f} "
        + " ".join(f"{f}={row[f] / row['calls']:.1f}" for f in fields)
        for name, row in ranked
    ]
    total = {f: sum(row[f] for row in sums.values()) / cases for f in fields}
    lines.append(
        "activities per case: " + " ".join(f"{f}={value:.1f}" for f, value in total.items())
    )
    return lines


async def run(cases: int, concurrency: int, database_url: str | None, profile: bool) -> None:
    if profile:
        os.environ["ZHIDA_PROFILE_ACTIVITIES"] = "true"  # the worker's environment
        concurrency = 1
    async with bench_stack(
        "throughput", ["--receipt-delay-s", "0"], database_url=database_url
    ) as stack:
        settings, env = stack.settings, stack.env
        firms = await _prepare(settings, cases)
        stack.worker.start()
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

            started, before = time.monotonic(), cpu_seconds()
            await asyncio.gather(*(one(n, u) for n, u in enumerate(firms, start=1)))
            elapsed, cpu = time.monotonic() - started, cpu_per_case(before, cpu_seconds(), cases)
        stack.worker.stop()
        cases_per_s = cases / elapsed
        if profile:
            print(*activity_costs(stack.work / "worker.log", cases), sep="\n")
            print(f"cpu_ms_per_case cases (one at a time): {cpu}")
            return
        baseline_per_s, bare_cpu = await _bare(env, cases, concurrency)
    print(f"cases={cases} seconds={elapsed:.1f} (submission to receipt, approvals via the API)")
    print(f"cpu_ms_per_case cases: {cpu}")
    print(f"cpu_ms_per_case bare:  {bare_cpu}")
    print(
        f"cases_per_s={cases_per_s:.1f} baseline_per_s={baseline_per_s:.1f} "
        f"ratio={cases_per_s / baseline_per_s:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--database-url", help="an empty database (default: a new SQLite file)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the cases one at a time and print what each activity costs the worker",
    )
    args = parser.parse_args()
    # libuv's loop, as in the worker and the API processes: both runs' own processes (the
    # cases' API and users, the bare run's worker and users) use it alike.
    uvloop.run(run(args.cases, args.concurrency, args.database_url, args.profile))
    exit_after_client()


if __name__ == "__main__":
    main()
