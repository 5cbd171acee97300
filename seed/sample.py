"""Deterministic Huzhou sample data: enterprises with plausible facts, and the policy library.

Same seed and day, same data. Fact periods are relative to the day of generation
(last year's annual figures, last month's headcount) so the sample stays current.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import yaml
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import select

from domain.engine.amounts import amount_rule_to_json, parse_amount_rule
from domain.engine.rules import parse_rule, rule_to_json
from models.budget import BudgetQuota, QuotaChange
from models.commitment_terms import CommitmentTerms
from models.facts import FACT_KINDS, coerce_fact_value, period_end
from models.policy import (
    FINANCE_STAGES,
    STAGES_BY_CATEGORY,
    Category,
    PolicyChangeEvent,
    PolicyDocument,
    PolicyItem,
    PolicyItemVersion,
    VersionStatus,
)
from models.recognition import RecognitionTerms
from models.reference import Department, DepartmentKind
from models.registry import BankAccount, Enterprise, Fact
from models.uscc import ALPHABET, make_uscc
from seed.reference import CITY, ZONE_HOST, demo_users, ensure_reference_data, ensure_users

if TYPE_CHECKING:
    from core.progress import ProgressCallback

SEED = 20230420
CHUNK = 1000  # firms per insert; also how often a long load reports progress
SAMPLE_SOURCE = "湖州市公共数据平台"

# Region weights roughly follow the number of firms per district/county.
REGION_WEIGHTS = (
    ("330502", 22),
    ("330503", 15),
    ("330521", 18),
    ("330522", 20),
    ("330523", 15),
    ("NTH", 6),
    ("CHQ", 4),
)
# GB/T 4754 classes typical of Huzhou, with a short name used in firm names.
INDUSTRIES = (
    ("C1711", "纺织", 8),
    ("C1810", "服饰", 6),
    ("C2110", "家居", 8),
    ("C2631", "化工", 3),
    ("C2710", "医药", 3),
    ("C3011", "建材", 5),
    ("C3311", "金属制品", 6),
    ("C3411", "机械", 7),
    ("C3511", "装备", 4),
    ("C3670", "汽车部件", 5),
    ("C3811", "电机", 6),
    ("C3841", "新能源", 5),
    ("C3971", "电子", 4),
    ("F5123", "贸易", 8),
    ("F5261", "电子商务", 4),
    ("I6513", "软件", 5),
    ("M7320", "科技服务", 3),
    ("E4710", "建设", 3),
    ("L7212", "商务服务", 2),
    ("A0141", "农业", 2),
)
BRANDS = "华瑞恒达鑫源丰泰宏远德隆新盛永嘉天成博兴金诚安康卓越明阳振宇润发中研"
BANKS = (
    "湖州银行",
    "中国工商银行湖州分行",
    "中国农业银行湖州分行",
    "浙江农商联合银行",
    "中国银行湖州分行",
)
SIZE_WEIGHTS = (("large", 3), ("medium", 12), ("small", 45), ("micro", 40))


@dataclass(frozen=True)
class SampleSummary:
    enterprises: int
    facts: int
    accounts: int
    items: int
    skipped: bool


def _pick(rng: random.Random, table: tuple[tuple[Any, ...], ...]) -> tuple[Any, ...]:
    return rng.choices(table, weights=[row[-1] for row in table])[0]


def _periods(as_of: date) -> tuple[str, str]:
    """Last full year and last full month before `as_of`."""
    last_month = as_of.replace(day=1) - timedelta(days=1)
    return str(as_of.year - 1), f"{last_month.year}-{last_month.month:02d}"


def generate(
    count: int, as_of: date, seed: int = SEED
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]]:
    """Yield (enterprise, facts, account) rows for `count` firms."""
    rng = random.Random(seed)
    year, month = _periods(as_of)
    fetched = datetime.combine(as_of, datetime.min.time(), tzinfo=UTC) - timedelta(days=1)
    seen: set[str] = set()
    produced = 0
    while produced < count:
        region = _pick(rng, REGION_WEIGHTS)[0]
        county = ZONE_HOST.get(region, region)
        organisation = "".join(rng.choice(ALPHABET) for _ in range(9))
        uscc = make_uscc("91", county, organisation)
        if uscc in seen:
            continue
        seen.add(uscc)
        produced += 1
        industry, trade, _w = _pick(rng, INDUSTRIES)
        size = _pick(rng, SIZE_WEIGHTS)[0]
        place = {
            "330502": "吴兴",
            "330503": "南浔",
            "330521": "德清",
            "330522": "长兴",
            "330523": "安吉",
            "NTH": "南太湖",
            "CHQ": "长兴",
        }[region]
        name = f"湖州{place}{rng.choice(BRANDS)}{rng.choice(BRANDS)}{trade}有限公司"
        enterprise = {
            "uscc": uscc,
            "name": name,
            "region_code": region,
            "industry_code": industry,
            "size_class": size,
            "established_on": date(
                rng.randint(1995, as_of.year - 1), rng.randint(1, 12), rng.randint(1, 28)
            ),
        }
        facts = list(_facts(rng, uscc, industry, size, year, month, fetched))
        number = "".join(str(rng.randint(0, 9)) for _ in range(19))
        account = {
            "uscc": uscc,
            "bank_name": rng.choice(BANKS),
            "account_name": name,
            "account_number": number,
            "is_default": True,
            "verified_at": _verified_at(number, as_of),
        }
        yield enterprise, facts, account


def _verified_at(account_number: str, as_of: date) -> datetime | None:
    """About half the firms were paid into their account last year, which verified it
    (so the demo's straight-through items pay them without asking). Read off the
    account number, not drawn: the rest of the sample stays as it was."""
    if int(account_number[-1]) % 2:
        return None
    return datetime(as_of.year - 1, 12, 15, 2, 0, tzinfo=UTC)


def _facts(
    rng: random.Random,
    uscc: str,
    industry: str,
    size: str,
    year: str,
    month: str,
    fetched: datetime,
) -> Iterator[dict[str, Any]]:
    scale = {"large": 80.0, "medium": 12.0, "small": 2.0, "micro": 0.4}[size]
    headcount = max(1, int(rng.lognormvariate(3.0, 0.8) * scale**0.6))
    revenue = int(rng.lognormvariate(0, 0.7) * scale * 1e9)  # fen; a small firm ~2,000万元
    values: dict[str, tuple[Any, str]] = {
        "credit_rating": (rng.choices("ABCD", weights=(45, 40, 12, 3))[0], year),
        "env_credit_colour": (
            rng.choices(("green", "blue", "yellow", "red", "black"), weights=(30, 50, 14, 5, 1))[0],
            year,
        ),
        "social_security_headcount": (headcount, month),
        "revenue_fen": (revenue, year),
        "tax_paid_fen": (int(revenue * rng.uniform(0.02, 0.08)), year),
        "talent_count": (rng.choices((0, 1, 2, 3, 5, 8), weights=(70, 12, 7, 5, 4, 2))[0], year),
        "high_tech": (rng.random() < 0.15 + (0.2 if size in ("large", "medium") else 0), year),
        "specialised_level": (
            rng.choices(("none", "city", "province", "national"), weights=(85, 7, 6, 2))[0],
            year,
        ),
        "blacklisted": (rng.random() < 0.01, month),
    }
    if rng.random() < 0.6:
        values["rd_expense_fen"] = (int(revenue * rng.uniform(0.005, 0.06)), year)
    if rng.random() < 0.35:
        values["export_value_fen"] = (int(revenue * rng.uniform(0.05, 0.6)), year)
    if industry.startswith("C"):
        grade = rng.choices("ABCD", weights=(15, 35, 35, 15))[0]
        base = {"A": 6_000_000, "B": 3_000_000, "C": 1_500_000, "D": 500_000}[grade]  # fen per mu
        values["mu_grade"] = (grade, year)
        values["tax_per_mu_fen"] = (int(base * rng.uniform(0.6, 1.6)), year)
        values["green_factory_level"] = (
            rng.choices(("none", "city", "province", "national"), weights=(80, 10, 7, 3))[0],
            year,
        )
        if rng.random() < 0.3:
            values["renovation_investment_fen"] = (
                int(rng.lognormvariate(0, 1.0) * scale * 5e7),
                year,
            )
        if rng.random() < 0.15:
            values["energy_saved_tce"] = (int(rng.lognormvariate(5.5, 1.2)), year)
    for kind, (value, period) in values.items():
        if rng.random() < 0.04:
            continue  # the platform has no figure for this firm: evaluations say unknown
        if rng.random() < 0.03:
            period = str(int(period[:4]) - 3)  # an old figure only: evaluations say stale
        yield {
            "uscc": uscc,
            "kind": kind,
            "period": period,
            "period_end": period_end(period),
            "value": coerce_fact_value(FACT_KINDS[kind], value),  # as the importer checks
            "source": SAMPLE_SOURCE,
            "fetched_at": fetched,
        }


async def load_sample(
    session: AsyncSession,
    enterprises: int,
    as_of: date,
    progress: ProgressCallback | None = None,
) -> SampleSummary:
    """Load reference data, demo users, the policy library and `enterprises` firms.

    Idempotent: firms are loaded only into an empty registry; items only if missing.
    `progress` hears ("firms", loaded, enterprises) after every insert.
    """
    await ensure_reference_data(session)
    already = await session.scalar(select(sa.func.count()).select_from(Enterprise))
    counts = {"enterprises": 0, "facts": 0, "accounts": 0}
    first_uscc: str | None = None
    if not already:
        batch: dict[str, list[dict[str, Any]]] = {"enterprises": [], "facts": [], "accounts": []}
        for enterprise, facts, account in generate(enterprises, as_of):
            first_uscc = first_uscc or enterprise["uscc"]
            batch["enterprises"].append(enterprise)
            batch["facts"].extend(facts)
            batch["accounts"].append(account)
            if len(batch["enterprises"]) >= CHUNK:
                await _flush(session, batch, counts)
                if progress:
                    progress("firms", counts["enterprises"], enterprises)
        await _flush(session, batch, counts)
        if progress:
            progress("firms", counts["enterprises"], enterprises)
    else:
        first_uscc = await session.scalar(
            select(Enterprise.uscc).order_by(Enterprise.uscc).limit(1)
        )
    await ensure_users(session, demo_users(first_uscc))
    items = await load_policies(session)
    return SampleSummary(
        enterprises=counts["enterprises"],
        facts=counts["facts"],
        accounts=counts["accounts"],
        items=items,
        skipped=bool(already),
    )


async def _flush(
    session: AsyncSession, batch: dict[str, list[dict[str, Any]]], counts: dict[str, int]
) -> None:
    for key, table in (("enterprises", Enterprise), ("facts", Fact), ("accounts", BankAccount)):
        if batch[key]:
            await session.execute(sa.insert(table), batch[key])
            counts[key] += len(batch[key])
            batch[key].clear()


def sample_policies() -> dict[str, Any]:
    text = resources.files("seed.data").joinpath("sample_policies.yaml").read_text("utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


async def load_policies(session: AsyncSession, specs: list[dict[str, Any]] | None = None) -> int:
    """Publish the sample items (or `specs`, e.g. `synthetic_items`) that are not in the
    library yet; returns how many."""
    data = sample_policies()
    documents: dict[str, int] = {}
    for doc in data["documents"]:
        row = await session.scalar(
            select(PolicyDocument).where(PolicyDocument.doc_number == doc["doc_number"])
        )
        if row is None:
            row = PolicyDocument(**doc)
            session.add(row)
            await session.flush()
        assert row.id is not None
        documents[doc["doc_number"]] = row.id
    finance = {
        d.region_code: d.code
        for d in await session.scalars(
            select(Department).where(Department.kind == DepartmentKind.FINANCE)
        )
    }
    added = 0
    now = datetime.now(UTC)
    for spec in data["items"] if specs is None else specs:
        if await session.get(PolicyItem, spec["code"]) is not None:
            continue
        category = Category(spec["category"])
        finance_unit = finance.get(spec["region"], finance[CITY])
        stages = [
            {
                "stage": stage.value,
                "department_code": finance_unit if stage in FINANCE_STAGES else spec["department"],
                "working_days": 5 if stage in FINANCE_STAGES else 10,
            }
            for stage in STAGES_BY_CATEGORY[category]
        ]
        session.add(
            PolicyItem(
                code=spec["code"],
                document_id=documents[spec["document"]],
                department_code=spec["department"],
                region_code=spec["region"],
                published_version=1,
            )
        )
        await session.flush()
        session.add(
            PolicyItemVersion(
                item_code=spec["code"],
                version=1,
                status=VersionStatus.PUBLISHED,
                title=spec["title"],
                summary=spec.get("summary", ""),
                category=category,
                eligibility=rule_to_json(parse_rule(spec["eligibility"], "eligibility")),
                amount_rule=amount_rule_to_json(parse_amount_rule(spec["amount"])),
                annual_quota_fen=spec["quota_fen"],
                exclusivity_group=spec.get("group"),
                recognition_terms=_recognition_terms(category, spec),
                commitment_terms=_commitment_terms(category, spec),
                stages=stages,
                valid_from=date(now.year, 1, 1),
                valid_to=date(now.year + 1, 12, 31),
                author="admin",
                change_reason="示例政策库初始化",
                submitted_at=now,
                published_at=now,
            )
        )
        session.add(
            PolicyChangeEvent(
                item_code=spec["code"],
                version=1,
                action="published",
                actor="admin",
                actor_role="admin",
                reason="示例政策库初始化",
            )
        )
        # The demo's finance has set this year's quota (next year's is not set yet).
        session.add(BudgetQuota(item_code=spec["code"], year=now.year, quota_fen=spec["quota_fen"]))
        session.add(
            QuotaChange(
                item_code=spec["code"],
                year=now.year,
                after_fen=spec["quota_fen"],
                actor=f"{finance_unit}（示例数据）",
            )
        )
        added += 1
    await session.flush()
    return added


def _recognition_terms(category: Category, spec: dict[str, Any]) -> Any:
    """The item's `recognition:` terms as the library stores them (the defaults when
    omitted); NULL for an item of another category, which may not set them."""
    if category is not Category.RECOGNITION:
        if "recognition" in spec:
            raise ValueError(f"{spec['code']}: recognition terms apply only to recognition items")
        return None
    return RecognitionTerms.model_validate(spec.get("recognition") or {}).model_dump(mode="json")


def _commitment_terms(category: Category, spec: dict[str, Any]) -> Any:
    """A commitment item's `commitment:` terms (required there), as stored; NULL else."""
    if category is not Category.COMMITMENT:
        if "commitment" in spec:
            raise ValueError(f"{spec['code']}: commitment terms apply only to commitment items")
        return None
    return CommitmentTerms.model_validate(spec["commitment"]).model_dump(mode="json")


