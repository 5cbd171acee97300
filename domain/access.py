"""Who may read and do what (invariant 5). This module decides for the whole platform:
the rule each API route declares, the scope filters of the lists behind them, and the
checks the services and workflow validators share.

Units and regions. Staff belong to a unit (a policy or finance department) that sits in
a region of the `region` table; the unit covers its region and every region under it:
a city unit (330500) all of them, a district unit its district. The functional zones
(NTH, CHQ) are units of their own under the city, outside any district.

Reading.
- A firm's user reads only its own firm: registry entry, cases, policies, notices.
- Auditors and admins read everything. Auditors never write; admins import.
- Staff read, in the registry, the firms of their unit's region.
- Staff read an *item-firm pair* (a case, a match, an eligibility or gap report of one
  firm under one item) when their unit is one of the item's units (its department, or a
  unit named on a stage of any of its versions: the units that act on its cases), or,
  for finance, when the item's region or the firm's region lies within the unit's region.
  So a department reads the cases and matches of its own items, and the finance of a
  region reads that region's items and firms.
- Lists are filtered to this scope; a single read outside it is refused with 403. A
  region-bound unit asking for a credit code that no firm in its region carries gets
  the same 403 whether or not the firm exists elsewhere, so a refusal does not tell.

Writing. A department changes its own items; its head and the finance unit serving the
item's region review changes; a unit named on a case's item decides the case (the
workflow checks that it is the unit of the current stage); that region's finance sets
quotas; the firm corrects, confirms and withdraws its own case, and finance named on
the item cancels it.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Mapped
from sqlmodel import col, select

from core.db import READ_ONLY
from domain.errors import Forbidden, NotFound
from models.policy import PolicyItem, PolicyItemVersion
from models.reference import Actor, Department, DepartmentKind, Region, Role
from models.registry import Enterprise

DEPARTMENT_STAFF = frozenset({Role.DEPARTMENT_CASEWORKER, Role.DEPARTMENT_HEAD})
STAFF = DEPARTMENT_STAFF | {Role.FINANCE_CASEWORKER}
READERS = STAFF | {Role.FINANCE_HEAD, Role.AUDITOR, Role.ADMIN}
READ_ALL = frozenset({Role.AUDITOR, Role.ADMIN})

Column = sa.ColumnElement[str] | Mapped[str]
"""A table column given to a filter (as `col(Model.field)` gives it)."""

ACCESS_EXTENSION = "x-zhida-access"
"""The OpenAPI extension naming a route's rule."""


class Rule(enum.StrEnum):
    """The access rule a route declares (`x-zhida-access` in the OpenAPI)."""

    PUBLIC = "public"  # no sign-in: the health check
    SIGNED_IN = "signed_in"  # anyone signed in; what they get is their own or filtered
    ENTERPRISE = "enterprise"  # a firm's user, for its own firm
    STAFF = "staff"  # department and finance staff: their unit's inbox
    READER = "reader"  # staff, auditors and admins; lists filtered to their scope
    ADMIN = "admin"
    ITEM_CREATE = "item.create"  # department staff; the new item's department must be theirs
    ITEM_EDIT = "item.edit"  # staff of the item's department
    ITEM_REVIEW = "item.review"  # the item department's head, or the finance serving its region
    ITEM_QUOTA = "item.quota"  # the finance serving the item's region
    ITEM_OVERSIGHT = "item.oversight"  # the whole item: its units, its region's finance, readers
    ITEM_MATCHES = "item.matches"  # item.oversight, and other finance limited to their region
    FIRM_READ = "firm.read"  # the firm itself, staff of its region, auditors, admins
    ITEM_FIRM_READ = "item_firm.read"  # one firm under one item: its case, eligibility, gaps
    CASE_DECIDE = "case.decide"  # staff of one of the item's units (the workflow checks the stage)
    CASE_APPLICANT = "case.applicant"  # the applicant firm
    CASE_WITHDRAW = "case.withdraw"  # the applicant firm; or finance of one of the item's units
    CASE_WAIVE = "case.waive"  # the head of finance of one of the item's units (核销)
    # Operations staff: the codec server the Temporal UI calls. Outside production a
    # request from the loopback address with no token at all is let through too (the
    # embedded stack's UI sends none); any token must be an ops token.
    OPS = "ops"
    AUDIT = "audit"  # auditors (and admins): the audit trail, replays, exports


