"""A full matching run through the database, at city scale: what the nightly run costs.

Loads the sample data set (N firms, the 30 sample items) into a database of its own
unless it is there already, then runs the match library's load, evaluation and write
twice: first into an empty library, then again over an unchanged one (the nightly
case: the write only compares).

    python bench/match_run.py --enterprises 300000
    python bench/match_run.py --database-url postgresql://postgres@127.0.0.1:5432/zhida_bench
    python bench/match_run.py --items 1000 --database-url …  # a library of 1,000 items

With --items N above 30, the library also gets N − 30 items varied from the sample's
(`seed.sample.synthetic_items`: thresholds scaled, some narrowed to a few districts or
industries), published once; a database holds the largest library asked of it so far.

Every firm's facts are read whole the first time (any stored snapshot deleted first),
and stored as the snapshot; the second run finds them kept in the process, as a worker
does night after night (`FactTableCache`); then a process starting cold is timed
reading them from the snapshot (`cold_load_s`).

Last line: firms=N items=K pairs=P load_s=… compute_s=… write_s=… again_load_s=…
again_write_s=… cold_load_s=… peak_mb=…
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from core.db import make_engine, make_sessionmaker, reader_of
from core.migrate import upgrade_async
from core.settings import Environment, Settings
from domain.matching import match_library
from domain.registry.enterprises import FACT_TABLES
from models.matching import MatchRequest, MatchResult, MatchScope
from models.registry import FactsSnapshot
from seed.sample import load_policies, load_sample, sample_policies, synthetic_items


async def run(database_url: str, enterprises: int, items: int) -> None:
    await upgrade_async(database_url)
    engine = make_engine(database_url)
    sessionmaker = make_sessionmaker(engine)
    today = match_library.today_in_shanghai()
    started = time.perf_counter()
    async with sessionmaker.begin() as session:
        sample = await load_sample(session, enterprises, today)
    seconds = time.perf_counter() - started
    if sample.skipped:
        print("sample: already in the database")
    else:
        print(f"sample: {sample.enterprises} firms, {sample.items} items loaded in {seconds:.0f}s")
    sample_items = len(sample_policies()["items"])
    if items > sample_items:
        clock = time.perf_counter()
        async with sessionmaker.begin() as session:
            added = await load_policies(session, synthetic_items(items - sample_items))
        print(f"items: {added} varied items published in {time.perf_counter() - clock:.0f}s")
    async with sessionmaker.begin() as session:
        # Empty, as before the first run ever: on PostgreSQL without the dead rows a
        # DELETE would leave for the next statements to step over.
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(sa.text("TRUNCATE match_result, match_tally"))
        else:
            await session.execute(sa.delete(MatchResult))
        await session.execute(sa.delete(FactsSnapshot))
    FACT_TABLES.clear()
    request = MatchRequest(scope=MatchScope.FULL)
    figures: list[tuple[float, float, float, int]] = []
    for attempt in ("into an empty library", "again, nothing changed"):
        clock = time.perf_counter()
        async with reader_of(sessionmaker)() as session:  # as a run reads
            loaded = await match_library.load(session, request, sessionmaker)
        load_s = time.perf_counter() - clock
        clock = time.perf_counter()
        evaluated = match_library.Evaluated(loaded, today, threads=2)
        compute_s = time.perf_counter() - clock
        clock = time.perf_counter()
        async with sessionmaker.begin() as session:
            added, removed = await match_library.store(session, request, loaded, evaluated)
        write_s = time.perf_counter() - clock
        eligible, possible = evaluated.counts()
        figures.append((load_s, compute_s, write_s, eligible + possible))
        print(
            f"{attempt}: load {load_s:.1f}s, compute {compute_s:.2f}s, write {write_s:.1f}s "
            f"(added {added}, removed {removed}; eligible {eligible}, possibly {possible})"
        )
    FACT_TABLES.clear()
    clock = time.perf_counter()
    async with reader_of(sessionmaker)() as session:
        cold = await match_library.load(session, request, sessionmaker)
    cold_load_s = time.perf_counter() - clock
    assert FACT_TABLES.last_read == "stored", FACT_TABLES.last_read
    assert cold.table.uscc == loaded.table.uscc
    await engine.dispose()
    (load_s, compute_s, write_s, pairs), (again_load_s, _c, again_write_s, _p) = figures
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"firms={len(loaded.table)} items={len(loaded.items)} pairs={pairs} "
        f"load_s={load_s:.1f} compute_s={compute_s:.2f} "
        f"write_s={write_s:.1f} again_load_s={again_load_s:.1f} "
        f"again_write_s={again_write_s:.1f} cold_load_s={cold_load_s:.1f} peak_mb={peak_mb:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--enterprises", type=int, default=300_000)
    parser.add_argument(
        "--items", type=int, default=30, help="items in the library (the sample has 30)"
    )
    parser.add_argument(
        "--database-url", help="default: a new SQLite file in a temporary directory"
    )
    args = parser.parse_args()
    url = args.database_url or (
        f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp(prefix='zhida-match-')) / 'bench.db'}"
    )
    # As the platform reads it: postgresql://… means the asyncpg driver.
    url = Settings(environment=Environment.TEST, database_url=url).database_url
    asyncio.run(run(url, args.enterprises, args.items))


if __name__ == "__main__":
    main()
