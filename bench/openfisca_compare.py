"""Our matching engine against OpenFisca-core on the same rules and the same firms.

OpenFisca (rules as code, vectorised over numpy) is the best-known engine for this
kind of work. This script translates every item's eligibility rule into an OpenFisca
tax-benefit system and computes every firm's verdict on every item with both engines,
in this one process, then checks that the verdicts are identical.

    python bench/openfisca_compare.py --enterprises 300000 --items 1000
    python bench/openfisca_compare.py --rules thresholds   # one `fact ≥ x` per item

The translation is as kind to OpenFisca as we could make it:
- one `firm` entity; each fact kind is two input variables, its value (numbers as
  floats, OpenFisca's ints being 32 bits; text as our dictionary codes; dates as day
  ordinals) and whether it is fresh on the day (present
  and not stale: given, where our engine computes it in the timed part);
- each distinct condition is one variable, so OpenFisca's cache shares it between the
  items that use it, as our engine shares leaves; its value is Kleene's three values
  as 0 fails, 1 unknown, 2 passes, so that all/any/not are minimum/maximum/2−x
  (over OpenFisca's int, 32 bits, throughout);
- a text condition is decided on the dictionary when the system is built and becomes
  one lookup per firm in that table of decisions (our engine also decides on the
  dictionary); a condition's three values are computed in single bytes;
- each item is one variable over its conditions; its value is the verdict.

Timed: every item's verdict for every firm, warm, after one untimed run. OpenFisca:
its best of `--runs`, each on a new simulation with the inputs already set (its times
swing by several times from run to run with the memory its cache of every variable
takes). Ours: the median of `--runs`, each on a new evaluation context, with one thread
and with `--threads`; `ours_s` is the better of the two, `ratio` is openfisca_s/ours_s.

Prints, last line:

    firms=N rules=K openfisca_s=X ours_s=Y ratio=X/Y identical=true|false
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from openfisca_core.entities import build_entity
from openfisca_core.periods import DateUnit
from openfisca_core.simulations import Simulation, SimulationBuilder
from openfisca_core.taxbenefitsystems import TaxBenefitSystem
from openfisca_core.variables import Variable

from domain.engine.amounts import parse_amount_rule
from domain.engine.arrays import (
    CompiledItem,
    FactTable,
    all_verdicts,
    condition_key,
    unpack,
)
from domain.engine.rules import (
    AllOf,
    AnyOf,
    Condition,
    NotRule,
    RuleNode,
    compare_value,
    parse_rule,
)
from models.facts import FactType
from seed.sample import generated_facts, synthetic_items

AS_OF = date(2026, 11, 27)
PERIOD = "2026"
_R = TypeVar("_R")
Firm = build_entity(key="firm", plural="firms", label="Firm", is_person=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--enterprises", type=int, default=300_000)
    parser.add_argument("--items", type=int, default=1_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--rules",
        choices=["sample", "thresholds"],
        default="sample",
        help="the sample library's items varied (seed.sample.synthetic_items), or one "
        "threshold per item",
    )
    args = parser.parse_args()

    table = FactTable.build(generated_facts(args.enterprises, AS_OF))
    specs = (
        synthetic_items(args.items)
        if args.rules == "sample"
        else _threshold_items(table, args.items, random.Random(7))
    )
    items = [
        CompiledItem(
            spec["code"], 1, parse_rule(spec["eligibility"]), parse_amount_rule(spec["amount"])
        )
        for spec in specs
    ]
    started = time.perf_counter()
    system = OpenFiscaRules(table, items)
    print(
        f"built firms={len(table)} items={len(items)}; openfisca system of "
        f"{len(system.variables)} variables in {time.perf_counter() - started:.1f}s"
    )

    openfisca_runs, theirs = _timed(args.runs, system.new_simulation, system.verdicts)
    one_thread, ours = _timed(args.runs, None, lambda _: all_verdicts(table, items, AS_OF, 1))
    threaded, _ = _timed(args.runs, None, lambda _: all_verdicts(table, items, AS_OF, args.threads))
    identical = all(
        np.array_equal(a, _three_values(b, len(table))) for a, b in zip(theirs, ours, strict=True)
    )
    # OpenFisca's best run (its times swing with the memory its cache takes), our median.
    openfisca_s = min(openfisca_runs)
    ours_1, ours_n = statistics.median(one_thread), statistics.median(threaded)
    print(f"openfisca runs {_listed(openfisca_runs)}s")
    print(f"ours, 1 thread {_listed(one_thread)}s; {args.threads} threads {_listed(threaded)}s")
    best = min(ours_1, ours_n)
    print(
        f"firms={len(table)} rules={len(items)} openfisca_s={openfisca_s:.3f} "
        f"ours_s={best:.3f} ours_1thread_s={ours_1:.3f} ours_{args.threads}threads_s={ours_n:.3f} "
        f"ratio={openfisca_s / best:.1f} identical={str(identical).lower()}"
    )


def _threshold_items(table: FactTable, count: int, rng: random.Random) -> list[dict[str, Any]]:
    """`count` items of one threshold each (`fact ≥ x`), over the numeric facts, each
    threshold a value some firm has: the plainest rules there are."""
    numeric = [
        (name, column.values[column.present])
        for name, column in table.columns.items()
        if column.kind.type is FactType.INT and column.present.any()
    ]
    specs = []
    for n in range(count):
        fact, values = numeric[n % len(numeric)]
        threshold = int(values[rng.randrange(len(values))])
        specs.append(
            {
                "code": f"T{n:04d}",
                "eligibility": {"fact": fact, "op": "gte", "value": threshold},
                "amount": {"kind": "fixed", "amount_fen": 100_000},
            }
        )
    return specs


def _timed(
    runs: int, prepare: Callable[[], Any] | None, work: Callable[[Any], _R]
) -> tuple[list[float], _R]:
    """Seconds of `work` per run (after an untimed warm-up), and the last run's result."""
    result = work(prepare() if prepare else None)
    seconds = []
    for _ in range(runs):
        state = prepare() if prepare else None
        del result  # one run's results in memory at a time
        started = time.perf_counter()
        result = work(state)
        seconds.append(time.perf_counter() - started)
    return seconds, result


