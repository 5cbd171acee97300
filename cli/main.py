"""The `zhida` command line."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import httpx
import typer
import uvicorn
from fastapi import FastAPI
from temporalio.converter import DataConverter

from adapters.budget_system import BudgetSystemClient
from adapters.data_platform import DataPlatformClient
from cli.audit import audit_app
from cli.config import settings_or_exit
from cli.devstack import (
    DevServerConfig,
    Supervisor,
    child_env,
    load_data_platform,
    prepare_namespace,
    stop_on_signals,
    temporal_binary,
    wait_for_http,
    wait_for_temporal,
)
from cli.schedules import ensure_schedules
from core import migrate
from core.codec import DEFAULT_KEY_FILE, CodecError, KeyRing, write_key_ring
from core.db import make_engine, make_sessionmaker
from core.logging import configure_logging
from core.progress import ProgressCallback, TerminalProgress
from core.security import issue_token
from core.settings import Settings
from core.temporal import connect, converter_for, exit_after_client
from core.workdays import SHANGHAI
from domain.errors import AppError
from domain.money import budget
from domain.money.budget import Reconciliation
from domain.registry import sync
from domain.registry.importer import ImportReport
from models.matching import MatchRequest, MatchScope
from models.policy_feed import HarvestReport
from models.reference import User
from seed.data_platform import data_platform_records
from seed.reference import demo_user_names
from seed.sample import SampleSummary, load_sample
from simulators.budget_system import SimulatorConfig
from simulators.budget_system import create_app as create_budget_simulator
from simulators.data_platform import DataPlatformConfig
from simulators.data_platform import create_app as create_data_platform_simulator
from simulators.message_channel import ChannelConfig
from simulators.message_channel import create_app as create_channel_simulator
from simulators.policy_feed import PolicyFeedConfig
from simulators.policy_feed import create_app as create_policy_feed_simulator
from workers.main import main as worker_main
from workflows.registry_import import import_then_rematch
from workflows.starts import start_facts_sync, start_match_run, start_policy_harvest

app = typer.Typer(
    help="zhida 直达: fiscal funds to enterprises, fast and traceable.", no_args_is_help=True
)
import_app = typer.Typer(help="Import public data platform exports.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(audit_app, name="audit")

SIMULATED_BUDGET_SYSTEM = "http://127.0.0.1:8100"
SIMULATED_MESSAGE_CHANNEL = "http://127.0.0.1:8200"
SIMULATED_DATA_PLATFORM = "http://127.0.0.1:8300"
SIMULATED_POLICY_FEED = "http://127.0.0.1:8400"


def _settings() -> Settings:
    settings = settings_or_exit()
    configure_logging(settings)
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    return settings


@app.command("migrate")
def migrate_cmd() -> None:
    """Apply database migrations."""
    settings = _settings()
    migrate.upgrade(settings.database_url)
    typer.echo("database is at the latest migration")


@app.command()
def sample(
    enterprises: Annotated[int, typer.Option(min=1, help="how many firms to generate")] = 2000,
) -> None:
    """Load the deterministic Huzhou sample data set (idempotent)."""
    settings = _settings()
    migrate.upgrade(settings.database_url)
    with TerminalProgress() as progress:
        summary = asyncio.run(_load_sample(settings, enterprises, progress))
    if summary.skipped:
        typer.echo(f"registry already loaded; policy items added: {summary.items}")
    else:
        typer.echo(
            f"loaded enterprises={summary.enterprises} facts={summary.facts} "
            f"accounts={summary.accounts} items={summary.items}"
        )


async def _load_sample(
    settings: Settings, enterprises: int, progress: ProgressCallback | None = None
) -> SampleSummary:
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine).begin() as session:
            today = datetime.now(SHANGHAI).date()
            return await load_sample(session, enterprises, today, progress)
    finally:
        await engine.dispose()


@import_app.command("enterprises")
def import_enterprises(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    format: Annotated[
        str | None, typer.Option(help="csv or jsonl; default from the file name")
    ] = None,
) -> None:
    """Import enterprises, facts and accounts; a file with any bad row is rejected whole."""
    settings = _settings()
    fmt = format or ("jsonl" if file.suffix in (".jsonl", ".ndjson") else "csv")
    try:
        with TerminalProgress() as progress:
            report = asyncio.run(_import(settings, file.read_bytes(), fmt, progress))
    except AppError as exc:
        typer.echo(f"rejected: {exc.detail}", err=True)
        for error in exc.errors:
            typer.echo(f"  {error.field}: {error.message}", err=True)
        raise typer.Exit(1) from None
    if report.changed and report.match_run is None:  # the import stands all the same
        typer.echo("matching not started (see the warning); the nightly run will do it", err=True)
    typer.echo(report.model_dump_json())
    exit_after_client()


async def _import(
    settings: Settings, content: bytes, fmt: str, progress: ProgressCallback
) -> ImportReport:
    engine = make_engine(settings.database_url)
    try:
        return await import_then_rematch(
            make_sessionmaker(engine).begin(),
            content,
            fmt,
            temporal=lambda: connect(settings),
            task_queue=settings.task_queue,
            receipt_polls_s=settings.push_receipt_polls_s,
            progress=progress,
        )
    finally:
        await engine.dispose()


@app.command()
def token(user: Annotated[str, typer.Option("--user", help="a user name, e.g. admin")]) -> None:
    """Print a bearer token for a user."""
    settings = _settings()
    if not asyncio.run(_user_exists(settings, user)):
        typer.echo(f"no such user: {user}", err=True)
        raise typer.Exit(1)
    typer.echo(issue_token(settings, user))


async def _user_exists(settings: Settings, name: str) -> bool:
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return await session.get(User, name) is not None
    finally:
        await engine.dispose()


simulate_app = typer.Typer(help="Simulators of the external systems.", no_args_is_help=True)
app.add_typer(simulate_app, name="simulate")


@simulate_app.command("budget")
def simulate_budget(
    host: str = "127.0.0.1",
    port: int = 8100,
    latency_ms: Annotated[int, typer.Option(min=0)] = 0,
    failure_rate: Annotated[float, typer.Option(min=0, max=1, help="5xx before any work")] = 0.0,
    lost_reply_rate: Annotated[float, typer.Option(min=0, max=1, help="5xx after the work")] = 0.0,
    timeout_rate: Annotated[
        float, typer.Option(min=0, max=1, help="reply later than clients wait")
    ] = 0.0,
    return_rate: Annotated[
        float, typer.Option(min=0, max=1, help="share of payments returned")
    ] = 0.0,
    receipt_delay_s: Annotated[float, typer.Option(min=0)] = 2.0,
    state_file: Annotated[
        Path | None, typer.Option(help="instructions journal, kept across restarts and crashes")
    ] = None,
    refuse_account: Annotated[
        list[str] | None,
        typer.Option(help="refuse instructions to this payee account with a 422 (repeatable)"),
    ] = None,
) -> None:
    """Run the budget-system simulator (its failures can also be changed at run time)."""
    config = SimulatorConfig(
        refuse_accounts=refuse_account or [],
        latency_ms=latency_ms,
        failure_rate=failure_rate,
        lost_reply_rate=lost_reply_rate,
        timeout_rate=timeout_rate,
        return_rate=return_rate,
        receipt_delay_s=receipt_delay_s,
    )
    _serve_simulator(create_budget_simulator(config, state_file), host, port)


@simulate_app.command("messages")
def simulate_messages(
    host: str = "127.0.0.1",
    port: int = 8200,
    latency_ms: Annotated[int, typer.Option(min=0)] = 0,
    failure_rate: Annotated[float, typer.Option(min=0, max=1, help="5xx before any work")] = 0.0,
    undeliverable_rate: Annotated[
        float, typer.Option(min=0, max=1, help="share of messages never delivered")
    ] = 0.0,
    delivery_delay_s: Annotated[float, typer.Option(min=0)] = 1.0,
    state_file: Annotated[
        Path | None, typer.Option(help="journal of the messages, kept across restarts and crashes")
    ] = None,
) -> None:
    """Run the messaging-channel simulator (its failures can also be changed at run time)."""
    config = ChannelConfig(
        latency_ms=latency_ms,
        failure_rate=failure_rate,
        undeliverable_rate=undeliverable_rate,
        delivery_delay_s=delivery_delay_s,
    )
    _serve_simulator(create_channel_simulator(config, state_file), host, port)


@simulate_app.command("data-platform")
def simulate_data_platform(
    host: str = "127.0.0.1",
    port: int = 8300,
    latency_ms: Annotated[int, typer.Option(min=0)] = 0,
    failure_rate: Annotated[float, typer.Option(min=0, max=1, help="5xx before any work")] = 0.0,
    stale_rate: Annotated[
        float, typer.Option(min=0, max=1, help="share of answers from an old snapshot")
    ] = 0.0,
    stale_days: Annotated[
        int, typer.Option(min=1, help="how far back an old snapshot's as_of is")
    ] = 800,
    missing_rate: Annotated[
        float, typer.Option(min=0, max=1, help="share of requested kinds answered as missing")
    ] = 0.0,
    hang_rate: Annotated[
        float, typer.Option(min=0, max=1, help="reply later than clients wait")
    ] = 0.0,
    state_file: Annotated[
        Path | None, typer.Option(help="journal of the firms' records, kept across restarts")
    ] = None,
) -> None:
    """Run the public data platform simulator (its dials can also be changed at run time;
    its records are loaded with PUT /v1/_simulator/enterprises)."""
    config = DataPlatformConfig(
        latency_ms=latency_ms,
        failure_rate=failure_rate,
        stale_rate=stale_rate,
        stale_days=stale_days,
        missing_rate=missing_rate,
        hang_rate=hang_rate,
    )
    _serve_simulator(create_data_platform_simulator(config, state_file), host, port)


@simulate_app.command("policy-feed")
def simulate_policy_feed(
    host: str = "127.0.0.1",
    port: int = 8400,
    latency_ms: Annotated[int, typer.Option(min=0)] = 0,
    failure_rate: Annotated[float, typer.Option(min=0, max=1, help="5xx before any work")] = 0.0,
    released: Annotated[
        int | None, typer.Option(min=0, help="serve only the first N publications (default all)")
    ] = None,
    state_file: Annotated[
        Path | None, typer.Option(help="journal of the publications testers add")
    ] = None,
) -> None:
    """Run the government portals' policy feed simulator (its dials can also be changed
    at run time: PUT /v1/_simulator/config)."""
    config = PolicyFeedConfig(latency_ms=latency_ms, failure_rate=failure_rate, released=released)
    _serve_simulator(create_policy_feed_simulator(config, state_file), host, port)


def _serve_simulator(app: FastAPI, host: str, port: int) -> None:
    # A deliberately slow reply must not hold up shutdown.
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)


@app.command("rotate-codec-key")
def rotate_codec_key(
    key_id: Annotated[str, typer.Option("--id", help="the new key's id, e.g. 2026b")],
    file: Annotated[
        Path | None,
        typer.Option(dir_okay=False, help="the key file (default: ZHIDA_CODEC_KEY_FILE or var/)"),
    ] = None,
) -> None:
    """Add a new payload key that encrypts from now on; the old keys stay in the file to
    decrypt what they wrote. Restart the worker and the API to use it."""
    settings = _settings()
    path = file or settings.codec_key_file or settings.var_dir / DEFAULT_KEY_FILE
    try:
        ring = KeyRing.parse(path.read_text("utf-8")) if path.exists() else None
        if ring is not None and ring.key(key_id) is not None:
            raise CodecError(f"the ring already has a key {key_id!r}")
        new = ring.rotated(key_id) if ring else KeyRing.generate(key_id)
    except CodecError as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(1) from None
    write_key_ring(path, new)
    ids = ", ".join(kid for kid, _ in new.keys)
    typer.echo(f"{path}: encrypting with {new.current_id}; decrypting with {ids}")


@app.command()
def reconcile() -> None:
    """Compare the ledger with the budget system's statement, money paid out and money
    recovered; exit 1 on any difference."""
    settings = _settings()
    with TerminalProgress() as progress:
        report = asyncio.run(_reconcile(settings, progress))
    typer.echo(
        f"instructions={report.instructions} paid_fen_ours={report.paid_fen_ours} "
        f"paid_fen_theirs={report.paid_fen_theirs} recoveries={report.recoveries} "
        f"recovered_fen_ours={report.recovered_fen_ours} "
        f"recovered_fen_theirs={report.recovered_fen_theirs} "
        f"differences={len(report.differences)}"
    )
    for line in report.differences:
        typer.echo(f"  {line.model_dump_json()}")
    if report.differences:
        raise typer.Exit(1)


async def _reconcile(settings: Settings, progress: ProgressCallback) -> Reconciliation:
    engine = make_engine(settings.database_url)
    try:
        async with httpx.AsyncClient(
            base_url=settings.budget_system_url, timeout=settings.budget_system_timeout_s
        ) as http:
            client = BudgetSystemClient(http)
            statement = await client.statement(progress)
            recoveries = await client.recovery_statement(progress)
        async with make_sessionmaker(engine)() as session:
            return await budget.reconcile(session, statement, recoveries)
    finally:
        await engine.dispose()


@app.command()
def schedules() -> None:
    """Create the Temporal Schedules (idempotent); `run` does this on the dev server."""
    settings = _settings()
    asyncio.run(_ensure_schedules(settings))
    typer.echo("schedules are in place")
    exit_after_client()


async def _ensure_schedules(settings: Settings) -> None:
    await ensure_schedules(await connect(settings), settings.task_queue)


@app.command()
def harvest() -> None:
    """Harvest the policy feed now (the schedule does it hourly) and print what it stored."""
    settings = _settings()
    report = asyncio.run(_harvest(settings))
    typer.echo(report.model_dump_json(indent=2))
    exit_after_client()


async def _harvest(settings: Settings) -> HarvestReport:
    client = await connect(settings)
    tag = f"manual-{datetime.now(SHANGHAI):%Y%m%dT%H%M%S}"
    return await (await start_policy_harvest(client, settings.task_queue, tag)).result()


@app.command("sync-facts")
def sync_facts() -> None:
    """Sync the firms' figures changed on the data platform now (the schedule does it every
    15 minutes), re-match the firms it changed, and print what it stored."""
    settings = _settings()
    report = asyncio.run(_sync_facts(settings))
    typer.echo(report.model_dump_json(indent=2))
    exit_after_client()


async def _sync_facts(settings: Settings) -> sync.SyncReport:
    client = await connect(settings)
    tag = f"manual-{datetime.now(SHANGHAI):%Y%m%dT%H%M%S}"
    handle = await start_facts_sync(
        client, settings.task_queue, tag, receipt_polls_s=settings.push_receipt_polls_s
    )
    return await handle.result()


@app.command()
def worker() -> None:
    """Run the Temporal worker."""
    worker_main()


@app.command()
def api() -> None:
    """Run the HTTP API."""
    settings = _settings()
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=settings.api_processes,
    )


@app.command()
def run(
    enterprises: Annotated[int, typer.Option(min=1, help="sample firms on first start")] = 2000,
    external_temporal: Annotated[
        bool, typer.Option(help="use ZHIDA_TEMPORAL_ADDRESS instead of starting a dev server")
    ] = False,
) -> None:
    """Start the whole platform on embedded defaults and keep it running (a process
    that dies is restarted); Ctrl-C stops everything."""
    settings = _settings()
    started = time.monotonic()
    stop_on_signals()
    _step("applying database migrations")
    migrate.upgrade(settings.database_url)
    converter = converter_for(settings)  # makes var/codec-keys on a first start
    children = Supervisor()
    logs = settings.var_dir
    try:
        children.watch()  # a child that dies is restarted, from here on
        address = settings.temporal_address
        ui = None
        if not external_temporal:
            config = DevServerConfig.load()
            address = config.address
            ui = f"http://{config.ip}:{config.ui_port}/namespaces/{config.namespace}/workflows"
            _step("starting the Temporal dev server")
            # The UI shows payloads decoded by the API's codec server (/codec).
            codec = f"http://{settings.api_host}:{settings.api_port}/codec"
            children.start(
                "temporal",
                config.command(temporal_binary(), codec_endpoint=codec),
                dict(child_env(settings, address)),
                logs / "temporal.log",
            )
            asyncio.run(_prepare_temporal(config, converter, settings.task_queue))
        _step("loading the sample data (first start only)")
        with TerminalProgress() as progress:
            summary = asyncio.run(_load_sample(settings, enterprises, progress))
        _step("starting the simulators, the worker and the API")
        env = child_env(settings, address)
        if settings.budget_system_url == SIMULATED_BUDGET_SYSTEM:
            children.start(
                "budget-simulator",
                [
                    *[sys.executable, "-m", "cli.main", "simulate", "budget"],
                    *["--state-file", str(logs / "budget-simulator.json")],
                ],
                env,
                logs / "budget-simulator.log",
            )
        if settings.message_channel_url == SIMULATED_MESSAGE_CHANNEL:
            children.start(
                "message-simulator",
                [
                    *[sys.executable, "-m", "cli.main", "simulate", "messages"],
                    *["--state-file", str(logs / "message-simulator.json")],
                ],
                env,
                logs / "message-simulator.log",
            )
        if settings.data_platform_url == SIMULATED_DATA_PLATFORM:
            children.start(
                "data-platform-simulator",
                [
                    *[sys.executable, "-m", "cli.main", "simulate", "data-platform"],
                    *["--state-file", str(logs / "data-platform-simulator.json")],
                ],
                env,
                logs / "data-platform-simulator.log",
            )
            asyncio.run(_load_data_platform(settings, enterprises))
        if settings.policy_feed_url == SIMULATED_POLICY_FEED:
            children.start(
                "policy-feed-simulator",
                [
                    *[sys.executable, "-m", "cli.main", "simulate", "policy-feed"],
                    *["--state-file", str(logs / "policy-feed-simulator.json")],
                ],
                env,
                logs / "policy-feed-simulator.log",
            )
        children.start("worker", [sys.executable, "-m", "workers.main"], env, logs / "worker.log")
        children.start(
            "api",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "api.main:create_app",
                "--factory",
                "--host",
                settings.api_host,
                "--port",
                str(settings.api_port),
                "--workers",
                str(settings.api_processes),
            ],
            env,
            logs / "api.log",
        )
        base = f"http://{settings.api_host}:{settings.api_port}"
        asyncio.run(wait_for_http(f"{base}/healthz"))
        # Refresh the match library (and push what is new) with the data as it stands.
        asyncio.run(_start_full_match(settings, address))
        # And what the portals published since the last start (hourly thereafter).
        asyncio.run(_start_harvest(settings, address))
        _banner(settings, base, ui, summary.skipped, time.monotonic() - started)
        children.wait()
    except KeyboardInterrupt:
        typer.echo("\nstopping…")
    finally:
        children.stop()


async def _load_data_platform(settings: Settings, enterprises: int) -> None:
    """What the platform holds of the sample firms, on its first start. The sample
    registry is the platform's export: the facts sync starts after it, and reads only
    what a tester changes on the platform from now on."""
    url = settings.data_platform_url
    await wait_for_http(f"{url}/v1/_simulator/config")
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        today = datetime.now(SHANGHAI).date()
        await load_data_platform(http, data_platform_records(enterprises, today))
        engine = make_engine(settings.database_url)
        try:
            async with make_sessionmaker(engine).begin() as session:
                await sync.start_at(session, await DataPlatformClient(http).end_cursor())
        finally:
            await engine.dispose()


def _step(what: str) -> None:
    typer.echo(f"… {what}", err=True)


async def _prepare_temporal(
    config: DevServerConfig, converter: DataConverter, task_queue: str
) -> None:
    client = await wait_for_temporal(config.address, config.namespace, converter)
    await prepare_namespace(client, config)
    await ensure_schedules(client, task_queue)


async def _start_full_match(settings: Settings, address: str) -> None:
    client = await connect(settings.model_copy(update={"temporal_address": address}))
    tag = f"startup-{datetime.now(SHANGHAI):%Y%m%dT%H%M%S}"
    request = MatchRequest(scope=MatchScope.FULL, receipt_polls_s=settings.push_receipt_polls_s)
    await start_match_run(client, settings.task_queue, request, tag)


async def _start_harvest(settings: Settings, address: str) -> None:
    client = await connect(settings.model_copy(update={"temporal_address": address}))
    await start_policy_harvest(
        client, settings.task_queue, f"startup-{datetime.now(SHANGHAI):%Y%m%dT%H%M%S}"
    )


def _banner(settings: Settings, base: str, ui: str | None, resumed: bool, seconds: float) -> None:
    data = "resumed with existing data" if resumed else "sample data loaded"
    lines = [
        "",
        f"zhida is up in {seconds:.0f}s ({data})",
        f"  API        {base}/api/v1   (docs: {base}/docs, health: {base}/healthz)",
        f"  Web pages  {base}/ui/   (sign in by pasting a token below)",
        f"  Public     {base}/public/policies   (the policy catalogue, no sign-in)",
    ]
    if ui:
        lines.append(f"  Temporal   {ui}")
    lines.append(f"  Database   {settings.database_url}")
    lines.append("  Demo tokens (Authorization: Bearer <token>):")
    users = demo_user_names()
    width = max(len(user) for user in users)
    for user in users:
        lines.append(f"    {user:<{width}} {issue_token(settings, user)}")
    lines.append("Ctrl-C stops everything.")
    typer.echo("\n".join(lines))


if __name__ == "__main__":
    app()