# ----- role checks (also used by services and workflow validators) ----------------------


def require_role(actor: Actor, *roles: Role) -> None:
    if actor.role not in roles:
        allowed = ", ".join(r.value for r in roles)
        raise Forbidden(f"role {actor.role.value} may not do this; needs one of: {allowed}")


def require_department_staff(actor: Actor, department_code: str) -> None:
    if actor.role not in DEPARTMENT_STAFF or actor.department_code != department_code:
        raise Forbidden(f"only staff of department {department_code} may change its items")


def require_staff_or_reader(actor: Actor) -> None:
    if actor.role not in READERS:
        raise Forbidden(f"role {actor.role.value} may not read this: staff, auditors, admins may")


def require_enterprise_access(actor: Actor, uscc: str) -> None:
    if actor.role is Role.ENTERPRISE and actor.enterprise_uscc != uscc:
        raise Forbidden("an enterprise sees only its own data")


# ----- scope ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """What one actor reads: its unit, whether that is finance, and the regions the unit
    covers (None: every region)."""

    actor: Actor
    unit: str | None = None
    finance: bool = False
    regions: frozenset[str] | None = frozenset()

    @property
    def reads_all(self) -> bool:
        return self.actor.role in READ_ALL

    def covers(self, region_code: str | None) -> bool:
        return self.regions is None or region_code in self.regions


class Reach(enum.Enum):
    """How much of one item's firms an actor reads."""

    ALL = "all"
    REGION = "region"  # the firms of the actor's regions only
    OWN = "own"  # a firm: itself
    NONE = "none"


_KEPT = "zhida.access"
_T = TypeVar("_T")


def _kept(session: AsyncSession) -> dict[object, object] | None:
    """What the rules below read, kept for the rest of a read-only session (one GET): its
    access check and its route ask for the same unit, regions and item, and the session
    keeps no loaded row it no longer references. None for a session that may write,
    whose reads must follow its own writes."""
    bind = session.bind
    if not isinstance(bind, AsyncEngine) or not bind.get_execution_options().get(READ_ONLY):
        return None
    kept: dict[object, object] = session.info.setdefault(_KEPT, {})
    return kept


async def _once(session: AsyncSession, key: object, read: Callable[[], Awaitable[_T]]) -> _T:
    """`read()`, once per read-only session for `key` (`_kept`)."""
    kept = _kept(session)
    if kept is None:
        return await read()
    if key not in kept:
        kept[key] = await read()
    return cast(_T, kept[key])


async def regions_within(session: AsyncSession, region_code: str) -> frozenset[str] | None:
    """The region and every region under it; None for a region with no parent (the city),
    which covers them all."""
    return await _once(
        session, ("regions", region_code), lambda: _regions_within(session, region_code)
    )


async def _regions_within(session: AsyncSession, region_code: str) -> frozenset[str] | None:
    rows = await session.execute(select(Region.code, Region.parent_code))
    parents: dict[str, str | None] = {code: parent for code, parent in rows}
    if parents.get(region_code, region_code) is None:
        return None
    children: dict[str, list[str]] = {}
    for code, parent in parents.items():
        if parent is not None:
            children.setdefault(parent, []).append(code)
    out, todo = {region_code}, [region_code]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return frozenset(out)


async def scope_of(session: AsyncSession, actor: Actor) -> Scope:
    return await _once(session, ("scope", actor), lambda: _scope_of(session, actor))


async def _scope_of(session: AsyncSession, actor: Actor) -> Scope:
    if actor.role in READ_ALL:
        return Scope(actor, regions=None)
    if actor.role is Role.ENTERPRISE or actor.department_code is None:
        return Scope(actor)
    department = await session.get(Department, actor.department_code)
    if department is None:
        return Scope(actor)  # staff of no known unit read nothing
    return Scope(
        actor,
        unit=department.code,
        finance=department.kind == DepartmentKind.FINANCE,
        regions=await regions_within(session, department.region_code),
    )


def _stage_units(stages: object) -> set[str]:
    if not isinstance(stages, list):
        return set()
    return {
        str(s["department_code"]) for s in stages if isinstance(s, dict) and "department_code" in s
    }


async def item_units(session: AsyncSession, item: PolicyItem) -> frozenset[str]:
    """The item's department and every unit named on a stage of any of its versions."""
    return await _once(session, ("units", item.code), lambda: _item_units(session, item))