def _three_values(verdict: tuple[np.ndarray, np.ndarray], size: int) -> np.ndarray:
    """Our packed verdict as OpenFisca's three values: 2 eligible, 1 possibly, 0 not."""
    passes, may_pass = (unpack(bits, size).astype(np.int32) for bits in verdict)
    return passes + may_pass


def _listed(seconds: list[float]) -> str:
    return " ".join(f"{s:.3f}" for s in seconds)


class OpenFiscaRules:
    """The items' rules as an OpenFisca tax-benefit system over one firm entity."""

    def __init__(self, table: FactTable, items: Sequence[CompiledItem]) -> None:
        self.table = table
        self.system = TaxBenefitSystem([Firm])
        self.variables: list[str] = []
        self._conditions: dict[str, str] = {}
        for fact, column in table.columns.items():
            # OpenFisca's int is int32; amounts in fen need more: float64 holds every
            # integer up to 2**53 exactly, and OpenFisca models amounts as floats.
            self._input(fact, float if column.kind.type is FactType.INT else int)
            self._input(f"{fact}__fresh", bool)
        self.items = [self._item(n, item.rule) for n, item in enumerate(items)]

    def new_simulation(self) -> Simulation:
        simulation = SimulationBuilder().build_default_simulation(self.system, len(self.table))
        simulation.trace = False
        for fact, column in self.table.columns.items():
            fresh = column.present
            if column.kind.max_age_days is not None and column.period_end is not None:
                oldest = (AS_OF - timedelta(days=column.kind.max_age_days)).toordinal()
                fresh = fresh & (column.period_end >= oldest)
            simulation.set_input(fact, PERIOD, column.values)
            simulation.set_input(f"{fact}__fresh", PERIOD, fresh)
        return simulation

    def verdicts(self, simulation: Simulation) -> list[np.ndarray]:
        return [simulation.calculate(name, PERIOD) for name in self.items]

    def _add(self, name: str, value_type: type, formula: Callable[..., Any] | None) -> str:
        attributes: dict[str, Any] = {
            "value_type": value_type,
            "entity": Firm,
            "definition_period": DateUnit.YEAR,
            "label": name,
        }
        if formula is not None:
            attributes["formula"] = formula
        self.system.add_variable(type(name, (Variable,), attributes))
        self.variables.append(name)
        return name

    def _input(self, name: str, value_type: type) -> None:
        self._add(name, value_type, None)

    def _item(self, n: int, rule: RuleNode) -> str:
        compute = self._node(rule)

        def formula(firm: Any, period: Any) -> Any:
            return compute(firm, period)

        return self._add(f"item_{n}", int, formula)

    def _node(self, node: RuleNode) -> Callable[[Any, Any], np.ndarray]:
        if isinstance(node, AllOf | AnyOf):
            children = [
                self._node(child) for child in (node.all if isinstance(node, AllOf) else node.any)
            ]
            combine = np.minimum if isinstance(node, AllOf) else np.maximum

            def combined(firm: Any, period: Any) -> np.ndarray:
                value = children[0](firm, period)
                for child in children[1:]:
                    value = combine(value, child(firm, period))
                return value

            return combined
        if isinstance(node, NotRule):
            inner = self._node(node.not_)
            return lambda firm, period: 2 - inner(firm, period)
        if not isinstance(node, Condition):  # a manual condition: always unknown
            return lambda firm, period: np.ones(firm.count, dtype=np.int32)
        name = self._condition(node)
        return lambda firm, period: firm(name, period)

    def _condition(self, condition: Condition) -> str:
        key = condition_key(condition)
        if key in self._conditions:
            return self._conditions[key]
        fact, holds = condition.fact, self._holds(condition)

        def formula(firm: Any, period: Any) -> np.ndarray:
            # 1 + fresh × (2·holds − 1), in single bytes: 2 passes, 0 fails, 1 unknown
            fresh = firm(f"{fact}__fresh", period).view(np.int8)
            passes = holds(firm(fact, period)).view(np.int8)
            verdict: np.ndarray = (passes + passes - 1) * fresh + 1
            return verdict

        name = self._add(f"condition_{len(self._conditions)}", int, formula)
        self._conditions[key] = name
        return name

    def _holds(self, condition: Condition) -> Callable[[np.ndarray], np.ndarray]:
        column = self.table.columns[condition.fact]
        op, expected = condition.op, condition.value
        if column.kind.type is FactType.STR:
            # One lookup per firm in a table of the dictionary's decisions (a missing
            # value's code, -1, reads the last entry: such a firm is not fresh anyway).
            chosen = np.asarray(
                [compare_value(op, text, expected) for text in column.dictionary] or [False]
            )
            return lambda values: chosen[values]
        if isinstance(expected, date):
            expected = expected.toordinal()
        match op:
            case "eq":
                return lambda values: values == expected
            case "ne":
                return lambda values: values != expected
            case "gt":
                return lambda values: values > expected
            case "gte":
                return lambda values: values >= expected
            case "lt":
                return lambda values: values < expected
            case "lte":
                return lambda values: values <= expected
            case "in":
                return lambda values: np.isin(values, [int(v) for v in expected])
            case "not_in":
                return lambda values: ~np.isin(values, [int(v) for v in expected])
            case "between":
                low, high = (int(v) for v in expected)
                return lambda values: (values >= low) & (values <= high)
        raise ValueError(f"no translation for {condition.fact} {op}")


if __name__ == "__main__":
    main()
