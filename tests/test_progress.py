"""Long commands show progress (rows done of total, rate, time left), and `make test`
passes on a machine without a PostgreSQL server, saying in one line that it skipped
the PostgreSQL run."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncSession

from core.progress import TerminalProgress
from core.settings import PROJECT_ROOT
from domain.registry.importer import import_content
from tests.fixtures.factories import new_uscc

FIRMS = 600  # more than one batch of the importer's 500


def _export(usccs: list[str]) -> bytes:
    rows: list[dict[str, object]] = []
    for uscc in usccs:
        name = f"湖州测试{uscc[-6:]}有限公司"
        rows += [
            {
                "record": "enterprise",
                "uscc": uscc,
                "name": name,
                "region_code": "330502",
                "industry_code": "C1711",
                "size_class": "small",
                "established_on": "2012-03-04",
            },
            {
                "record": "fact",
                "uscc": uscc,
                "kind": "social_security_headcount",
                "value": 42,
                "period": "2025",
                "source": "湖州市公共数据平台",
                "fetched_at": "2026-11-20T08:00:00+08:00",
            },
            {
                "record": "account",
                "uscc": uscc,
                "bank_name": "湖州银行",
                "account_name": name,
                "account_number": "6222000011112222333",
                "is_default": True,
            },
        ]
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode() + b"\n"


async def test_an_import_reports_rows_validated_then_written(session: AsyncSession) -> None:
    heard: list[tuple[str, int, int | None]] = []
    content = _export([new_uscc() for _ in range(FIRMS)])
    report = await import_content(session, content, "jsonl", lambda *r: heard.append(r))
    rows = 3 * FIRMS
    assert report.rows == rows
    phases = [phase for phase, _done, _total in heard]
    assert phases == sorted(phases, key=["validating", "writing"].index)
    for phase in ("validating", "writing"):
        done = [d for p, d, _t in heard if p == phase]
        assert done == sorted(done) and len(done) >= 3, (phase, heard)
        assert [(d, t) for p, d, t in heard if p == phase][-1] == (rows, rows)
        assert all(t == rows for p, _d, t in heard if p == phase)


def test_zhida_sample_shows_firms_loaded_of_total_with_rate(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ZHIDA_VAR_DIR": str(tmp_path),
        "ZHIDA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'sample.db'}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "sample", "--enterprises", "1500"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "loaded enterprises=1500" in done.stdout
    assert "firms" in done.stderr and "1500/1500" in done.stderr, done.stderr
    assert "rows/s" in done.stderr, done.stderr


def test_off_a_terminal_progress_is_a_plain_line_every_few_seconds() -> None:
    """In CI or a log file a bar would be noise (or nothing until the end): a line
    with rows, rate and time left every `every_s`, and one when a phase is done."""
    stream = io.StringIO()  # not a terminal
    now = [100.0]
    progress = TerminalProgress(Console(file=stream), every_s=5, clock=lambda: now[0])
    with progress:
        for at, done in ((101, 500), (106, 1500), (107, 2000), (112, 3000), (113, 3000)):
            now[0] = at
            progress("writing", done, 3000)
        now[0] = 115
        progress("matching", 40, None)  # a later phase counts from where the last ended
        now[0] = 118
        progress("matching", 90, None)
    assert stream.getvalue().splitlines() == [
        "writing 1500/3000 rows, 250 rows/s, 0:00:06 left",
        "writing 3000/3000 rows in 0:00:12, 250 rows/s",
        "matching 90 rows, 15 rows/s",
    ]


def _pytest(test: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_without_a_postgresql_server_the_suite_passes_and_says_how_to_enable_it() -> None:
    here = Path(__file__).relative_to(PROJECT_ROOT)
    test = f"{here}::{test_an_import_reports_rows_validated_then_written.__name__}"
    nobody_there = "postgresql://postgres@127.0.0.1:9/postgres"  # the discard port: refused
    run = _pytest(test, ZHIDA_TEST_POSTGRES_URL=nobody_there, ZHIDA_TEST_POSTGRES_REQUIRED="")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout  # SQLite only
    skipped = [line for line in run.stdout.splitlines() if "PostgreSQL run skipped" in line]
    assert len(skipped) == 1 and "127.0.0.1:9" in skipped[0], run.stdout
    assert "ZHIDA_TEST_POSTGRES_URL" in skipped[0]
    # CI asks for PostgreSQL: there, a missing server fails the run instead.
    required = _pytest(test, ZHIDA_TEST_POSTGRES_URL=nobody_there, ZHIDA_TEST_POSTGRES_REQUIRED="1")
    assert required.returncode != 0
    assert "1 passed" in required.stdout and "1 error" in required.stdout


def test_a_logged_exception_shows_no_local_variables() -> None:
    """A traceback in the log names frames, never their variables (decrypted payloads,
    accounts): rich's default printed them all, slowly."""
    import io

    import structlog
    from pydantic import SecretStr

    from core.logging import configure_logging
    from core.settings import Environment, Settings

    for environment in (Environment.DEVELOPMENT, Environment.PRODUCTION):
        out = io.StringIO()
        settings = Settings(environment=environment, token_secret=SecretStr("s" * 40))
        configure_logging(settings, out)
        account = "6222020200112233445"  # noqa: F841 - the local the log must not show
        try:
            raise ValueError("boom")
        except ValueError:
            structlog.get_logger().error("request.failed", exc_info=True)
        assert "boom" in out.getvalue() and "6222020200112233445" not in out.getvalue()
