"""The embedded stack the benchmarks run on: a Temporal dev server, the budget-system
simulator (and, if asked, the messaging-channel simulator) and the worker, each as its
own process so the worker can be killed outright; the API runs in the benchmark's own
process over ASGI, or as a uvicorn process (`start_api`) for clients from outside.

    async with bench_stack("chaos", simulator_args=[...]) as stack:
        ...

Everything started here is stopped on the way out, whatever happened inside.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from cli.devstack import (  # noqa: E402
    INDEXED_TYPES,
    DevServerConfig,
    Supervisor,
    ensure_search_attributes,
    wait_for_http,
)
from core.codec import key_ring  # noqa: E402
from core.logging import configure_logging  # noqa: E402
from core.settings import Environment, Settings  # noqa: E402
from core.temporal import data_converter  # noqa: E402

# Our logs go to stderr: a benchmark's standard output is its figures.
configure_logging(Settings(environment=Environment.TEST), stream=sys.stderr)


def free_port() -> int:
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
                self._proc.wait()


def cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of this process and every process under it, by role: the
    bench itself (with the API over ASGI and the scripted users in it), the worker, the
    Temporal dev server, the simulators. A process that has ended is not counted."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        parent[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    me = os.getpid()
    roles: dict[str, float] = {}
    for pid, seconds in used.items():
        ancestor = pid
        while ancestor not in (me, 0, 1) and ancestor in parent:
            ancestor = parent[ancestor]
        if ancestor == me:
            role = _role(pid, me)
            roles[role] = roles.get(role, 0.0) + seconds
    return roles


def _role(pid: int, me: int) -> str:
    if pid == me:
        return "bench"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "other"
    if "workers.main" in command:
        return "worker"
    if "simulate" in command:
        return "simulators"
    if "temporal" in Path(command.split(" ", 1)[0]).name:
        return "temporal"
    return "other"


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds by role between two `cpu_seconds()`."""
    return {role: seconds - before.get(role, 0.0) for role, seconds in after.items()}


def cpu_text(before: dict[str, float], after: dict[str, float]) -> str:
    ranked = sorted(cpu_spent(before, after).items(), key=lambda pair: -pair[1])
    return ", ".join(f"{role} {seconds:.0f}s" for role, seconds in ranked if seconds >= 0.5)


def cpu_per_case(before: dict[str, float], after: dict[str, float], cases: int) -> str:
    """`role=ms` of CPU per case between two `cpu_seconds()`, and their total."""
    spent = {role: s for role, s in cpu_spent(before, after).items() if s >= 0.05}
    spent["total"] = sum(spent.values())
    return " ".join(f"{role}={seconds / cases * 1000:.0f}" for role, seconds in spent.items())


@dataclass
class BenchStack:
    env: WorkflowEnvironment
    settings: Settings
    simulator_url: str
    worker: Worker
    work: Path
    children: Supervisor
    child_env: dict[str, str]