async def _item_units(session: AsyncSession, item: PolicyItem) -> frozenset[str]:
    rows = await session.scalars(
        select(PolicyItemVersion.stages).where(PolicyItemVersion.item_code == item.code)
    )
    units = {item.department_code}
    for stages in rows:
        units |= _stage_units(stages)
    return frozenset(units)


async def item_reach(session: AsyncSession, scope: Scope, item: PolicyItem) -> Reach:
    if scope.reads_all:
        return Reach.ALL
    if scope.actor.role is Role.ENTERPRISE:
        return Reach.OWN
    if scope.unit is None:
        return Reach.NONE
    if scope.unit in await item_units(session, item):
        return Reach.ALL
    if scope.finance:
        return Reach.ALL if scope.covers(item.region_code) else Reach.REGION
    return Reach.NONE


async def _item(session: AsyncSession, item_code: str) -> PolicyItem:
    return await _once(session, ("item", item_code), lambda: _read_item(session, item_code))


async def _read_item(session: AsyncSession, item_code: str) -> PolicyItem:
    item = await session.get(PolicyItem, item_code)
    if item is None:
        raise NotFound(f"policy item {item_code} not found")
    return item


async def _firm_region(session: AsyncSession, uscc: str) -> str | None:
    region: str | None = await session.scalar(
        select(Enterprise.region_code).where(Enterprise.uscc == uscc)
    )
    return region


def _outside(scope: Scope, uscc: str) -> Forbidden:
    return Forbidden(f"firm {uscc} is not registered in the region of {scope.unit or 'your unit'}")


# ----- single reads -------------------------------------------------------------------------


async def require_firm_reader(session: AsyncSession, actor: Actor, uscc: str) -> None:
    """The firm itself, staff whose unit covers the firm's region, auditors and admins."""
    require_enterprise_access(actor, uscc)
    if actor.role is Role.ENTERPRISE:
        return
    scope = await scope_of(session, actor)
    if scope.regions is None:
        return  # an unknown firm is then a plain 404
    if not scope.covers(await _firm_region(session, uscc)):
        raise _outside(scope, uscc)


async def require_item_firm_reader(
    session: AsyncSession, actor: Actor, item_code: str, uscc: str
) -> None:
    """One firm under one item (a case, a match, an eligibility or gap report)."""
    require_enterprise_access(actor, uscc)
    if actor.role is Role.ENTERPRISE:
        return
    require_staff_or_reader(actor)
    scope = await scope_of(session, actor)
    reach = await item_reach(session, scope, await _item(session, item_code))
    if reach is Reach.ALL:
        return
    if reach is Reach.REGION and scope.covers(await _firm_region(session, uscc)):
        return
    if reach is Reach.REGION:
        raise _outside(scope, uscc)
    raise Forbidden(
        f"department {scope.unit} acts on no stage of item {item_code}: "
        "a department reads the cases and matches of its own items"
    )


async def require_item_reader(
    session: AsyncSession, actor: Actor, item_code: str, *, whole: bool = False
) -> tuple[PolicyItem, Reach]:
    """An item's matches and pushes: its units, the finance of its region, auditors and
    admins read all of them; other finance units the firms of their region (unless
    `whole` is needed). Returns the item and the reach the caller filters by."""
    require_staff_or_reader(actor)
    item = await _item(session, item_code)
    scope = await scope_of(session, actor)
    reach = await item_reach(session, scope, item)
    if reach is Reach.ALL or (reach is Reach.REGION and not whole):
        return item, reach
    raise Forbidden(
        f"item {item_code} belongs to department {item.department_code}; "
        f"{scope.unit or actor.role.value} acts on none of its stages"
    )


async def finance_unit_of(session: AsyncSession, region_code: str) -> str | None:
    """The finance department serving a region: its own, else the nearest one above."""
    region: str | None = region_code
    while region is not None:
        unit = await session.scalar(
            select(Department.code).where(
                Department.region_code == region, Department.kind == DepartmentKind.FINANCE
            )
        )
        if unit is not None:
            return unit
        region = await session.scalar(select(Region.parent_code).where(Region.code == region))
    return None


# ----- list filters -------------------------------------------------------------------------


def _in(column: Column, values: Iterable[str]) -> sa.ColumnElement[bool]:
    return column.in_(sorted(values))


