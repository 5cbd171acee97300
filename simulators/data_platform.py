"""A simulator of the city's public data platform (公共数据平台), run as its own process.

It answers a firm's figures by kind (`GET /v1/enterprises/{uscc}/facts?kinds=...`) and
its related parties, one firm at a time or up to 1000 at once
(`POST /v1/related-parties:batchGet`), from records a tester or `make run` loads
through `PUT /v1/_simulator/enterprises` (an upsert, journaled like every simulator's
records, so they survive a restart). Related parties are derived from the records:
the firms sharing a legal representative, the parent, and the firms whose parent the
firm is. `GET /v1/fact-changes?cursor=...` serves the firms whose records changed after
an opaque cursor, oldest change first, each with its latest figures (the feed of the
platform's scheduled sync; the dials below do not touch it, the dials of every
simulator do).

Besides the dials every simulator has, it answers from an old snapshot on demand
(`stale_rate`: every reading's `as_of` moved back `stale_days`), withholds figures
(`missing_rate`: a requested kind answered as missing) and answers slower than any
client waits (`hang_rate`). Dialled at start (`zhida simulate data-platform
--stale-rate 0.1`) or at run time (`PUT /v1/_simulator/config`).
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, FastAPI, HTTPException, Query
from pydantic import BaseModel, Field, TypeAdapter

from core.workdays import SHANGHAI
from models.data_platform import (
    DATA_PLATFORM_KINDS,
    MAX_CHANGES_PER_PAGE,
    MAX_KINDS_PER_REQUEST,
    DataReading,
    EnterpriseRecord,
    FactChangesPage,
    FactsReply,
    FirmFacts,
    RelatedPartiesBatch,
    RelatedPartiesQuery,
    RelatedPartiesReply,
    RelatedParty,
    Relation,
)
from models.recognition import USCC_PATTERN
from simulators.base import Cursor, Dials, Simulator

MAX_RECORDS_PER_LOAD = 10_000
_USCC = re.compile(USCC_PATTERN)


class DataPlatformConfig(Dials):
    stale_rate: float = Field(
        default=0.0, ge=0, le=1, description="answers from an old snapshot: as_of moved back"
    )
    stale_days: int = Field(default=800, ge=1, le=36_500)
    missing_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of requested kinds answered as missing"
    )
    hang_rate: float = Field(default=0.0, ge=0, le=1, description="reply later than clients wait")
    hang_s: float = Field(default=15.0, ge=0)


@dataclass(frozen=True)
class _Firm:
    record: EnterpriseRecord
    recorded_on: date  # the day (in Shanghai) the platform last changed the record
    # Its place in the order records changed in (the change feed's cursor counts these).
    changed: int = 0


class LoadReport(BaseModel):
    received: int
    changed: int  # new or different records; the rest were held already as sent


CURSOR = Cursor(b"changes:")


def _checked_uscc(uscc: str) -> str:
    if not _USCC.match(uscc):
        raise HTTPException(422, f"not a unified social credit code: {uscc[:64]}")
    return uscc


def _checked_kinds(kinds: str) -> list[str]:
    """The kinds asked for, each once, in the order asked; a 422 naming any the platform
    does not serve."""
    asked = list(dict.fromkeys(kind.strip() for kind in kinds.split(",")))
    if "" in asked:
        raise HTTPException(422, "kinds: an empty kind name")
    if len(asked) > MAX_KINDS_PER_REQUEST:
        raise HTTPException(422, f"kinds: at most {MAX_KINDS_PER_REQUEST}, got {len(asked)}")
    unknown = [kind for kind in asked if kind not in DATA_PLATFORM_KINDS]
    if unknown:
        raise HTTPException(422, f"unknown kind: {', '.join(k[:64] for k in unknown)}")
    return asked


def create_app(config: DataPlatformConfig | None = None, state_file: Path | None = None) -> FastAPI:
    sim: Simulator[DataPlatformConfig, _Firm] = Simulator(
        config or DataPlatformConfig(),
        state_file,
        TypeAdapter(dict[str, _Firm]),
        busy="data platform busy",
    )
    # Who shares a representative, and whose parent each firm is: kept in step with the
    # records, so a relation is found without reading every record.
    by_representative: defaultdict[str, set[str]] = defaultdict(set)
    subsidiaries: defaultdict[str, set[str]] = defaultdict(set)
    protocol = APIRouter()

    def index(uscc: str, old: EnterpriseRecord | None, new: EnterpriseRecord) -> None:
        if old is not None:
            by_representative[old.legal_representative].discard(uscc)
            if old.parent_uscc is not None:
                subsidiaries[old.parent_uscc].discard(uscc)
        by_representative[new.legal_representative].add(uscc)
        if new.parent_uscc is not None:
            subsidiaries[new.parent_uscc].add(uscc)

    changes = [0]  # the last change's number

    def restored(saved: dict[str, _Firm]) -> None:
        for uscc, firm in saved.items():
            index(uscc, None, firm.record)
            changes[0] = max(changes[0], firm.changed)

    async def hang() -> None:
        if sim.rng.random() < sim.config.hang_rate:
            await asyncio.sleep(sim.config.hang_s)

    def parties(uscc: str) -> RelatedPartiesReply | None:
        firm = sim.records.get(uscc)
        if firm is None:
            return None
        record = firm.record
        related = [
            RelatedParty(uscc=other, relation=Relation.LEGAL_REPRESENTATIVE)
            for other in sorted(by_representative[record.legal_representative] - {uscc})
        ]
        if record.parent_uscc is not None:
            related.append(RelatedParty(uscc=record.parent_uscc, relation=Relation.PARENT))
        related += [
            RelatedParty(uscc=other, relation=Relation.SUBSIDIARY)
            for other in sorted(subsidiaries[uscc])
        ]
        # As of the latest change to any record the relations were read from.
        days = [firm.recorded_on]
        days += [sim.records[p.uscc].recorded_on for p in related if p.uscc in sim.records]
        return RelatedPartiesReply(
            uscc=uscc,
            legal_representative=record.legal_representative,
            parent_uscc=record.parent_uscc,
            related=related,
            as_of=max(days),
        )

    @protocol.get("/v1/enterprises/{uscc}/facts", response_model=FactsReply)
    async def facts(uscc: str, kinds: Annotated[str, Query(max_length=4000)]) -> FactsReply:
        """The firm's latest figure of each kind asked for; a kind it has none of, or a
        firm it does not know, is answered as missing."""
        await sim.misbehave()
        _checked_uscc(uscc)
        asked = _checked_kinds(kinds)
        await hang()
        firm = sim.records.get(uscc)
        back = timedelta(days=sim.config.stale_days)
        stale = sim.rng.random() < sim.config.stale_rate
        readings: list[DataReading] = []
        missing: list[str] = []
        for kind in asked:
            fact = None if firm is None else firm.record.facts.get(kind)
            if fact is None or sim.rng.random() < sim.config.missing_rate:
                missing.append(kind)
                continue
            readings.append(
                DataReading(
                    kind=kind,
                    value=fact.value,
                    as_of=fact.as_of - back if stale else fact.as_of,
                    source=DATA_PLATFORM_KINDS[kind],
                )
            )
        return FactsReply(uscc=uscc, readings=readings, missing=missing)

    @protocol.get("/v1/enterprises/{uscc}/related-parties", response_model=RelatedPartiesReply)
    async def related_parties(uscc: str) -> RelatedPartiesReply:
        await sim.misbehave()
        _checked_uscc(uscc)
        await hang()
        found = parties(uscc)
        if found is None:
            raise HTTPException(404, "no such enterprise")
        return found

    @protocol.post("/v1/related-parties:batchGet", response_model=RelatedPartiesBatch)
    async def related_parties_batch(query: RelatedPartiesQuery) -> RelatedPartiesBatch:
        """The related parties of each firm asked for (each once, in the order asked);
        those the platform does not know are named in `unknown`."""
        await sim.misbehave()
        await hang()
        found: list[RelatedPartiesReply] = []
        unknown: list[str] = []
        for uscc in dict.fromkeys(query.usccs):
            answer = parties(uscc)
            if answer is None:
                unknown.append(uscc)
            else:
                found.append(answer)
        return RelatedPartiesBatch(parties=found, unknown=unknown)

    @protocol.get("/v1/fact-changes", response_model=FactChangesPage)
    async def fact_changes(
        cursor: Annotated[str | None, Query(max_length=256)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_CHANGES_PER_PAGE)] = 100,
    ) -> FactChangesPage:
        """The firms whose records changed after `cursor`, oldest change first, each with
        its latest figures; a firm changed twice is served once, at its last change."""
        await sim.misbehave()
        after = 0 if cursor is None else CURSOR.decode(cursor)
        await hang()
        changed = sorted(
            (firm for firm in sim.records.values() if firm.changed > after),
            key=lambda firm: firm.changed,
        )
        page = changed[:limit]
        last = page[-1].changed if page else after
        return FactChangesPage(
            changes=[
                FirmFacts(
                    uscc=firm.record.uscc,
                    readings=[
                        DataReading(
                            kind=kind,
                            value=fact.value,
                            as_of=fact.as_of,
                            source=DATA_PLATFORM_KINDS[kind],
                        )
                        for kind, fact in sorted(firm.record.facts.items())
                    ],
                )
                for firm in page
            ],
            next_cursor=CURSOR.encode(last),
            has_more=len(changed) > limit,
        )

    @protocol.put("/v1/_simulator/enterprises", response_model=LoadReport)
    async def load(
        records: Annotated[list[EnterpriseRecord], Body(max_length=MAX_RECORDS_PER_LOAD)],
    ) -> LoadReport:
        """Add or replace records (the tester's hand: no dials apply). A record sent as
        it is held is left alone, so loading the same records again writes nothing."""
        changed = 0
        today = datetime.now(SHANGHAI).date()
        async with sim.lock:
            for record in records:
                held = sim.records.get(record.uscc)
                if held is not None and held.record == record:
                    continue
                changes[0] += 1
                firm = _Firm(record=record, recorded_on=today, changed=changes[0])
                await sim.keep(record.uscc, firm)
                index(record.uscc, None if held is None else held.record, record)
                changed += 1
        return LoadReport(received=len(records), changed=changed)

    @protocol.get("/v1/_simulator/enterprises/{uscc}", response_model=EnterpriseRecord)
    async def record(uscc: str) -> EnterpriseRecord:
        firm = sim.records.get(uscc)
        if firm is None:
            raise HTTPException(404, "no such enterprise")
        return firm.record

    return sim.app("公共数据平台 (simulator)", protocol, restored=restored)
