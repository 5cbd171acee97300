"""The match run's fast reading of stored facts gives what the full reading gives:
for every kind and for stored texts at every edge of JSON and of the kinds' checks,
the firm's facts are the same, invalid ones with the same reason."""

from __future__ import annotations

import random
from datetime import date

import numpy as np
import pytest

from domain.engine.arrays import FactTableBuilder
from domain.registry import enterprises
from domain.registry.enterprises import read_fact
from models.facts import FACT_KINDS, FactType

END = date(2025, 12, 31)
STORED = [
    *("0", "-0", "00", "-", "007", "123", "-5", "+5", "1e3", "1.0", "NaN", " 5", "5 "),
    *("１２", "٣", "9" * 18, "9" * 19, "-" + "9" * 18, "1" + "0" * 17, "1" + "0" * 30),
    *("true", "false", "True", "null", "[1]", "{}", "{not json", ""),
    *('"A"', '"AAA"', '"green"', '" A"', '"A "', '""', '" "', '"a\\"b"', '"\\u0041"'),
    *('"x\ny"', '"x\ty"', '"2025-01-01"', '"x' + "y" * 70 + '"', '"高新"', '"A', 'A"'),
]


@pytest.mark.parametrize("name", sorted(FACT_KINDS))
def test_the_fast_reading_agrees_with_the_full_one(name: str) -> None:
    kind = FACT_KINDS[name]
    fast_taken = 0
    for stored in STORED:
        fast, full = FactTableBuilder(), FactTableBuilder()
        row = fast.add_firm("F")
        if fast.add_stored(row, name, stored, END):
            fast_taken += 1
        else:
            fast.add(row, name, read_fact(kind, stored, END))
        full.add(full.add_firm("F"), name, read_fact(kind, stored, END))
        assert fast.finish().known_facts(0) == full.finish().known_facts(0), stored
    # The fast reading is taken where it should be (integers, booleans, plain strings).
    if kind.type in (FactType.INT, FactType.BOOL):
        assert fast_taken >= 2
    if kind.type is FactType.STR and kind.choices is None:
        assert fast_taken >= 3


@pytest.mark.parametrize("name", sorted(FACT_KINDS))
def test_many_texts_read_at_once_as_each_is_read_alone(name: str) -> None:
    """A full run reads each kind's texts as arrays (`plain_many`, then `add_many`):
    every text is plain or not, and gives the same fact, as `add_stored` decides alone."""
    texts = [*STORED, "1\x002", "5\x00", "-" * 19, "9" * 18 + "0", "-1", "10", "0"]
    many, alone = FactTableBuilder(), FactTableBuilder()
    rows = np.arange(len(texts))
    for row in rows.tolist():
        many.add_firm(f"F{row}")
        alone.add_firm(f"F{row}")
    values, plain = many.plain_many(name, texts)
    ends = np.full(len(texts), END.toordinal(), dtype=np.int32)
    many.add_many(name, rows[plain], values[plain], ends[plain])
    for row, text in enumerate(texts):
        assert alone.add_stored(row, name, text, END) is bool(plain[row]), text
    read_many, read_alone = many.finish(), alone.finish()
    for row, text in enumerate(texts):
        assert read_many.known_facts(row) == read_alone.known_facts(row), text


def test_the_latest_fact_of_each_kind_is_kept_across_compactions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Facts are read in parts and only each firm's latest of each kind is held
    (`_LatestFacts` compacts as it goes): compacting after every part keeps what one
    pass over everything keeps, ties on the period's end going to the later id, an
    invalid latest fact spoiling its kind and an invalid older one forgotten."""
    rng = random.Random(5)
    facts = []
    for firm in range(6):
        for kind, texts in (("talent_count", ["3", "007", "12"]), ("mu_grade", ['"A"', '"Z"'])):
            for _ in range(rng.randint(1, 4)):
                end = date(2023 + rng.randint(0, 2), 12, 31).isoformat()
                facts.append((f"F{firm}", kind, rng.choice(texts), end, 0))
        facts.append((f"F{firm}", "no_such_kind", "1", "2025-12-31", 0))
    facts.append(("NOT-READ", "talent_count", "1", "2025-12-31", 0))
    rng.shuffle(facts)
    facts = [(*fact[:4], id_) for id_, fact in enumerate(facts, start=1)]

    def read(parts: int) -> FactTableBuilder:
        builder = FactTableBuilder()
        builder.add_firms([f"F{firm}" for firm in range(6)])
        latest = enterprises._LatestFacts(builder)
        size = -(-len(facts) // parts)
        for start in range(0, len(facts), size):
            latest.add(facts[start : start + size])
        latest.finish()
        return builder

    whole = read(1).finish()
    monkeypatch.setattr(enterprises, "COMPACT_FROM", 1)
    parted = read(7).finish()
    for row in range(6):
        assert parted.known_facts(row) == whole.known_facts(row)
    assert parted.invalid_facts() == whole.invalid_facts()
    # And what one pass keeps is each firm's latest, by period end then id.
    for row in range(6):
        for kind in ("talent_count", "mu_grade"):
            mine = [f for f in facts if f[0] == f"F{row}" and f[1] == kind]
            uscc, _kind, stored, end, _id = max(mine, key=lambda f: (f[3], f[4]))
            expected = read_fact(FACT_KINDS[kind], stored, date.fromisoformat(end))
            assert whole.known_facts(row)[kind] == expected, (uscc, kind)