async def firm_filter(session: AsyncSession, actor: Actor) -> sa.ColumnElement[bool]:
    """The registry rows (`Enterprise`) the actor may list."""
    if actor.role is Role.ENTERPRISE:
        return col(Enterprise.uscc) == actor.enterprise_uscc
    scope = await scope_of(session, actor)
    if scope.regions is None:
        return sa.true()
    return _in(col(Enterprise.region_code), scope.regions)


def _firms_in(uscc: Column, regions: frozenset[str]) -> sa.ColumnElement[bool]:
    return uscc.in_(select(Enterprise.uscc).where(col(Enterprise.region_code).in_(sorted(regions))))


async def item_firm_filter(
    session: AsyncSession,
    actor: Actor,
    reach: Reach,
    *,
    uscc: Column,
    region_code: Column | None = None,
) -> sa.ColumnElement[bool]:
    """The rows of one item's firms (matches, pushes) the actor reads, given its reach
    over the item; `region_code` is the row's firm region where the row carries it."""
    if reach is Reach.ALL:
        return sa.true()
    if reach is Reach.OWN:
        return uscc == actor.enterprise_uscc
    scope = await scope_of(session, actor)
    if reach is Reach.NONE or scope.regions is None:
        return sa.false() if reach is Reach.NONE else sa.true()
    if region_code is not None:
        return _in(region_code, scope.regions)
    return _firms_in(uscc, scope.regions)


async def items_reached(session: AsyncSession, scope: Scope) -> set[str]:
    """The codes of the items whose every firm the (staff) scope reads."""
    assert scope.unit is not None
    units_of: dict[str, set[str]] = {}
    for code, stages in await session.execute(
        select(PolicyItemVersion.item_code, PolicyItemVersion.stages)
    ):
        units_of.setdefault(code, set()).update(_stage_units(stages))
    reached = set()
    items = await session.execute(
        select(PolicyItem.code, PolicyItem.department_code, PolicyItem.region_code)
    )
    for code, department, region in items:
        acts = department == scope.unit or scope.unit in units_of.get(code, ())
        if acts or (scope.finance and scope.covers(region)):
            reached.add(code)
    return reached


async def item_firm_pairs_filter(
    session: AsyncSession,
    actor: Actor,
    *,
    item_code: Column,
    uscc: Column,
    region_code: Column | None = None,
) -> sa.ColumnElement[bool]:
    """The item-firm rows across items (cases, matches) the actor may list: give the
    row's item, firm and (where it has it) firm-region columns."""
    if actor.role in READ_ALL:
        return sa.true()
    if actor.role is Role.ENTERPRISE:
        return uscc == actor.enterprise_uscc
    scope = await scope_of(session, actor)
    if scope.unit is None:
        return sa.false()
    if scope.finance and scope.regions is None:
        return sa.true()
    reached = _in(item_code, await items_reached(session, scope))
    if not scope.finance:
        return reached
    assert scope.regions is not None
    in_region = (
        _in(region_code, scope.regions)
        if region_code is not None
        else _firms_in(uscc, scope.regions)
    )
    return sa.or_(reached, in_region)


# ----- the route rules ----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What a request is about, from its path: an item, a firm, or both."""

    item_code: str | None = None
    uscc: str | None = None

    @property
    def item(self) -> str:
        assert self.item_code is not None, "this rule needs an item in the path"
        return self.item_code

    @property
    def firm(self) -> str:
        assert self.uscc is not None, "this rule needs a credit code in the path"
        return self.uscc


Check = Callable[[AsyncSession, Actor, Target], Awaitable[None]]


def _roles(*roles: Role) -> Check:
    async def check(_session: AsyncSession, actor: Actor, _target: Target) -> None:
        require_role(actor, *roles)

    return check


async def _anyone(_session: AsyncSession, _actor: Actor, _target: Target) -> None:
    return None


async def _reader(_session: AsyncSession, actor: Actor, _target: Target) -> None:
    require_staff_or_reader(actor)


async def _item_edit(session: AsyncSession, actor: Actor, target: Target) -> None:
    require_role(actor, *sorted(DEPARTMENT_STAFF))
    require_department_staff(actor, (await _item(session, target.item)).department_code)


