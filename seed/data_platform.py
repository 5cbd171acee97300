"""What the simulated public data platform holds of the sample firms (`make run` loads it).

The platform's figure of each kind the registry also has is the registry's (the sample
registry is an export of the platform), except for a few differences planted so that a
cross-check has something to find: one firm's tax paid 30% below what the registry
holds, one firm blacklisted that the registry holds as not, one firm with two
environmental penalties (every other firm has none). Two pairs of firms share a legal
representative and one firm is another's parent. The kinds only the platform serves
(penalties, patents) are drawn from the firm's credit code. Same count, day and seed,
same records; the planted firms are among the first few, never the first (the demo
enterprise user's).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta

from models.data_platform import DATA_PLATFORM_KINDS, EnterpriseRecord, RecordedFact
from models.facts import period_end
from seed.sample import SEED, generate

TAX_UNDERSTATED_BY = 0.3
PLANTED_PENALTIES = 2
_WINDOW = 40  # the planted firms are found among this many first firms


@dataclass(frozen=True)
class PlantedDifferences:
    """The sample firms whose platform records differ from the registry or relate them;
    None (or fewer pairs) where the sample is too small to hold them."""

    tax_understated: str | None  # tax_paid_fen 30% below the registry's
    blacklisted: str | None  # blacklisted, where the registry says not
    env_penalised: str | None  # env_penalty_count 2
    shared_representatives: tuple[tuple[str, str], ...]  # two pairs
    parent_and_subsidiary: tuple[str, str] | None


def planted_differences(count: int, as_of: date, seed: int = SEED) -> PlantedDifferences:
    # The generator's first firms are the same whatever the count: a prefix suffices.
    firms = [(e, facts) for e, facts, _account in generate(min(count, _WINDOW), as_of, seed)]
    free: list[str] = [e["uscc"] for e, _facts in firms[1:]]  # not the demo enterprise's

    def take(wanted: Callable[[str], bool] | None = None) -> str | None:
        for index, uscc in enumerate(free):
            if wanted is None or wanted(uscc):
                return free.pop(index)
        return None

    registry = {e["uscc"]: {f["kind"]: f["value"] for f in facts} for e, facts in firms}
    tax = take(lambda uscc: registry[uscc].get("tax_paid_fen", 0) > 0)
    blacklisted = take(lambda uscc: registry[uscc].get("blacklisted") is False)
    penalised = take()
    pairs: list[tuple[str, str]] = []
    while len(pairs) < 3 and len(free) >= 2:
        pairs.append((free.pop(0), free.pop(0)))
    return PlantedDifferences(
        tax_understated=tax,
        blacklisted=blacklisted,
        env_penalised=penalised,
        shared_representatives=tuple(pairs[:2]),
        parent_and_subsidiary=pairs[2] if len(pairs) == 3 else None,
    )


def data_platform_records(count: int, as_of: date, seed: int = SEED) -> Iterator[EnterpriseRecord]:
    """The platform's record of each of the `count` sample firms, in the registry's order."""
    planted = planted_differences(count, as_of, seed)
    last_year = period_end(str(as_of.year - 1))
    counted_on = as_of - timedelta(days=1)  # the day the sample's figures were fetched
    representative_of = {second: first for first, second in planted.shared_representatives}
    parent_of = {}
    if planted.parent_and_subsidiary is not None:
        parent, subsidiary = planted.parent_and_subsidiary
        parent_of[subsidiary] = parent
    for enterprise, facts, _account in generate(count, as_of, seed):
        uscc = enterprise["uscc"]
        held = {
            f["kind"]: RecordedFact(value=f["value"], as_of=f["period_end"])
            for f in facts
            if f["kind"] in DATA_PLATFORM_KINDS
        }
        drawn = random.Random(f"{seed}:{uscc}")  # str seeds do not depend on PYTHONHASHSEED
        patents = drawn.choices((0, 1, 2, 4, 8, 15, 30), weights=(50, 15, 10, 10, 8, 5, 2))[0]
        held["patent_count"] = RecordedFact(value=patents, as_of=last_year)
        penalties = PLANTED_PENALTIES if uscc == planted.env_penalised else 0
        held["env_penalty_count"] = RecordedFact(value=penalties, as_of=counted_on)
        if uscc == planted.tax_understated:
            declared = held["tax_paid_fen"]
            assert isinstance(declared.value, int)
            lower = round(declared.value * (1 - TAX_UNDERSTATED_BY))
            held["tax_paid_fen"] = declared.model_copy(update={"value": lower})
        if uscc == planted.blacklisted:
            held["blacklisted"] = held["blacklisted"].model_copy(update={"value": True})
        yield EnterpriseRecord(
            uscc=uscc,
            facts=dict(sorted(held.items())),
            legal_representative=_representative(representative_of.get(uscc, uscc), seed),
            parent_uscc=parent_of.get(uscc),
        )


def _representative(uscc: str, seed: int) -> str:
    """An opaque id of the firm's legal representative (the platform shows no names)."""
    return "LR" + hashlib.sha256(f"{seed}:representative:{uscc}".encode()).hexdigest()[:16]
