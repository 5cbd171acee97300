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
import time
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

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

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


def cpu_seconds(pid: int) -> float:
    """The user and system CPU a running process has used so far (Linux `/proc`)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dev_server_pid() -> int:
    """The Temporal dev server this process started (a descendant running `start-dev`)."""
    pending = [os.getpid()]
    while pending:
        pid = pending.pop()
        for task in Path(f"/proc/{pid}/task").iterdir():
            pending += [int(c) for c in (task / "children").read_text().split()]
        if pid != os.getpid() and b"start-dev" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise LookupError("no Temporal dev server among this process's children")


class CpuMeter:
    """CPU seconds used by named processes between `start()` and `stop()`; this
    process (with the API and the scripted users in it) is measured as well."""

    def __init__(self, **pids: int) -> None:
        self._pids = pids
        self._start: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        now = {name: cpu_seconds(pid) for name, pid in self._pids.items()}
        return {**now, "bench": time.process_time()}

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> None:
        self.used = {name: t - self._start[name] for name, t in self._now().items()}

    def per_case_ms(self, cases: int) -> str:
        parts = {**self.used, "total": sum(self.used.values())}
        return " ".join(f"{name}={seconds / cases * 1000:.0f}" for name, seconds in parts.items())


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