async def _require_finance_of(session: AsyncSession, actor: Actor, item: PolicyItem) -> None:
    finance = await finance_unit_of(session, item.region_code)
    if actor.role is not Role.FINANCE_CASEWORKER or actor.department_code != finance:
        raise Forbidden(f"only finance department {finance} does this for item {item.code}")


async def _item_review(session: AsyncSession, actor: Actor, target: Target) -> None:
    require_role(actor, Role.DEPARTMENT_HEAD, Role.FINANCE_CASEWORKER)
    item = await _item(session, target.item)
    if actor.role is Role.FINANCE_CASEWORKER:
        await _require_finance_of(session, actor, item)
    elif actor.department_code != item.department_code:
        raise Forbidden(f"changes to {item.code} are reviewed by the head of its department")


async def _item_quota(session: AsyncSession, actor: Actor, target: Target) -> None:
    require_role(actor, Role.FINANCE_CASEWORKER)
    await _require_finance_of(session, actor, await _item(session, target.item))


async def _item_matches(session: AsyncSession, actor: Actor, target: Target) -> None:
    await require_item_reader(session, actor, target.item)


async def _item_oversight(session: AsyncSession, actor: Actor, target: Target) -> None:
    await require_item_reader(session, actor, target.item, whole=True)


async def _firm_read(session: AsyncSession, actor: Actor, target: Target) -> None:
    await require_firm_reader(session, actor, target.firm)


async def _item_firm_read(session: AsyncSession, actor: Actor, target: Target) -> None:
    await require_item_firm_reader(session, actor, target.item, target.firm)


async def _require_unit_of(session: AsyncSession, actor: Actor, item_code: str) -> None:
    if actor.department_code not in await item_units(session, await _item(session, item_code)):
        raise Forbidden(f"department {actor.department_code} acts on no stage of item {item_code}")


async def _case_decide(session: AsyncSession, actor: Actor, target: Target) -> None:
    require_role(actor, *sorted(STAFF))
    await _require_unit_of(session, actor, target.item)


async def _case_applicant(_session: AsyncSession, actor: Actor, target: Target) -> None:
    require_role(actor, Role.ENTERPRISE)
    require_enterprise_access(actor, target.firm)


async def _case_withdraw(session: AsyncSession, actor: Actor, target: Target) -> None:
    require_role(actor, Role.ENTERPRISE, Role.FINANCE_CASEWORKER)
    if actor.role is Role.ENTERPRISE:
        require_enterprise_access(actor, target.firm)
    else:
        await _require_unit_of(session, actor, target.item)


async def _case_waive(session: AsyncSession, actor: Actor, target: Target) -> None:
    require_role(actor, Role.FINANCE_HEAD)
    await _require_unit_of(session, actor, target.item)


CHECKS: dict[Rule, Check] = {
    Rule.PUBLIC: _anyone,
    Rule.SIGNED_IN: _anyone,
    Rule.ENTERPRISE: _roles(Role.ENTERPRISE),
    Rule.STAFF: _roles(*sorted(STAFF)),
    Rule.READER: _reader,
    Rule.ADMIN: _roles(Role.ADMIN),
    Rule.ITEM_CREATE: _roles(*sorted(DEPARTMENT_STAFF)),
    Rule.ITEM_EDIT: _item_edit,
    Rule.ITEM_REVIEW: _item_review,
    Rule.ITEM_QUOTA: _item_quota,
    Rule.ITEM_OVERSIGHT: _item_oversight,
    Rule.ITEM_MATCHES: _item_matches,
    Rule.FIRM_READ: _firm_read,
    Rule.ITEM_FIRM_READ: _item_firm_read,
    Rule.CASE_DECIDE: _case_decide,
    Rule.CASE_APPLICANT: _case_applicant,
    Rule.CASE_WITHDRAW: _case_withdraw,
    Rule.CASE_WAIVE: _case_waive,
    Rule.OPS: _roles(Role.OPS),
    Rule.AUDIT: _roles(*sorted(READ_ALL)),
}
"""Every rule's check. The rule itself only needs the path's target: whatever depends
on the body (a new item's department) is checked by the service once the body is read."""


async def authorize(session: AsyncSession, actor: Actor, rule: Rule, target: Target) -> None:
    """Check a route's rule for its target before the request body is read: Forbidden
    (403) with the reason, or NotFound for an item that does not exist."""
    await CHECKS[rule](session, actor, target)
