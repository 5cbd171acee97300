"""Crash test of application cases (invariants 1 to 3).

Runs N application cases from submission to payment on a real Temporal dev server,
with the budget-system simulator failing a share of calls (5xx before the work,
replies lost after it, replies slower than the client waits) and the worker
process killed with SIGKILL and restarted at random moments. Afterwards every case
must be paid exactly once for its approved amount, the ledger must reconcile with
the simulator's statement, and no quota may be overspent.

    python bench/application_chaos.py --cases 200

Last line: cases=N paid_once=N double_paid=0 lost=0 overspent_fen=0 unreconciled=0
(the counts observed). Exit status 0 only if all of those hold.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from temporalio.client import WorkflowHandle  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.service import RPCError  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from activities.budget_system import BudgetSystemClient  # noqa: E402
from api.main import create_app  # noqa: E402
from core.db import make_engine, make_sessionmaker  # noqa: E402
from core.devstack import ensure_search_attributes, wait_for_http  # noqa: E402
from core.migrate import upgrade_async  # noqa: E402
from core.security import issue_token  # noqa: E402
from core.settings import Environment, Settings  # noqa: E402
from core.workdays import SHANGHAI  # noqa: E402
from domain import budget, library  # noqa: E402
from domain.reference_data import demo_users, ensure_reference_data, ensure_users  # noqa: E402
from domain.sample import generate  # noqa: E402
from models.budget_system import InstructionState  # noqa: E402
from models.case import CaseState, application_case_id  # noqa: E402
from models.enterprise import BankAccount, Enterprise, Fact  # noqa: E402
from models.policy import ItemCreate  # noqa: E402
from models.reference import Actor, Role, User  # noqa: E402
from models.search_attributes import ALL as SEARCH_ATTRIBUTES  # noqa: E402
from workflows.application import ApplicationWorkflow  # noqa: E402

CaseHandle = WorkflowHandle[ApplicationWorkflow, CaseState]
ITEM = "CHAOS-01"
AMOUNT = 1_000_000
PERIOD = "2026"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Worker:
    """The worker as its own process, so that it can be killed outright."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._env, self._log = env, log
        self._proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        out = self._log.open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "workers.main"], env=self._env, cwd=ROOT, stdout=out, stderr=out
        )

    def kill(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGKILL)
        self._proc.wait()
        self.kills += 1

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()


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
            await library.create_item(session, staff, ItemCreate.model_validate(_item(cases)))
            await library.submit_version(
                session, staff, ITEM, 1, head_review_days=3, finance_review_days=5
            )
            await library.publish_version(session, ITEM, 1)
        return firms
    finally:
        await engine.dispose()


def time_today() -> date:
    return datetime.now(SHANGHAI).date()


def _item(cases: int) -> dict[str, object]:
    stages = [
        {"stage": "department_review", "department_code": "330500-JXJ", "working_days": 3},
        {"stage": "finance_review", "department_code": "330500-CZJ", "working_days": 3},
        {"stage": "payment", "department_code": "330500-CZJ", "working_days": 3},
    ]
    return {
        "code": ITEM,
        "document": {
            "doc_number": "湖政发〔2024〕8号",
            "title": "测试",
            "issuer": "湖州市人民政府",
            "level": "city",
            "issued_on": "2024-02-18",
        },
        "department_code": "330500-JXJ",
        "region_code": "330500",
        "title": "崩溃测试补助",
        "category": "application",
        "eligibility": {"all": [{"fact": "credit_rating", "op": "in", "value": ["A", "B"]}]},
        "amount_rule": {"kind": "fixed", "amount_fen": AMOUNT},
        "annual_quota_fen": AMOUNT * cases,  # exactly enough: any double payment would overspend
        "stages": stages,
        "valid_from": "2026-01-01",
        "valid_to": "2027-12-31",
        "change_reason": "崩溃测试",
    }


async def _drive_case(
    api: httpx.AsyncClient, settings: Settings, env: WorkflowEnvironment, n: int, uscc: str
) -> CaseState:
    """A firm applies; a scripted caseworker and finance officer approve."""
    firm = {"Authorization": f"Bearer {issue_token(settings, f'firm-{n}')}"}
    await _retry(
        partial(api.post, "/api/v1/cases", json={"item_code": ITEM, "period": PERIOD}, headers=firm)
    )
    case_id = application_case_id(ITEM, PERIOD, uscc)
    handle: CaseHandle = env.client.get_workflow_handle_for(ApplicationWorkflow.run, case_id)
    base = f"/api/v1/cases/application/{ITEM}/{PERIOD}/{uscc}/decisions"
    for stage, user in (("department_review", "jxj_staff"), ("finance_review", "czj_staff")):
        await _reach(handle, stage)
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
        await asyncio.sleep(0.5)


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