async def start_api(stack: BenchStack, processes: int = 1) -> str:
    """Start the API as uvicorn on a free port, with `processes` worker processes
    sharing its socket; returns its base URL once `/healthz` answers. It is stopped
    with the stack's other children."""
    port = free_port()
    stack.children.start(
        "api",
        [
            *[sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory"],
            *["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            *(["--workers", str(processes)] if processes > 1 else []),
        ],
        stack.child_env,
        stack.work / "api.log",
    )
    base = f"http://127.0.0.1:{port}"
    await wait_for_http(f"{base}/healthz", within=60)
    return base


@asynccontextmanager
async def bench_stack(
    name: str,
    simulator_args: list[str],
    *,
    message_simulator: bool = False,
    time_skipping: bool = False,
    database_url: str | None = None,
) -> AsyncIterator[BenchStack]:
    """Start the dev server (or, `time_skipping`, Temporal's time-skipping test server)
    and the simulator(s); the worker is created, not started. The database is a new
    SQLite file unless `database_url` names one."""
    work = Path(tempfile.mkdtemp(prefix=f"zhida-{name}-"))
    wanted = DevServerConfig.load().search_attributes
    # A key ring of this run alone, in `work`, where the worker finds it too.
    converter = data_converter(key_ring(Settings(environment=Environment.TEST, var_dir=work)))
    if time_skipping:
        env = await WorkflowEnvironment.start_time_skipping(
            data_converter=converter,
            test_server_existing_path=str(Path(sys.executable).parent / "temporal-test-server"),
        )
    else:
        env = await WorkflowEnvironment.start_local(
            data_converter=converter,
            dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
            ui=False,
        )
    children = Supervisor()
    worker: Worker | None = None
    try:
        if time_skipping:
            # This server cannot list search attributes: add them all, unasked.
            await env.client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=env.client.namespace,
                    search_attributes={n: INDEXED_TYPES[k] for n, k in wanted.items()},
                )
            )
        else:
            await ensure_search_attributes(env.client, env.client.namespace, wanted)
        port, extra = free_port(), simulator_args
        simulator_url = f"http://127.0.0.1:{port}"
        children.start(
            "budget-simulator",
            [sys.executable, "-m", "cli.main", "simulate", "budget", "--port", str(port), *extra],
            dict(os.environ),
            work / "simulator.log",
        )
        settings = Settings(
            environment=Environment.TEST,
            var_dir=work,
            database_url=database_url or f"sqlite+aiosqlite:///{work / f'{name}.db'}",
            temporal_address=env.client.service_client.config.target_host,
            temporal_namespace=env.client.namespace,
            task_queue=f"{name}-{uuid.uuid4()}",
            budget_system_url=simulator_url,
            budget_system_timeout_s=2.0,
        )
        # Every case's review asks the public data platform.
        port = free_port()
        settings.data_platform_url = f"http://127.0.0.1:{port}"
        children.start(
            "data-platform-simulator",
            [sys.executable, "-m", "cli.main", "simulate", "data-platform", "--port", str(port)],
            dict(os.environ),
            work / "data-platform-simulator.log",
        )
        if message_simulator:
            port = free_port()
            settings.message_channel_url = f"http://127.0.0.1:{port}"
            children.start(
                "message-simulator",
                [sys.executable, "-m", "cli.main", "simulate", "messages", "--port", str(port)],
                dict(os.environ),
                work / "message-simulator.log",
            )
        worker_env = dict(os.environ)
        worker_env.update(
            ZHIDA_DATABASE_URL=settings.database_url,
            ZHIDA_TEMPORAL_ADDRESS=settings.temporal_address,
            ZHIDA_TEMPORAL_NAMESPACE=settings.temporal_namespace,
            ZHIDA_TASK_QUEUE=settings.task_queue,
            ZHIDA_BUDGET_SYSTEM_URL=simulator_url,
            ZHIDA_BUDGET_SYSTEM_TIMEOUT_S=str(settings.budget_system_timeout_s),
            ZHIDA_MESSAGE_CHANNEL_URL=settings.message_channel_url,
            ZHIDA_DATA_PLATFORM_URL=settings.data_platform_url,
            ZHIDA_VAR_DIR=str(work),
            ZHIDA_ENVIRONMENT="test",
        )
        worker = Worker(worker_env, work / "worker.log")
        await wait_for_http(f"{simulator_url}/v1/_simulator/config", within=30)
        await wait_for_http(f"{settings.data_platform_url}/v1/_simulator/config", within=30)
        if message_simulator:
            await wait_for_http(f"{settings.message_channel_url}/v1/_simulator/config", within=30)
        yield BenchStack(env, settings, simulator_url, worker, work, children, worker_env)
    finally:
        if worker is not None:
            worker.stop()
        children.stop()  # SIGTERM, then SIGKILL if it will not go
        await env.shutdown()
