"""Budget preview at city scale: how long a department waits to see what a version
would pay, before publishing it.

Uses a database holding the sample (bench/match_run.py or bench/dashboard.py loads
one; this script loads it when it is not there), then asks the real app in-process
(authentication, access, queries, JSON) as the auditor:
- once on a fresh app (every firm's facts read from the database),
- `--repeats` times more (the facts kept in the process, `FactTableCache`),
- once after one firm's fact has been written (the facts version changed: that
  firm's facts read again, `FactsChange`),
- once more, and once after an import has rewritten a fact of 1,000 firms;
- once as a process starting cold would, its copy forgotten: the snapshot a worker's
  match run stored after the first request (`FactsSnapshot`) read, and the 1,001 firms
  changed since;
- then on a fresh app started with `preload_facts` (ZHIDA_PRELOAD_FACTS), once its
  copy is read: how long the background reading took, and the first request after.
The first request finds no snapshot (any left by an earlier run is deleted first).

    python bench/budget_preview.py --database-url sqlite+aiosqlite:////tmp/matchbench/m.db

Last line: firms=… first_ms=… warm_ms=… after_write_ms=… again_ms=… after_import_1000_ms=…
cold_ms=… first_stall_ms=… preload_s=… preloaded_first_ms=…
(warm: the median; first_stall_ms: the longest the app's event loop stood still during
the first request, which every other request to the process waited through)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import sqlalchemy as sa
from sqlmodel import col, select

from api.main import create_app
from core.db import make_engine, make_sessionmaker, reader_of
from core.migrate import upgrade_async
from core.security import issue_token
from core.settings import Environment, Settings
from domain.matching import match_library
from domain.registry.enterprises import FACT_TABLES, FactTableCache
from models.policy import PolicyItemVersion
from models.registry import Fact, FactsSnapshot
from seed.reference import demo_users, ensure_users
from seed.sample import load_sample

READER = "auditor"


async def run(settings: Settings, enterprises: int, repeats: int) -> None:
    url = settings.database_url
    await upgrade_async(url)
    engine = make_engine(url)
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker.begin() as session:
        sample = await load_sample(session, enterprises, match_library.today_in_shanghai())
        await ensure_users(session, demo_users(None))
        item_code, version = (
            await session.execute(
                select(PolicyItemVersion.item_code, PolicyItemVersion.version).limit(1)
            )
        ).one()
    if not sample.skipped:
        # The planner's statistics of the tables just filled, as autovacuum would gather
        # them within a minute: without them PostgreSQL scanned every fact to read 500
        # firms' (0.8 s for a query of 10 ms).
        async with engine.begin() as connection:
            await connection.execute(sa.text("ANALYZE"))
    async with engine.begin() as connection:
        await connection.execute(sa.delete(FactsSnapshot))
    FACT_TABLES.clear()
    app = create_app(settings)
    path = f"/api/v1/items/{item_code}/versions/{version}/budget-preview"
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=600
        ) as client,
    ):
        headers = {"Authorization": f"Bearer {issue_token(settings, READER)}"}

        async def timed() -> tuple[float, dict[str, object]]:
            clock = time.perf_counter()
            response = await client.get(path, headers=headers)
            assert response.status_code == 200, response.text[:300]
            return (time.perf_counter() - clock) * 1000, response.json()

        async def longest_stall(done: asyncio.Event) -> float:
            """The longest the event loop left a 10 ms timer waiting past its time: how
            long another request to this process would have stood still."""
            worst = 0.0
            while not done.is_set():
                clock = time.perf_counter()
                await asyncio.sleep(0.01)
                worst = max(worst, time.perf_counter() - clock - 0.01)
            return worst * 1000

        done = asyncio.Event()
        ticker = asyncio.create_task(longest_stall(done))
        first_ms, preview = await timed()
        done.set()
        stall_ms = await ticker
        # The snapshot a worker's match run stores (another process: a cache of its own).
        async with reader_of(sessionmaker)() as reading:
            await FactTableCache().load(reading, sessionmaker)
        warm = [(await timed())[0] for _ in range(repeats)]

        async def rewrite(firms: int) -> None:
            """The latest fact of `firms` firms rewritten on its object, as an import
            does (`domain.registry.importer`)."""
            async with sessionmaker.begin() as session:
                facts = await session.scalars(
                    select(Fact).order_by(col(Fact.uscc), col(Fact.kind)).limit(firms * 40)
                )
                seen: set[str] = set()
                for fact in facts:
                    if fact.uscc not in seen and len(seen) < firms:
                        seen.add(fact.uscc)
                        fact.source = fact.source + "·"

        await rewrite(1)
        after_write_ms, _ = await timed()
        again_ms, again = await timed()
        assert again == preview
        await rewrite(1_000)
        after_import_ms, after_import = await timed()
        FACT_TABLES.clear()
        cold_ms, cold = await timed()
        assert FACT_TABLES.from_snapshot and FACT_TABLES.last_read == "patched"
        assert cold == after_import
    # A process started with ZHIDA_PRELOAD_FACTS: the copy read as it starts.
    FACT_TABLES.clear()
    preloading = create_app(settings.model_copy(update={"preload_facts": True}))
    async with (
        preloading.router.lifespan_context(preloading),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=preloading), base_url="http://bench", timeout=600
        ) as client,
    ):
        clock = time.perf_counter()
        await preloading.state.facts_preload
        preload_s = time.perf_counter() - clock
        clock = time.perf_counter()
        response = await client.get(path, headers=headers)
        assert response.status_code == 200, response.text[:300]
        preloaded_first_ms = (time.perf_counter() - clock) * 1000
    await engine.dispose()
    print(
        f"{item_code} v{version}: {preview['eligible']} eligible, "
        f"{preview['possibly_eligible']} possibly, of {preview['firms']} firms"
    )
    print(f"warm runs {' '.join(f'{ms:.0f}' for ms in warm)} ms")
    print(
        f"firms={preview['firms']} first_ms={first_ms:.0f} warm_ms={statistics.median(warm):.0f} "
        f"after_write_ms={after_write_ms:.0f} again_ms={again_ms:.0f} "
        f"after_import_1000_ms={after_import_ms:.0f} cold_ms={cold_ms:.0f} "
        f"first_stall_ms={stall_ms:.0f} "
        f"preload_s={preload_s:.1f} preloaded_first_ms={preloaded_first_ms:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--enterprises", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--database-url", help="default: a new SQLite file")
    args = parser.parse_args()
    url = args.database_url or (
        f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp(prefix='zhida-preview-')) / 'bench.db'}"
    )
    settings = Settings(environment=Environment.TEST, database_url=url)
    asyncio.run(run(settings, args.enterprises, args.repeats))


if __name__ == "__main__":
    main()