async def _chaos(worker: Worker, done: asyncio.Event, kills: int, rng: random.Random) -> None:
    while not done.is_set() and worker.kills < kills:
        await asyncio.sleep(rng.uniform(0.3, 1.5))
        if done.is_set():
            return
        worker.kill()
        await asyncio.sleep(rng.uniform(0.2, 1.0))
        worker.start()


async def run(cases: int, kills: int, seed: int, failure_share: float) -> int:
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="zhida-chaos-"))
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
    # The share of failing calls is split between the three kinds of failure.
    third = failure_share / 3
    simulator = subprocess.Popen(  # noqa: ASYNC220 - once, before the run
        [
            sys.executable,
            "-m",
            "core.cli",
            "simulate",
            "budget",
            "--port",
            str(sim_port),
            "--failure-rate",
            str(third),
            "--lost-reply-rate",
            str(third),
            "--timeout-rate",
            str(third),
            "--receipt-delay-s",
            "0.5",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    settings = Settings(
        environment=Environment.TEST,
        database_url=f"sqlite+aiosqlite:///{work / 'chaos.db'}",
        temporal_address=env.client.service_client.config.target_host,
        temporal_namespace=env.client.namespace,
        task_queue=f"chaos-{uuid.uuid4()}",
        budget_system_url=sim_url,
        budget_system_timeout_s=2.0,
    )
    worker_env = dict(os.environ)
    worker_env.update(
        ZHIDA_DATABASE_URL=settings.database_url,
        ZHIDA_TEMPORAL_ADDRESS=settings.temporal_address,
        ZHIDA_TEMPORAL_NAMESPACE=settings.temporal_namespace,
        ZHIDA_TASK_QUEUE=settings.task_queue,
        ZHIDA_BUDGET_SYSTEM_URL=sim_url,
        ZHIDA_BUDGET_SYSTEM_TIMEOUT_S="2",
        ZHIDA_ENVIRONMENT="test",
    )
    worker = Worker(worker_env, work / "worker.log")
    started = time.monotonic()
    try:
        await wait_for_http(f"{sim_url}/v1/_simulator/config", within=30)
        firms = await _prepare(settings, cases)
        worker.start()
        app = create_app(settings, temporal=env.client)
        done = asyncio.Event()
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://chaos", timeout=60
            ) as api,
        ):
            chaos = asyncio.create_task(_chaos(worker, done, kills, rng))
            limit = asyncio.Semaphore(25)

            async def one(n: int, uscc: str) -> CaseState:
                async with limit:
                    return await _drive_case(api, settings, env, n, uscc)

            tasks = [asyncio.create_task(one(n, u)) for n, u in enumerate(firms, start=1)]
            finished, pending = await asyncio.wait(tasks, timeout=max(300, cases * 3))
            done.set()
            for task in pending:
                task.cancel()
            for n, task in enumerate(tasks, start=1):
                if task in pending:
                    case_id = application_case_id(ITEM, PERIOD, firms[n - 1])
                    handle: CaseHandle = env.client.get_workflow_handle_for(
                        ApplicationWorkflow.run, case_id
                    )
                    try:
                        state = await asyncio.wait_for(handle.query(ApplicationWorkflow.state), 5)
                        print(f"unfinished: {case_id} stage={state.stage.value}", file=sys.stderr)
                        if os.environ.get("CHAOS_DEBUG"):
                            history = await handle.fetch_history()
                            kinds = [e.WhichOneof("attributes") for e in history.events]
                            print(
                                "   "
                                + " ".join(k.replace("_event_attributes", "") for k in kinds if k),
                                file=sys.stderr,
                            )
                    except Exception as exc:
                        print(
                            f"unfinished: {case_id} ({type(exc).__name__}: {exc})", file=sys.stderr
                        )
            results = [_outcome(t, finished) for t in tasks]
            await chaos
        return await _verify(
            settings, sim_url, firms, results, worker.kills, time.monotonic() - started
        )
    finally:
        worker.stop()
        simulator.terminate()
        simulator.wait(timeout=10)
        await env.shutdown()


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
    return 0 if ok and kills > 0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--kills", type=int, default=5, help="how many times the worker is killed")
    parser.add_argument("--seed", type=int, default=20230420)
    parser.add_argument(
        "--failure-share", type=float, default=0.2, help="share of budget-system calls that fail"
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args.cases, args.kills, args.seed, args.failure_share)))


if __name__ == "__main__":
    main()