# ----- synthetic data for the matching benchmark and tests ------------------------------


def generated_facts(
    count: int, as_of: date, seed: int = SEED
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(credit code, facts) of `count` generated firms, in the evaluator's form: what
    `domain.registry.enterprises.known_facts` would read back after `load_sample`."""
    from domain.engine.rules import KnownFact
    from models.facts import FACT_KINDS, coerce_fact_value

    for enterprise, facts, _account in generate(count, as_of, seed):
        known = {
            name: KnownFact(enterprise[name])
            for name in ("region_code", "industry_code", "size_class", "established_on")
        }
        for fact in facts:
            kind = FACT_KINDS[fact["kind"]]
            known[kind.name] = KnownFact(coerce_fact_value(kind, fact["value"]), fact["period_end"])
        yield enterprise["uscc"], known


REGION_CODES = tuple(code for code, _weight in REGION_WEIGHTS)


def synthetic_items(count: int, seed: int = SEED) -> list[dict[str, Any]]:
    """`count` item specs varied from the sample library: the same kinds of
    conditions, with thresholds scaled at random, and some items narrowed to a few
    regions or industry sections, as district and sector variants of a city policy are.
    Each is a whole spec (`load_policies` can publish it), under a code of its own."""
    rng = random.Random(seed)
    base = sample_policies()["items"]
    out = []
    for n in range(count):
        spec = base[n % len(base)]
        rule = _vary(spec["eligibility"], rng)
        extra = []
        if rng.random() < 0.4:
            extra.append(
                {
                    "fact": "region_code",
                    "op": "in",
                    "value": rng.sample(REGION_CODES, rng.randint(1, 3)),
                }
            )
        if rng.random() < 0.2:
            sections = sorted({code[0] for code, _t, _w in INDUSTRIES})
            extra.append(
                {"fact": "industry_code", "op": "prefix", "value": rng.sample(sections, 2)}
            )
        if extra:
            rule = {"all": [rule, *extra]}
        out.append(
            spec
            | {
                "code": f"{spec['code']}-S{n:04d}",
                "title": f"{spec['title']}（变体 {n:04d}）",
                "eligibility": rule,
                "amount": _vary(spec["amount"], rng),
            }
        )
    return out


def _vary(node: Any, rng: random.Random) -> Any:
    """Scale every integer threshold or amount in a rule by one random factor (one, so
    that tiers and ranges keep their order)."""
    factor = rng.uniform(0.5, 2.0)

    def scaled(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: scaled(v) for key, v in value.items()}
        if isinstance(value, list):
            return [scaled(v) for v in value]
        if isinstance(value, int) and not isinstance(value, bool) and value > 10:
            return int(value * factor)
        return value

    return scaled(node)
