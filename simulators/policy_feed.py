"""A simulator of the government portals' policy feed (政策发布), run as its own process.

It serves the publications in simulators/data/policy_feed/ (one YAML file each, written
after real published subsidy policies of every level: a document republished by two
portals, a corrected revision, an amendment and a repeal among them) in the order the
portals published them: `GET /v1/publications?cursor=...&limit=...` answers a page and
the cursor after it. The cursor is opaque to clients and names a place in that order,
so a client that keeps it is never served the same publication twice, and one that
loses it is served everything again.

Besides the dials every simulator has, `released` holds back all but the first N
publications (none released at 0, all at null), so that a tester can publish more
later and watch the harvest pick up only what is new. Dialled at start (`zhida simulate
policy-feed --released 10`) or at run time (`PUT /v1/_simulator/config`). A tester also
publishes documents of their own (`POST /v1/_simulator/publications`, the feed's format;
journaled with `--state-file`), served after the data set.
"""

from __future__ import annotations

import random
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, FastAPI, Query
from pydantic import BaseModel, Field, TypeAdapter

from models.policy_feed import MAX_PAGE_SIZE, Publication, RawFeedPage
from simulators.base import Cursor, Dials, Simulator

DATA = Path(__file__).parent / "data" / "policy_feed"


class PolicyFeedConfig(Dials):
    released: int | None = Field(
        default=None, ge=0, description="publications served (the first N); null: all"
    )
    malformed_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="share of publications served out of shape (a date in 1800), the same "
        "ones for a seed",
    )


@cache
def publications() -> tuple[Publication, ...]:
    """Every publication of the data set, in the order the portals published them."""
    found = [
        Publication.model_validate(yaml.safe_load(path.read_text("utf-8")))
        for path in sorted(DATA.glob("*.yaml"))
    ]
    return tuple(sorted(found, key=lambda p: p.published_at))


CURSOR = Cursor(b"feed:")


class Published(BaseModel):
    position: int  # its place in the feed: the cursor after it is this plus one


def create_app(config: PolicyFeedConfig | None = None, state_file: Path | None = None) -> FastAPI:
    simulator: Simulator[PolicyFeedConfig, Publication] = Simulator(
        config or PolicyFeedConfig(),
        state_file,  # the publications a tester added, journaled: the data set is fixed
        TypeAdapter(dict[str, Publication]),
        busy="policy feed busy",
    )
    protocol = APIRouter()

    def served() -> list[Publication]:
        """The data set, then what a tester published, in the order published."""
        added = sorted(simulator.records.items(), key=lambda kept: int(kept[0]))
        return [*publications(), *(publication for _, publication in added)]

    def shown(position: int, publication: Publication) -> dict[str, Any]:
        """A publication as the portal serves it: now and then out of shape, if dialled
        (decided by the seed and its place, so the same ones every time)."""
        item = publication.model_dump(mode="json")
        chance = random.Random(f"{simulator.config.seed}:{position}").random()
        if chance < simulator.config.malformed_rate:
            item["issued_on"] = "1800-01-01"
        return item

    @protocol.get("/v1/publications", response_model=RawFeedPage)
    async def page(
        cursor: Annotated[str | None, Query(max_length=256)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
    ) -> RawFeedPage:
        await simulator.misbehave()
        start = 0 if cursor is None else CURSOR.decode(cursor)
        feed = served()
        released = simulator.config.released
        end = len(feed) if released is None else min(released, len(feed))
        items = [shown(at, feed[at]) for at in range(start, min(start + limit, end))]
        after = start + len(items)
        return RawFeedPage(items=items, next_cursor=CURSOR.encode(after), has_more=after < end)

    @protocol.post("/v1/_simulator/publications", response_model=Published, status_code=201)
    async def publish(publication: Publication) -> Published:
        """A portal publishes one more (the tester's hand: an amendment or repeal of a
        document an item was drafted from, say); it comes after everything served."""
        async with simulator.lock:
            position = len(publications()) + len(simulator.records)
            await simulator.keep(str(position), publication)
        return Published(position=position)

    @protocol.delete("/v1/_simulator/publications", status_code=204)
    async def unpublish() -> None:
        """Forget what testers published (the data set stays): a test's clean start."""
        async with simulator.lock:
            await simulator.forget_all()

    return simulator.app("zhida policy feed simulator", protocol)
