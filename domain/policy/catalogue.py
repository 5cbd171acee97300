"""The public policy catalogue and the policy calculator (no sign-in).

The catalogue lists the items in force (a published version, status published) with
what their versions state publicly; searching it by region or industry asks the item's
own rule whether a firm of that region or industry could qualify, with every other fact
unknown (a rule that fails on the region alone is left out). The calculator evaluates a
published version against figures a visitor types in, with the engine every case uses
(`domain.engine.rules.evaluate`, `domain.engine.amounts.compute_amount`), and stores
nothing.

Nothing here reads a quota, a draft, a case, a match or a firm.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from domain.engine.amounts import (
    AmountRule,
    FixedAmount,
    RateAmount,
    TieredAmount,
    compute_amount,
    format_quantity,
    parse_amount_rule,
)
from domain.engine.rules import (
    AllOf,
    AnyOf,
    Condition,
    KnownFact,
    ManualCondition,
    NotRule,
    RuleNode,
    describe,
    evaluate,
    parse_rule,
)
from domain.errors import FieldError, InvalidInput, NotFound
from models.catalogue import (
    HOW_TO_GET,
    PERIOD_NAMES,
    CatalogueFacets,
    ConditionLine,
    FactInput,
    LineKind,
    PolicyCheck,
    PublicContact,
    PublicDocument,
    PublicOption,
    PublicPolicy,
    PublicPolicySummary,
    PublicStage,
)
from models.eligibility import Outcome, UnknownReason, Verdict
from models.facts import FACT_KINDS, FactKind, coerce_fact_value
from models.money import format_yuan
from models.period import PeriodScheme
from models.policy import (
    Category,
    Level,
    PolicyDocument,
    PolicyItem,
    PolicyItemVersion,
    Stage,
    VersionStatus,
)
from models.reference import Department, DepartmentKind, Region

PAGE_PATH = "/public/policies"

CATEGORY_NAMES = {
    Category.RECOGNITION: "免申即享",
    Category.COMMITMENT: "承诺制",
    Category.APPLICATION: "申报制",
}
LEVEL_NAMES = {
    Level.NATIONAL: "国家",
    Level.PROVINCE: "省级",
    Level.CITY: "市级",
    Level.DISTRICT: "区县",
}
STAGE_NAMES = {
    Stage.IDENTIFY: "数据识别",
    Stage.JOINT_REVIEW: "联合审核",
    Stage.DEPARTMENT_REVIEW: "部门审核",
    Stage.FINANCE_REVIEW: "财政审核",
    Stage.PREPAYMENT: "预拨资金",
    Stage.COMPLETION_REVIEW: "验收审核",
    Stage.SETTLEMENT: "清算",
    Stage.PAYMENT: "拨付",
}


@dataclass(frozen=True)
class Search:
    q: str | None = None
    category: Category | None = None
    level: Level | None = None
    department_code: str | None = None
    region_code: str | None = None  # items a firm registered in this region could get
    industry_code: str | None = None  # items a firm of this industry could get


@dataclass(frozen=True)
class _Row:
    item: PolicyItem
    version: PolicyItemVersion
    document: PolicyDocument
    department_name: str
    region_name: str


@dataclass(frozen=True)
class _Rules:
    rule: RuleNode
    amount: AmountRule


# Versions are frozen from submission on, so a version's parsed rules never change.
@lru_cache(maxsize=4096)
def _parsed(code: str, version: int, eligibility: str, amount: str) -> _Rules:
    return _Rules(parse_rule(json.loads(eligibility)), parse_amount_rule(json.loads(amount)))


def _rules(version: PolicyItemVersion) -> _Rules | None:
    """The version's rules, or None when they do not parse (such an item is not shown:
    the library reports it as unevaluable elsewhere)."""
    try:
        return _parsed(
            version.item_code,
            version.version,
            json.dumps(version.eligibility, sort_keys=True),
            json.dumps(version.amount_rule, sort_keys=True),
        )
    except ValueError:
        return None


async def _in_force(session: AsyncSession, code: str | None = None) -> list[_Row]:
    query = (
        sa.select(
            PolicyItem, PolicyItemVersion, PolicyDocument, col(Department.name), col(Region.name)
        )
        .join(
            PolicyItemVersion,
            sa.and_(
                col(PolicyItemVersion.item_code) == col(PolicyItem.code),
                col(PolicyItemVersion.version) == col(PolicyItem.published_version),
            ),
        )
        .join(PolicyDocument, col(PolicyDocument.id) == col(PolicyItem.document_id))
        .join(Department, col(Department.code) == col(PolicyItem.department_code))
        .join(Region, col(Region.code) == col(PolicyItem.region_code))
        .where(col(PolicyItemVersion.status) == VersionStatus.PUBLISHED)
        .order_by(col(PolicyItem.code))
    )
    if code is not None:
        query = query.where(col(PolicyItem.code) == code)
    rows = await session.execute(query)
    return [_Row(*row) for row in rows]


def _summary(row: _Row) -> PublicPolicySummary:
    version = row.version
    return PublicPolicySummary(
        code=row.item.code,
        title=version.title,
        summary=version.summary,
        category=version.category,
        how_to_get=HOW_TO_GET[version.category],
        level=row.document.level,
        document=PublicDocument.model_validate(row.document, from_attributes=True),
        department_code=row.item.department_code,
        department_name=row.department_name,
        region_code=row.item.region_code,
        region_name=row.region_name,
        period_scheme=version.period_scheme,
        period_name=PERIOD_NAMES[PeriodScheme(version.period_scheme)],
        valid_from=version.valid_from,
        valid_to=version.valid_to,
        url=f"{PAGE_PATH}/{row.item.code}",
    )


async def _region_names(session: AsyncSession) -> dict[str, str]:
    rows = await session.execute(sa.select(col(Region.code), col(Region.name)))
    return {code: name for code, name in rows}


async def _regions_above(session: AsyncSession, region_code: str) -> set[str]:
    """The region and every region above it: the item regions whose items reach its firms."""
    parents = dict(
        (await session.execute(sa.select(col(Region.code), col(Region.parent_code)))).all()
    )
    found: set[str] = set()
    code: str | None = region_code
    while code is not None and code not in found and code in parents:
        found.add(code)
        code = parents[code]
    return found


def _could_qualify(rules: _Rules, known: Mapping[str, KnownFact], today: date) -> bool:
    """False when the rule fails on these facts alone (every other fact unknown)."""
    return evaluate(rules.rule, known, today).verdict is not Verdict.NOT_ELIGIBLE


def _matches_text(row: _Row, q: str) -> bool:
    haystack = (
        row.item.code,
        row.version.title,
        row.version.summary,
        row.document.title,
        row.document.doc_number,
        row.document.issuer,
        row.department_name,
    )
    return any(q.casefold() in text.casefold() for text in haystack)


async def search(
    session: AsyncSession, criteria: Search, offset: int, limit: int, today: date
) -> tuple[int, list[PublicPolicySummary]]:
    rows = await _in_force(session)
    reaching: set[str] | None = None
    known: dict[str, KnownFact] = {}
    if criteria.region_code:
        reaching = await _regions_above(session, criteria.region_code)
        known["region_code"] = KnownFact(criteria.region_code)
    if criteria.industry_code:
        known["industry_code"] = KnownFact(criteria.industry_code)
    found: list[_Row] = []
    for row in rows:
        if criteria.category and row.version.category != criteria.category:
            continue
        if criteria.level and row.document.level != criteria.level:
            continue
        if criteria.department_code and row.item.department_code != criteria.department_code:
            continue
        if reaching is not None and row.item.region_code not in reaching:
            continue
        if criteria.q and not _matches_text(row, criteria.q):
            continue
        rules = _rules(row.version)
        if rules is None:
            continue
        if known and not _could_qualify(rules, known, today):
            continue
        found.append(row)
    return len(found), [_summary(row) for row in found[offset : offset + limit]]


async def _one(session: AsyncSession, code: str) -> tuple[_Row, _Rules]:
    rows = await _in_force(session, code)
    rules = _rules(rows[0].version) if rows else None
    if not rows or rules is None:
        raise NotFound(f"policy item {code} is not in the public catalogue")
    return rows[0], rules


async def policy(session: AsyncSession, code: str) -> PublicPolicy:
    row, rules = await _one(session, code)
    version = row.version
    stage_units = [str(s["department_code"]) for s in version.stages]
    units = {
        code: (name, contact)
        for code, name, contact in (
            await session.execute(
                sa.select(
                    col(Department.code), col(Department.name), col(Department.contact)
                ).where(col(Department.code).in_([*stage_units, row.item.department_code]))
            )
        ).all()
    }
    stages = [
        PublicStage(
            stage=Stage(s["stage"]),
            stage_name=STAGE_NAMES[Stage(s["stage"])],
            unit_code=str(s["department_code"]),
            unit_name=units.get(str(s["department_code"]), (str(s["department_code"]), None))[0],
            working_days=int(s["working_days"]),
        )
        for s in version.stages
    ]
    return PublicPolicy(
        **_summary(row).model_dump(),
        version=version.version,
        published_at=version.published_at,
        conditions=list(plain_rule(rules.rule, regions=await _region_names(session))),
        amount=plain_amount(rules.amount),
        stages=stages,
        contact=PublicContact(
            unit_name=row.department_name, contact=units[row.item.department_code][1]
        ),
        inputs=[fact_input(FACT_KINDS[name]) for name in facts_used(rules)],
    )


async def facets(session: AsyncSession) -> CatalogueFacets:
    regions = (
        await session.execute(
            sa.select(col(Region.code), col(Region.name)).order_by(col(Region.code))
        )
    ).all()
    departments = (
        await session.execute(
            sa.select(col(Department.code), col(Department.name))
            .where(col(Department.kind) == DepartmentKind.POLICY)
            .order_by(col(Department.code))
        )
    ).all()
    return CatalogueFacets(
        regions=[PublicOption(code=c, name=n) for c, n in regions],
        departments=[PublicOption(code=c, name=n) for c, n in departments],
        categories=[PublicOption(code=c.value, name=n) for c, n in CATEGORY_NAMES.items()],
        levels=[PublicOption(code=lv.value, name=n) for lv, n in LEVEL_NAMES.items()],
    )


# ----- plain Chinese ------------------------------------------------------------------


def _words(condition: Condition, regions: Mapping[str, str]) -> str:
    """A condition in words, regions by their names (the engine knows only codes)."""
    if condition.fact == "region_code" and condition.label is None:
        value = condition.value
        named = (
            [regions.get(v, v) for v in value]
            if isinstance(value, list)
            else regions.get(value, value)
        )
        condition = condition.model_copy(update={"value": named})
    return describe(condition)


def plain_rule(
    node: RuleNode, depth: int = 0, regions: Mapping[str, str] | None = None
) -> Iterator[ConditionLine]:
    """The rule as lines a person reads: a top-level `all` is the list itself."""
    names = regions or {}
    if isinstance(node, AllOf):
        if depth > 0:
            yield ConditionLine(depth=depth, kind=LineKind.GROUP, text="同时满足下列各项：")
            depth += 1
        for child in node.all:
            yield from plain_rule(child, depth, names)
        return
    if isinstance(node, AnyOf):
        yield ConditionLine(depth=depth, kind=LineKind.GROUP, text="满足下列任一项：")
        for child in node.any:
            yield from plain_rule(child, depth + 1, names)
        return
    if isinstance(node, NotRule):
        inner = node.not_
        if isinstance(inner, Condition):
            text = f"并非：{_words(inner, names)}"
            yield ConditionLine(depth=depth, kind=LineKind.CONDITION, text=text)
            return
        yield ConditionLine(depth=depth, kind=LineKind.GROUP, text="不得属于下列情形：")
        yield from plain_rule(inner, depth + 1, names)
        return
    if isinstance(node, ManualCondition):
        yield ConditionLine(
            depth=depth, kind=LineKind.MANUAL, text=f"{node.manual}（由主管部门审核）"
        )
        return
    yield ConditionLine(depth=depth, kind=LineKind.CONDITION, text=_words(node, names))


def _region_labels(node: RuleNode, regions: Mapping[str, str]) -> RuleNode:
    """The rule with each region condition labelled by the regions' names, so that every
    outcome the engine describes reads them (the rule's logic is unchanged)."""
    if isinstance(node, AllOf):
        return node.model_copy(update={"all": [_region_labels(c, regions) for c in node.all]})
    if isinstance(node, AnyOf):
        return node.model_copy(update={"any": [_region_labels(c, regions) for c in node.any]})
    if isinstance(node, NotRule):
        return node.model_copy(update={"not_": _region_labels(node.not_, regions)})
    if isinstance(node, Condition) and node.fact == "region_code" and node.label is None:
        return node.model_copy(update={"label": _words(node, regions)})
    return node


def _percent(rate: Decimal) -> str:
    return f"{(rate * 100).normalize():f}%"


def plain_amount(rule: AmountRule) -> str:
    if isinstance(rule, FixedAmount):
        return f"定额 {format_yuan(rule.amount_fen)}"
    kind = FACT_KINDS[rule.fact]
    if isinstance(rule, RateAmount):
        if kind.unit == "分":
            text = f"按{kind.label}的 {_percent(rule.rate)} 计算"
        else:
            per = kind.unit.removeprefix("分/") or "单位"
            text = f"按{kind.label}每{per} {format_yuan(int(rule.rate))} 计算"
            if rule.rate != int(rule.rate):
                text = f"按{kind.label}每{per} {rule.rate.normalize():f} 分计算"
        if rule.floor_fen is not None:
            text += f"，最低 {format_yuan(rule.floor_fen)}"
        if rule.cap_fen is not None:
            text += f"，最高 {format_yuan(rule.cap_fen)}"
        return text
    tiers = "；".join(
        f"达到 {format_quantity(rule.fact, t.at_least)} 的 {format_yuan(t.amount_fen)}"
        for t in rule.tiers
    )
    return f"按{kind.label}分档：{tiers}（取达到的最高一档）"


def facts_used(rules: _Rules) -> list[str]:
    """The facts the rule and the amount rule read, in the order FACT_KINDS lists them."""
    used: set[str] = set()

    def walk(node: RuleNode) -> None:
        if isinstance(node, AllOf):
            for child in node.all:
                walk(child)
        elif isinstance(node, AnyOf):
            for child in node.any:
                walk(child)
        elif isinstance(node, NotRule):
            walk(node.not_)
        elif isinstance(node, Condition):
            used.add(node.fact)

    walk(rules.rule)
    if not isinstance(rules.amount, FixedAmount):
        used.add(rules.amount.fact)
    return [name for name in FACT_KINDS if name in used]


def fact_input(kind: FactKind) -> FactInput:
    return FactInput(
        name=kind.name,
        label=kind.label,
        type=kind.type,
        unit=kind.unit,
        choices=list(kind.choices) if kind.choices else None,
    )


# ----- the calculator -------------------------------------------------------------------


def typed_facts(raw: Mapping[str, Any], as_of: date) -> dict[str, KnownFact]:
    """The figures a visitor typed in, each checked as the importer checks a stored one;
    all bad ones are named at once (422). A typed figure is as of `as_of`, never stale."""
    facts: dict[str, KnownFact] = {}
    errors: list[FieldError] = []
    for name, value in raw.items():
        if value is None:
            continue
        kind = FACT_KINDS[name]
        try:
            typed = coerce_fact_value(kind, value)
        except ValueError as exc:
            errors.append(FieldError(name, str(exc)))
            continue
        facts[name] = KnownFact(typed, None if kind.profile else as_of)
    if errors:
        raise InvalidInput("; ".join(f"{e.field}: {e.message}" for e in errors), errors)
    return facts


async def check(
    session: AsyncSession, code: str, raw: Mapping[str, Any], as_of: date
) -> PolicyCheck:
    row, rules = await _one(session, code)
    facts = typed_facts(raw, as_of)
    named = _region_labels(rules.rule, await _region_names(session))
    evaluation = evaluate(named, facts, as_of)
    amount = compute_amount(rules.amount, facts)
    version = row.version
    in_force = version.valid_from <= as_of <= version.valid_to
    verdict = evaluation.verdict if in_force else Verdict.NOT_ELIGIBLE
    # Below a tiered rule's lowest tier a firm gets nothing: it is not eligible for 0.
    below_tiers = isinstance(rules.amount, TieredAmount) and amount.amount_fen == 0
    if below_tiers:
        verdict = Verdict.NOT_ELIGIBLE
    ruled_out = verdict is Verdict.NOT_ELIGIBLE
    # What is worth typing in: the unknown conditions' figures while the verdict is open,
    # and the amount rule's figure while the amount is (a settled verdict needs none).
    missing: set[str] = set()
    if verdict is Verdict.POSSIBLY_ELIGIBLE:
        missing |= {
            c.fact
            for c in evaluation.conditions
            if c.outcome is Outcome.UNKNOWN and c.reason is UnknownReason.MISSING and c.fact
        }
    if not ruled_out and amount.amount_fen is None and not isinstance(rules.amount, FixedAmount):
        missing |= {rules.amount.fact} - facts.keys()
    if not in_force:
        explanation = (
            f"该政策在 {as_of} 不在有效期内（{version.valid_from} 至 {version.valid_to}），不能享受"
        )
    elif below_tiers:
        explanation = f"{amount.explanation}，不能享受"
    else:
        explanation = "不符合条件，不计算金额" if ruled_out else amount.explanation
    return PolicyCheck(
        code=code,
        version=version.version,
        as_of=as_of,
        in_force=in_force,
        verdict=verdict,
        conditions=evaluation.conditions,
        amount_fen=None if ruled_out else amount.amount_fen,
        amount_explanation=explanation,
        missing=[
            fact_input(FACT_KINDS[name]) for name in sorted(missing, key=list(FACT_KINDS).index)
        ],
    )
