"""Crash test of application cases (invariants 1 to 3).

Runs N application cases from submission to payment on a real Temporal dev server,
with the budget-system simulator failing a share of calls (5xx before the work,
replies lost after it, replies slower than the client waits) and the worker
process killed with SIGKILL and restarted at random moments. Afterwards every case
must be paid exactly once for its approved amount, the ledger must reconcile with
the simulator's statement, and no quota may be overspent.

    python bench/application_chaos.py --cases 200

Scaled out (`--workers 2 --api-processes 2`): two worker processes share the task
queue and the API runs as uvicorn with two processes, called over HTTP; one worker
is killed outright, `--kills` times in all, and never restarted, so the others must
finish every case. `--database-url` runs it on a database of your own (PostgreSQL,
say; it must be empty and migrated, or new).

Last line: cases=N paid_once=N double_paid=0 lost=0 overspent_fen=0 unreconciled=0
(the counts observed). Exit status 0 only if all of those hold.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from datetime import date, datetime
from functools import partial
from typing import Any

import httpx
from stack import BenchStack, Worker, bench_stack, start_api
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from adapters.budget_system import BudgetSystemClient
from api.main import create_app
from core.db import make_engine, make_sessionmaker
from core.migrate import upgrade_async
from core.security import issue_token
from core.settings import Settings
from core.temporal import exit_after_client
from core.workdays import SHANGHAI
from domain.money import budget
from domain.policy import library
from models.budget_system import InstructionState
from models.cases import CaseState, application_case_id
from models.policy import ItemCreate
from models.reference import Actor, Role, User
from models.registry import BankAccount, Enterprise, Fact
from seed.reference import demo_users, ensure_reference_data, ensure_users
from seed.sample import generate
from workflows.application import ApplicationWorkflow

CaseHandle = WorkflowHandle[ApplicationWorkflow, CaseState]
ITEM = "CHAOS-01"
AMOUNT = 1_000_000
PERIOD = "2026"
POLL_S = 0.5  # how often a scripted caseworker looks whether a case waits for them


async def _prepare(settings: Settings, cases: int) -> list[str]:
    await upgrade_async(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine).begin() as session:
            await ensure_reference_data(session)
            await ensure_users(session, demo_users(None))
            firms = []
            for enterprise, facts, account in generate(cases, as_of=time_today()):
                session.add(Enterprise(**enterprise))
                firms.append(enterprise["uscc"])
                await session.flush()
                session.add(BankAccount(**account))
                session.add(
                    Fact(**{**facts[0], "kind": "credit_rating", "value": "A", "period": "2025"})
                )
                session.add(
                    User(
                        name=f"firm-{len(firms)}",
                        display_name="企业",
                        role=Role.ENTERPRISE,
                        enterprise_uscc=enterprise["uscc"],
                    )
                )
            staff = Actor(
                name="jxj_staff", role=Role.DEPARTMENT_CASEWORKER, department_code="330500-JXJ"
            )
            await library.create_item(
                session, staff, ItemCreate.model_validate(application_item(cases))
            )
            await library.submit_version(
                session, staff, ITEM, 1, head_review_days=3, finance_review_days=5
            )
            await library.publish_version(session, ITEM, 1)
            # Finance sets the year's quota: exactly enough, so any double payment overspends.
            await budget.set_quota(session, ITEM, int(PERIOD), AMOUNT * cases, "czj_staff")
        return firms
    finally:
        await engine.dispose()


def time_today() -> date:
    return datetime.now(SHANGHAI).date()


def application_item(
    cases: int, code: str = ITEM, title: str = "崩溃测试补助", amount_fen: int = AMOUNT
) -> dict[str, object]:
    """An application item open to firms rated A or B, paying a fixed sum, whose year's
    quota is exactly enough for `cases` (any double payment would overspend it)."""
    stages = [
        {"stage": "department_review", "department_code": "330500-JXJ", "working_days": 3},
        {"stage": "finance_review", "department_code": "330500-CZJ", "working_days": 3},
        {"stage": "payment", "department_code": "330500-CZJ", "working_days": 3},
    ]
    return {
        "code": code,
        "document": {
            "doc_number": "湖政发〔2024〕8号",
            "title": "测试",
            "issuer": "湖州市人民政府",
            "level": "city",
            "issued_on": "2024-02-18",
        },
        "department_code": "330500-JXJ",
        "region_code": "330500",
        "title": title,
        "category": "application",
        "eligibility": {"all": [{"fact": "credit_rating", "op": "in", "value": ["A", "B"]}]},
        "amount_rule": {"kind": "fixed", "amount_fen": amount_fen},
        "annual_quota_fen": amount_fen * cases,
        "stages": stages,
        "valid_from": "2026-01-01",
        "valid_to": "2027-12-31",
        "change_reason": "基准测试",
    }


async def _drive_case(
    api: httpx.AsyncClient,
    settings: Settings,
    env: WorkflowEnvironment,
    n: int,
    uscc: str,
    hold: asyncio.Event | None = None,
) -> CaseState:
    """A firm applies; a scripted caseworker and finance officer approve.

    With `hold`, finance waits for it before approving, so the case is provably in
    flight until then."""
    firm = {"Authorization": f"Bearer {issue_token(settings, f'firm-{n}')}"}
    await _retry(
        partial(api.post, "/api/v1/cases", json={"item_code": ITEM, "period": PERIOD}, headers=firm)
    )
    case_id = application_case_id(ITEM, PERIOD, uscc)
    handle: CaseHandle = env.client.get_workflow_handle_for(ApplicationWorkflow.run, case_id)
    base = f"/api/v1/cases/application/{ITEM}/{PERIOD}/{uscc}/decisions"
    for stage, user in (("department_review", "jxj_staff"), ("finance_review", "czj_staff")):
        await _reach(handle, stage)
        if stage == "finance_review" and hold is not None:
            await hold.wait()
        headers = {
            "Authorization": f"Bearer {issue_token(settings, user)}",
            "Idempotency-Key": f"{case_id}:{stage}",
        }
        await _retry(partial(api.post, base, json={"action": "approve"}, headers=headers))
    return await handle.result()


async def _reach(handle: WorkflowHandle[ApplicationWorkflow, CaseState], stage: str) -> None:
    """Poll as a caseworker's inbox would until the case waits at `stage`."""
    while True:
        try:
            if (await handle.query(ApplicationWorkflow.state)).stage.value == stage:
                return
        except RPCError:
            pass  # no worker to answer the query just now
        await asyncio.sleep(POLL_S)


