"""Speed of the matching engine: every firm against every item, and one firm again.

Builds N synthetic firms and K items with the sample generator (seed.sample),
in memory: the figures are compute only, without database load or write.

    python bench/matching.py --enterprises 300000 --items 1000

Prints, last line:

    full_run_s=X per_firm_ms=Y peak_mb=Z loop_ratio=W

full_run_s   every pair's verdict plus every eligible pair's amount (median of 3
             runs, the first of them cold)
per_firm_ms  one firm re-matched against every item after one of its facts changed
             (verdicts, amounts and per-condition outcomes of its matches), the mean
             over --firm-sample firms with the items compiled once (`FirmMatcher`)
peak_mb      peak resident memory of this process
loop_ratio   a straightforward loop (domain.engine.rules.evaluate + compute_amount per
             pair), timed on a random sample of pairs and extrapolated to N×K,
             divided by full_run_s
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from domain.engine.amounts import compute_amount, parse_amount_rule
from domain.engine.arrays import (
    CompiledItem,
    FactTable,
    FirmMatcher,
    ItemMatches,
    match_firm,
    match_items,
)
from domain.engine.rules import KnownFact, evaluate, parse_rule
from models.eligibility import Verdict
from seed.sample import generated_facts, synthetic_items

AS_OF = date(2026, 11, 27)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--enterprises", type=int, default=300_000)
    parser.add_argument("--items", type=int, default=1_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--loop-sample", type=int, default=20_000, help="pairs the loop times")
    parser.add_argument("--firm-sample", type=int, default=200, help="firms re-matched one by one")
    args = parser.parse_args()
    rng = random.Random(7)

    started = time.perf_counter()
    table = FactTable.build(generated_facts(args.enterprises, AS_OF))
    items = [
        CompiledItem(
            spec["code"], 1, parse_rule(spec["eligibility"]), parse_amount_rule(spec["amount"])
        )
        for spec in synthetic_items(args.items)
    ]
    print(f"built firms={len(table)} items={len(items)} in {time.perf_counter() - started:.1f}s")

    runs: list[float] = []
    results: list[ItemMatches] = []
    for _ in range(3):
        results.clear()  # one run's results in memory at a time
        started = time.perf_counter()
        results[:] = match_items(table, items, AS_OF, threads=args.threads)
        runs.append(time.perf_counter() - started)
    full_run = statistics.median(runs)
    eligible = sum(r.eligible_count for r in results)
    possible = sum(r.possible_count for r in results)
    print(
        f"full runs {' '.join(f'{r:.3f}' for r in runs)}s; pairs={len(table) * len(items)} "
        f"eligible={eligible} possibly={possible}"
    )
    started = time.perf_counter()
    matched = sum(len(r.matched(table).rows) for r in results)
    seconds = time.perf_counter() - started
    print(f"materialise all {matched} matched pairs with verdicts and amounts: {seconds:.2f}s")

    per_firm = _one_firm_at_a_time(table, items, rng, args.firm_sample)
    loop_total = _straightforward_loop(table, items, rng, args.loop_sample)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"loop extrapolated to all pairs: {loop_total:.0f}s")
    print(
        f"full_run_s={full_run:.3f} per_firm_ms={per_firm * 1000:.2f} "
        f"peak_mb={peak_mb:.0f} loop_ratio={loop_total / full_run:.0f}"
    )


def _one_firm_at_a_time(
    table: FactTable, items: list[CompiledItem], rng: random.Random, sample: int
) -> float:
    """Mean seconds to re-match one firm against every item after a fact changed."""
    firms = []
    for row in rng.sample(range(len(table)), sample):
        facts = table.known_facts(row)
        facts["credit_rating"] = replace(
            facts.get("credit_rating", KnownFact("A", date(2025, 12, 31))), value="A"
        )
        firms.append(facts)
    started = time.perf_counter()
    for facts in firms:
        match_firm("firm", facts, items, AS_OF)  # item by item
    by_item = (time.perf_counter() - started) / sample
    started = time.perf_counter()
    matcher = FirmMatcher(items, AS_OF)
    compiled = time.perf_counter() - started
    seconds = []
    for facts in firms:
        started = time.perf_counter()
        matcher.match("firm", facts)  # verdicts, amounts and reasons
        seconds.append(time.perf_counter() - started)
    seconds.sort()
    print(
        f"one firm: item by item {by_item * 1000:.2f} ms; compiled (once, "
        f"{compiled * 1000:.0f} ms) mean {statistics.mean(seconds) * 1000:.2f} ms, "
        f"p99 {seconds[len(seconds) * 99 // 100] * 1000:.2f} ms, max {seconds[-1] * 1000:.2f} ms"
    )
    return statistics.mean(seconds)


def _straightforward_loop(
    table: FactTable, items: list[CompiledItem], rng: random.Random, sample: int
) -> float:
    """Seconds a per-pair loop would take over every pair, from a timed sample."""
    pairs = [
        (table.known_facts(rng.randrange(len(table))), rng.choice(items)) for _ in range(sample)
    ]
    started = time.perf_counter()
    for facts, item in pairs:
        if evaluate(item.rule, facts, AS_OF).verdict is not Verdict.NOT_ELIGIBLE:
            compute_amount(item.amount_rule, facts)
    per_pair = (time.perf_counter() - started) / sample
    return per_pair * len(table) * len(items)


if __name__ == "__main__":
    main()
