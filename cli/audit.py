"""`zhida audit`: replay workflow histories on the current code, export and verify audit
bundles, cross-check ledger, payment workflows and budget system. The same functions
serve the API's audit routes (domain/audit/)."""

from __future__ import annotations

import asyncio
import getpass
import socket
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from adapters.budget_system import BudgetSystemClient
from cli.config import settings_or_exit
from core.codec import EncryptionCodec, key_ring
from core.db import make_engine, make_sessionmaker
from core.logging import configure_logging
from core.settings import Settings
from core.temporal import connect
from core.workdays import SHANGHAI
from domain.audit import bundle, crosscheck, histories, story, trail
from domain.errors import AppError
from models.audit import AuditKind, Crosscheck, ReplayReport
from models.reference import Actor, Role
from workflows.all import ALL_WORKFLOWS

T = TypeVar("T")

audit_app = typer.Typer(
    help="Auditors' tools: replay, export, verify, cross-check.", no_args_is_help=True
)


@dataclass
class Platform:
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    temporal: Client
    budget: BudgetSystemClient
    codec: EncryptionCodec


@asynccontextmanager
async def platform(settings: Settings) -> AsyncIterator[Platform]:
    engine = make_engine(settings.database_url)
    try:
        async with httpx.AsyncClient(
            base_url=settings.budget_system_url, timeout=settings.budget_system_timeout_s
        ) as http:
            yield Platform(
                settings,
                make_sessionmaker(engine),
                await connect(settings, identity="zhida-audit"),
                BudgetSystemClient(http),
                EncryptionCodec(key_ring(settings)),
            )
    finally:
        await engine.dispose()


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run a command's work; a case or workflow that does not exist, or a Temporal that
    cannot be reached, is one line on stderr and exit 1, not a traceback."""
    try:
        return asyncio.run(work)
    except AppError as exc:
        typer.echo(f"refused: {exc.detail}", err=True)
    except RPCError as exc:
        typer.echo(f"Temporal: {exc.status.name if exc.status else ''} {exc.message}", err=True)
    raise typer.Exit(1)


def _settings() -> Settings:
    settings = settings_or_exit()
    configure_logging(settings)
    return settings


def _operator() -> Actor:
    """Who runs the command: the operating-system user, as the trail names them."""
    return Actor(name=f"cli:{getpass.getuser()}"[:64], role=Role.AUDITOR)


def _origin(command: str) -> trail.Origin:
    return trail.Origin(
        method="CLI",
        path=f"zhida audit {command}"[:400],
        correlation_id="-",
        client=socket.gethostname()[:64],
    )


# ----- replay ------------------------------------------------------------------------------


def _month(text: str) -> tuple[datetime, datetime]:
    """A month `YYYY-MM` (or a day `YYYY-MM-DD`, or a year `YYYY`) in Shanghai, as UTC
    bounds [start, end)."""
    parts = text.split("-")
    try:
        if len(parts) == 1:
            start, end = date(int(parts[0]), 1, 1), date(int(parts[0]) + 1, 1, 1)
        elif len(parts) == 2:
            year, month = int(parts[0]), int(parts[1])
            start = date(year, month, 1)
            end = date(year + month // 12, month % 12 + 1, 1)
        else:
            start = date.fromisoformat(text)
            end = start + timedelta(days=1)
    except ValueError:
        raise typer.BadParameter("YYYY, YYYY-MM or YYYY-MM-DD", param_hint="--closed-in") from None
    if not 2000 <= start.year <= 2100:
        raise typer.BadParameter("a year from 2000 to 2100", param_hint="--closed-in")

    def utc(day: date) -> datetime:
        return datetime(day.year, day.month, day.day, tzinfo=SHANGHAI).astimezone(UTC)

    return utc(start), utc(end)


@audit_app.command("replay")
def replay_cmd(
    case: Annotated[
        list[str] | None, typer.Option(help="a case id (its payments included); repeatable")
    ] = None,
    batch: Annotated[
        str | None, typer.Option(help="a recognition batch id (its cases and payments)")
    ] = None,
    closed_in: Annotated[
        str | None, typer.Option(help="every workflow closed in YYYY, YYYY-MM or YYYY-MM-DD")
    ] = None,
    bundle_file: Annotated[
        Path | None,
        typer.Option("--bundle", exists=True, dir_okay=False, help="an exported bundle, offline"),
    ] = None,
) -> None:
    """Replay workflow histories on the current code; one line each, identical or where
    it parted; exit 1 if any is not identical."""
    chosen = sum(x is not None and x != [] for x in (case, batch, closed_in, bundle_file))
    if chosen != 1:
        raise typer.BadParameter("give exactly one of --case, --batch, --closed-in, --bundle")
    if bundle_file is not None:
        report = asyncio.run(
            histories.replay(
                list(bundle.histories_in(bundle_file)), ALL_WORKFLOWS, pydantic_data_converter
            )
        )
    else:
        settings = _settings()
        report = _run(_replay(settings, case or [], batch, closed_in))
    _print_replay(report)
    if report.identical != report.replayed:
        raise typer.Exit(1)


async def _replay(
    settings: Settings, cases: list[str], batch: str | None, closed_in: str | None
) -> ReplayReport:
    async with platform(settings) as p:
        found: list[WorkflowHistory] = []
        if closed_in is not None:
            since, until = _month(closed_in)
            for workflow_id in await histories.closed_between(
                p.temporal, since.isoformat(), until.isoformat()
            ):
                found.append(await p.temporal.get_workflow_handle(workflow_id).fetch_history())
        for root in [*cases, *([batch] if batch else [])]:
            found += await histories.family(p.temporal, root)
        report = await histories.replay(found, ALL_WORKFLOWS, p.temporal.data_converter)
        async with p.sessionmaker.begin() as session:
            await trail.record(
                session,
                AuditKind.REPLAY,
                _operator(),
                _origin("replay"),
                cases[0] if len(cases) == 1 else batch,
                {"replayed": report.replayed, "identical": report.identical},
            )
        return report


def _print_replay(report: ReplayReport) -> None:
    for verdict in report.verdicts:
        if verdict.identical:
            typer.echo(f"identical  {verdict.workflow_id} ({verdict.workflow_type})")
        else:
            where = verdict.first_diverging_event
            typer.echo(
                f"DIFFERENT  {verdict.workflow_id} ({verdict.workflow_type}) "
                f"first diverging event: {where if where is not None else 'unknown'}: "
                f"{(verdict.error or '')[:300]}"
            )
    typer.echo(
        f"replayed={report.replayed} identical={report.identical} "
        f"different={report.replayed - report.identical}"
    )


# ----- export and verify -------------------------------------------------------------------


@audit_app.command("export")
def export_cmd(
    case: Annotated[list[str], typer.Option(help="a case id; repeatable")],
    out: Annotated[Path, typer.Option(dir_okay=False, help="the bundle to write (.zip)")],
) -> None:
    """Export cases as an audit bundle: JSON stories, decoded histories, a Chinese HTML
    report and a manifest of SHA-256 hashes. The export is in the audit trail."""
    if len(case) > bundle.MAX_BUNDLE_CASES:
        raise typer.BadParameter(f"at most {bundle.MAX_BUNDLE_CASES} cases", param_hint="--case")
    if not out.parent.is_dir():
        raise typer.BadParameter(f"no directory {out.parent}", param_hint="--out")
    settings = _settings()
    data, digest = _run(_export(settings, case))
    out.write_bytes(data)
    typer.echo(f"wrote {out} cases={len(case)} manifest_sha256={digest}")


async def _export(settings: Settings, case_ids: list[str]) -> tuple[bytes, str]:
    async with platform(settings) as p:
        async with p.sessionmaker() as session:
            stories = [
                await story.tell(
                    session, p.temporal, p.codec, p.budget, case_id, with_histories=True
                )
                for case_id in case_ids
            ]
        operator = _operator()
        data, manifest = bundle.build(
            stories, operator.name, {"case_ids": case_ids}, datetime.now(SHANGHAI)
        )
        digest = bundle.manifest_sha256(manifest)
        async with p.sessionmaker.begin() as session:
            await trail.record(
                session,
                AuditKind.EXPORT,
                operator,
                _origin("export"),
                case_ids[0] if len(case_ids) == 1 else None,
                {"cases": case_ids, "manifest_sha256": digest, "bytes": len(data)},
            )
        return data, digest


@audit_app.command("verify")
def verify_cmd(
    bundle_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
) -> None:
    """Check a bundle against its manifest; prints the manifest's SHA-256 (compare it with
    the export's line in the audit trail); exit 1 on any difference."""
    result = bundle.verify(bundle_file)
    for problem in result.problems:
        typer.echo(f"  {problem}")
    typer.echo(
        f"{'ok' if result.ok else 'FAILED'} files={result.files} "
        f"manifest_sha256={result.manifest_sha256}"
    )
    if not result.ok:
        raise typer.Exit(1)


# ----- cross-check ---------------------------------------------------------------------------


@audit_app.command("crosscheck")
def crosscheck_cmd(
    item: Annotated[str | None, typer.Option(help="one item only")] = None,
) -> None:
    """Ledger instructions vs payment workflows vs budget-system records; exit 1 on any
    difference."""
    settings = _settings()
    result = asyncio.run(_crosscheck(settings, item))
    for line in result.differences:
        typer.echo(f"  {line.case_id} #{line.instalment}: {line.problem}")
    typer.echo(
        f"instructions={result.instructions} payment_workflows={result.payment_workflows} "
        f"differences={len(result.differences)}"
    )
    if result.differences:
        raise typer.Exit(1)


async def _crosscheck(settings: Settings, item: str | None) -> Crosscheck:
    async with platform(settings) as p, p.sessionmaker() as session:
        return await crosscheck.crosscheck(session, p.temporal, p.budget, item)