async def _retry(call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    """The scripted users retry like a browser would; the request id makes it safe."""
    for _ in range(100):
        try:
            response = await call()
            if response.status_code < 500:
                if response.status_code >= 400 and os.environ.get("CHAOS_DEBUG"):
                    print(f"refused: {response.status_code} {response.text[:300]}", file=sys.stderr)
                return response
        except (httpx.HTTPError, OSError):
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError("request kept failing")


async def _chaos(worker: Worker, kills: int, rng: random.Random, finished: asyncio.Event) -> None:
    """Kill the worker `kills` times at random moments, restarting it after each."""
    try:
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            worker.kill()
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            worker.start()
    finally:
        finished.set()


async def _scale_out_chaos(
    workers: list[Worker], kills: int, rng: random.Random, finished: asyncio.Event
) -> None:
    """Kill the first worker for good, mid-run; the others go on."""
    try:
        if kills:
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            workers[0].kill()
    finally:
        finished.set()


async def run(
    cases: int,
    kills: int,
    seed: int,
    failure_share: float,
    workers: int = 1,
    api_processes: int = 0,
    database_url: str | None = None,
) -> int:
    rng = random.Random(seed)
    third = failure_share / 3  # split between the three kinds of failure
    simulator_args = [
        "--failure-rate",
        str(third),
        "--lost-reply-rate",
        str(third),
        "--timeout-rate",
        str(third),
        "--receipt-delay-s",
        "0.5",
    ]
    started = time.monotonic()
    async with bench_stack("chaos", simulator_args, database_url=database_url) as stack:
        firms = await _prepare(stack.settings, cases)
        pool = [stack.worker] + [
            Worker(stack.child_env, stack.work / f"worker-{n}.log") for n in range(2, workers + 1)
        ]
        try:
            for worker in pool:
                worker.start()
            base = await start_api(stack, api_processes) if api_processes else None
            if workers > 1:
                kills = min(kills, 1)
                chaos = partial(_scale_out_chaos, pool, kills, rng)
            else:
                chaos = partial(_chaos, stack.worker, kills, rng)
            results = await _run_cases(stack, firms, chaos, base)
        finally:
            for worker in pool[1:]:
                worker.stop()
        print(f"workers={workers} api_processes={api_processes or 'in-process'}")
        return await _verify(
            stack.settings,
            stack.simulator_url,
            firms,
            results,
            kills,
            sum(w.kills for w in pool),
            time.monotonic() - started,
        )


async def _run_cases(
    stack: BenchStack,
    firms: list[str],
    chaos: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
    base: str | None = None,
) -> list[CaseState | BaseException]:
    """Every case through the API, in this process or (`base`) over HTTP, while `chaos`
    kills workers; it sets the event it is given when it is done."""
    settings, env = stack.settings, stack.env
    # The last case's finance approval waits for the last kill, so every kill lands
    # while at least one case is in flight, however fast the others are.
    kills_done = asyncio.Event()
    app = create_app(settings, temporal=env.client)
    async with contextlib.AsyncExitStack() as exits:
        if base is None:
            await exits.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            api = httpx.AsyncClient(transport=transport, base_url="http://chaos", timeout=60)
        else:
            api = httpx.AsyncClient(base_url=base, timeout=60)
        await exits.enter_async_context(api)
        killing = asyncio.create_task(chaos(kills_done))
        limit = asyncio.Semaphore(25)

        async def one(n: int, uscc: str) -> CaseState:
            async with limit:
                hold = kills_done if n == len(firms) else None
                return await _drive_case(api, settings, env, n, uscc, hold)

        tasks = [asyncio.create_task(one(n, u)) for n, u in enumerate(firms, start=1)]
        finished, pending = await asyncio.wait(tasks, timeout=max(300, len(firms) * 3))
        killing.cancel()
        for task in pending:
            task.cancel()
        for task, uscc in zip(tasks, firms, strict=True):
            if task in pending:
                await _describe_unfinished(env, application_case_id(ITEM, PERIOD, uscc))
        return [_outcome(t, finished) for t in tasks]


async def _describe_unfinished(env: WorkflowEnvironment, case_id: str) -> None:
    handle: CaseHandle = env.client.get_workflow_handle_for(ApplicationWorkflow.run, case_id)
    try:
        state = await asyncio.wait_for(handle.query(ApplicationWorkflow.state), 5)
        print(f"unfinished: {case_id} stage={state.stage.value}", file=sys.stderr)
        if os.environ.get("CHAOS_DEBUG"):
            history = await handle.fetch_history()
            kinds = [e.WhichOneof("attributes") for e in history.events]
            print(
                "   " + " ".join(k.replace("_event_attributes", "") for k in kinds if k),
                file=sys.stderr,
            )
    except Exception as exc:
        print(f"unfinished: {case_id} ({type(exc).__name__}: {exc})", file=sys.stderr)


def _outcome(
    task: asyncio.Task[CaseState], finished: set[asyncio.Task[CaseState]]
) -> CaseState | BaseException:
    if task not in finished:
        return TimeoutError("unfinished")
    return task.exception() or task.result()


async def _verify(
    settings: Settings,
    sim_url: str,
    firms: list[str],
    results: list[CaseState | BaseException],
    kills_wanted: int,
    kills: int,
    seconds: float,
) -> int:
    async with httpx.AsyncClient(base_url=sim_url, timeout=10) as http:
        await http.put("/v1/_simulator/config", json={"receipt_delay_s": 0.5})  # calm, to read
        statement = await BudgetSystemClient(http).statement()
    paid: Counter[str] = Counter()
    amount_ok = set()
    for status in statement:
        if status.state is InstructionState.PAID:
            case_id = status.idempotency_key.split(":", 1)[1].rsplit(":", 1)[0]
            paid[case_id] += 1
            if status.amount_fen == AMOUNT:
                amount_ok.add(case_id)
    case_ids = [application_case_id(ITEM, PERIOD, u) for u in firms]
    finished = {r.case_id for r in results if isinstance(r, CaseState) and r.stage.value == "paid"}
    paid_once = sum(1 for c in case_ids if paid[c] == 1 and c in amount_ok and c in finished)
    double_paid = sum(1 for c in case_ids if paid[c] > 1)
    lost = sum(1 for c in case_ids if paid[c] == 0 or c not in finished)
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            report = await budget.reconcile(session, statement)
            quota = await budget.quota_status(session, ITEM, int(PERIOD))
    finally:
        await engine.dispose()
    overspent = max(0, quota.paid_fen + quota.reserved_fen - quota.quota_fen) + max(
        0, report.paid_fen_theirs - quota.quota_fen
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    for error in errors[:5]:
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
    print(
        f"worker_kills={kills} seconds={seconds:.1f} "
        f"paid_fen={report.paid_fen_theirs} quota_fen={quota.quota_fen}"
    )
    print(
        f"cases={len(firms)} paid_once={paid_once} double_paid={double_paid} lost={lost} "
        f"overspent_fen={overspent} unreconciled={len(report.differences)}"
    )
    ok = (
        paid_once == len(firms) and double_paid == lost == overspent == len(report.differences) == 0
    )
    return 0 if ok and kills == kills_wanted > 0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--kills", type=int, default=5, help="how many times the worker is killed")
    parser.add_argument("--seed", type=int, default=20230420)
    parser.add_argument(
        "--failure-share", type=float, default=0.2, help="share of budget-system calls that fail"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes; above 1, one is killed for good"
    )
    parser.add_argument(
        "--api-processes", type=int, default=0, help="uvicorn processes (0: in this process)"
    )
    parser.add_argument("--database-url", help="default: a new SQLite file")
    args = parser.parse_args()
    code = asyncio.run(
        run(
            args.cases,
            args.kills,
            args.seed,
            args.failure_share,
            args.workers,
            args.api_processes,
            args.database_url,
        )
    )
    exit_after_client(code)


if __name__ == "__main__":
    main()
