"""What a dashboard reads: the reader's scope and the filters, as clauses on the case
projection and the other tables, and the catalogue of items they name."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from domain import access
from domain.access import Column, require_staff_or_reader
from domain.errors import InvalidInput
from models.cases import CaseFirm, CaseRecord
from models.dashboard import DashboardFilters
from models.matching import MatchTally
from models.policy import PolicyItem, PolicyItemVersion
from models.reference import Actor, Department, Region
from models.registry import Enterprise


@dataclass(frozen=True)
class Item:
    code: str
    title: str
    category: str
    department_code: str
    region_code: str


@dataclass(frozen=True)
class Catalogue:
    """Items (title and category of the published version, else the latest), regions
    and departments, by code: a few thousand rows read once per request."""

    items: dict[str, Item]
    regions: dict[str, Region]
    departments: dict[str, Department]

    def title(self, code: str) -> str:
        item = self.items.get(code)
        return item.title if item else code

    def region_name(self, code: str) -> str:
        region = self.regions.get(code)
        return region.name if region else code

    def department_name(self, code: str | None) -> str:
        department = self.departments.get(code or "")
        return department.name if department else (code or "")


async def catalogue(session: AsyncSession) -> Catalogue:
    items = {}
    versions = await session.execute(
        sa.select(
            col(PolicyItem.code),
            col(PolicyItem.department_code),
            col(PolicyItem.region_code),
            col(PolicyItem.published_version),
            col(PolicyItem.latest_version),
            col(PolicyItemVersion.version),
            col(PolicyItemVersion.title),
            col(PolicyItemVersion.category),
        ).join(PolicyItemVersion, col(PolicyItemVersion.item_code) == col(PolicyItem.code))
    )
    for code, department, region, published, latest, version, title, category in versions:
        if version == (published or latest):
            items[code] = Item(code, title, str(category), department, region)
    regions = {r.code: r for r in await session.scalars(select(Region))}
    departments = {d.code: d for d in await session.scalars(select(Department))}
    return Catalogue(items, regions, departments)


@dataclass(frozen=True)
class View:
    """One reader's dashboards, narrowed by the filters."""

    actor: Actor
    filters: DashboardFilters
    catalogue: Catalogue
    regions: frozenset[str] | None  # the filter's region and those under it; None: all
    item_codes: frozenset[str] | None  # items of the filter's department or category

    def where(
        self, *, item_code: Column, uscc: Column, region_code: Column | None
    ) -> list[sa.ColumnElement[bool]]:
        """The filters as clauses on a table of item-firm rows (the scope comes apart)."""
        clauses: list[sa.ColumnElement[bool]] = []
        if self.regions is not None:
            if region_code is not None:
                clauses.append(region_code.in_(sorted(self.regions)))
            else:
                firms = select(Enterprise.uscc).where(
                    col(Enterprise.region_code).in_(sorted(self.regions))
                )
                clauses.append(uscc.in_(firms))
        if self.item_codes is not None:
            clauses.append(item_code.in_(sorted(self.item_codes)))
        return clauses

    def item_shown(self, code: str) -> bool:
        return self.item_codes is None or code in self.item_codes


async def view_of(session: AsyncSession, actor: Actor, filters: DashboardFilters) -> View:
    require_staff_or_reader(actor)
    known = await catalogue(session)
    regions = None
    if filters.region_code is not None:
        if filters.region_code not in known.regions:
            raise InvalidInput.field("region_code", f"no region {filters.region_code}")
        regions = await access.regions_within(session, filters.region_code)
    codes: set[str] | None = None
    if filters.department_code is not None:
        if filters.department_code not in known.departments:
            raise InvalidInput.field("department_code", f"no department {filters.department_code}")
        codes = {c for c, i in known.items.items() if i.department_code == filters.department_code}
    if filters.category is not None:
        of_category = {c for c, i in known.items.items() if i.category == filters.category}
        codes = of_category if codes is None else codes & of_category
    return View(actor, filters, known, regions, None if codes is None else frozenset(codes))


async def readable(
    session: AsyncSession,
    view: View,
    *,
    item_code: Column,
    uscc: Column,
    region_code: Column | None = None,
) -> list[sa.ColumnElement[bool]]:
    """The reader's scope (as the API's lists have it) and the filters, as clauses."""
    scope = await access.item_firm_pairs_filter(
        session, view.actor, item_code=item_code, uscc=uscc, region_code=region_code
    )
    return [scope, *view.where(item_code=item_code, uscc=uscc, region_code=region_code)]


async def tally_readable(session: AsyncSession, view: View) -> list[sa.ColumnElement[bool]]:
    """The match library's counts (per item and region) the reader sees, filtered."""
    return await readable(
        session,
        view,
        item_code=col(MatchTally.item_code),
        # Counts have no firm; a region is all the scope needs (firms read no dashboard).
        uscc=sa.cast(sa.null(), sa.String),
        region_code=col(MatchTally.region_code),
    )


async def cases_where(session: AsyncSession, view: View) -> list[sa.ColumnElement[bool]]:
    """The case projection's rows the dashboards count for this reader and filters."""
    return await _of_year(session, view, CaseRecord)


async def firms_where(session: AsyncSession, view: View) -> list[sa.ColumnElement[bool]]:
    """The firms' sums (`CaseFirm`) the dashboards count for this reader and filters."""
    return await _of_year(session, view, CaseFirm)


async def _of_year(
    session: AsyncSession, view: View, table: type[CaseRecord] | type[CaseFirm]
) -> list[sa.ColumnElement[bool]]:
    """Rows of a table of a firm's cases of an item (and year) the reader counts."""
    clauses = await readable(
        session,
        view,
        item_code=col(table.item_code),
        uscc=col(table.uscc),
        region_code=col(table.region_code),
    )
    if view.filters.year is not None:
        clauses.append(col(table.year) == view.filters.year)
    return clauses


async def items_visible(session: AsyncSession, view: View) -> set[str]:
    """The items whose quota and item-wide figures the reader sees: all for readers of
    everything and the city's finance; a unit the items it owns, acts on or (finance)
    serves the region of."""
    scope = await access.scope_of(session, view.actor)
    if scope.reads_all or (scope.finance and scope.regions is None):
        codes = set(view.catalogue.items)
    elif scope.unit is None:
        codes = set()
    else:
        codes = await access.items_reached(session, scope)
    return {c for c in codes if view.item_shown(c)}
