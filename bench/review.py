"""The duplicate-funding check (多维度查重) of a recognition batch, at city scale.

Migrates a fresh database and fills it with three years of paid cases (a claim, what
it claims, the invoices and serials its project lists, and its ledger entries), then
builds a recognition batch of N firms in which duplicates of every dimension are
planted beside near misses that must not be found, and times `check_batch` over it:
first the whole-table read alone (`every_open_claim`), then the whole check.

    python bench/review.py --firms 100000 --history-cases 300000
    python bench/review.py --database postgresql://postgres@127.0.0.1:5432/zhida_review_bench

Places are real towns of Huzhou, 新市镇 and 练市镇 among them, written as firms write
them: with or without 浙江省湖州市, spaces, full-width digits.

Exits non-zero when a planted duplicate is missed or anything else is found. Last line:

    firms=N history=H ledger=L planted=P found=F false_positives=0 seconds=… load_s=…
    check_s=… peak_mb=…
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import itertools
import pstats
import random
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import make_engine, make_read_sessionmaker
from core.migrate import upgrade_async
from core.settings import Environment, Settings
from domain.review.batch import check_batch
from domain.review.claims import claim_row, every_open_claim
from domain.review.duplicates import ClaimRow
from domain.review.projects import location_key, token
from models.budget import LedgerEntry, LedgerKind
from models.cases import CaseClaim, ClaimState, application_case_id
from models.recognition import recognition_case_id
from models.review import (
    Dimension,
    FindingDraft,
    FundingClaim,
    FundingToken,
    ProjectClaim,
    ReviewChecks,
    TokenKind,
)
from models.uscc import make_uscc

ITEM = "BENCH-REC"
GROUP = "G-BENCH"
PERIOD = "2026"
AMOUNT = 1_000_000
CAP = 1_500_000
CHUNK = 5_000  # history cases per transaction, and rows per insert
RELATION = "legal_representative"
# The batch's item pays per project: a firm's different projects in the group do not
# exclude each other (the near misses plant such pairs); the same project, or a firm-level
# case, does.
CHECKS = ReviewChecks(
    dimensions=list(Dimension), firm_group_cap_fen=CAP, exclusivity_per_project=True
)

# ----- the city: firms, places, projects -------------------------------------------------

REGIONS = ("330502", "330503", "330521", "330522", "330523")
TOWNS = {
    "吴兴区": ("织里镇", "八里店镇", "埭溪镇", "妙西镇", "东林镇", "龙泉街道"),
    "南浔区": ("南浔镇", "双林镇", "菱湖镇", "练市镇", "善琏镇", "旧馆街道"),
    "德清县": ("武康街道", "新市镇", "乾元镇", "钟管镇", "禹越镇"),
    "长兴县": ("雉城街道", "和平镇", "泗安镇", "夹浦镇", "煤山镇"),
    "安吉县": ("递铺街道", "孝丰镇", "天子湖镇", "梅溪镇"),
}
ROADS = (
    "工业大道",
    "创业路",
    "科技路",
    "兴业路",
    "凤凰路",
    "康山路",
    "振兴路",
    "发展大道",
    "环城北路",
    "文昌路",
    "经济开发区纬三路",
)
PREFIXES = ("浙江省湖州市", "湖州市")
# A template and what it may name. {n} is a capacity, {phase} and {line} ordinals.
TEMPLATES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "年产{n}万吨{thing}生产线技术改造项目",
        ("铜材", "铝合金型材", "特种钢管", "新型建材", "绿色涂料", "不锈钢管", "再生纸"),
    ),
    ("年产{n}万台{thing}智能化改造项目", ("电机", "电梯", "空压机", "智能家电", "数控机床")),
    ("年产{n}万套{thing}扩建项目（{phase}期）", ("汽车零部件", "高端轴承", "智能家居", "竹木家具")),
    ("年产{n}万平方米{thing}智能工厂建设项目", ("实木地板", "竹地板", "光伏玻璃", "纺织面料")),
    ("年新增{n}万件{thing}技术改造项目", ("童装", "羊毛衫", "丝绸服饰", "户外用品")),
    ("第{line}条{thing}自动化生产线技改项目", ("光伏组件", "锂电池隔膜", "电子元器件")),
    ("{thing}数字化车间建设项目", ("童装", "铜材", "电机", "竹制品", "锂电池")),
    ("{thing}研发中心建设项目", ("新能源汽车零部件", "生物医药", "新材料", "智能装备")),
    ("{n}MW分布式光伏发电项目", ("",)),
)
CAPACITY_TEMPLATES = tuple(i for i, (t, _) in enumerate(TEMPLATES) if "{n}" in t)
PHASE_TEMPLATES = tuple(i for i, (t, _) in enumerate(TEMPLATES) if "{phase}" in t)
ORDINALS = "一二三四五"
WIDE = str.maketrans("0123456789", "０１２３４５６７８９")
HISTORY_NUMBERS = range(1, 500)  # house numbers of history projects...
BATCH_NUMBERS = range(500, 1000)  # ...never those of a batch firm's own (unplanted) project


@dataclass(frozen=True)
class Place:
    district: str
    town: str
    road: str
    number: int

    def text(self, prefix: str = "", *, spaced: bool = False, wide: bool = False) -> str:
        parts = (self.district, self.town, f"{self.road}{self.number}号")
        text = prefix + (" ".join(parts) if spaced else "".join(parts))
        return text.translate(WIDE) if wide else text


@dataclass(frozen=True)
class ProjectName:
    template: int
    thing: str
    n: int
    phase: int
    line: int

    def text(
        self,
        *,
        wide: bool = False,
        gongcheng: bool = False,
        spaced: bool = False,
        short: bool = False,
    ) -> str:
        template = TEMPLATES[self.template][0]
        text = template.format(
            n=self.n, thing=self.thing, phase=ORDINALS[self.phase], line=ORDINALS[self.line]
        )
        if short:
            text = text.replace("技术改造", "技改")
        if gongcheng:
            text = text[::-1].replace("目项", "程工", 1)[::-1]  # the last 项目 becomes 工程
        if spaced:
            middle = len(text) // 2
            text = f"{text[:middle]} {text[middle:]}"
        return text.translate(WIDE) if wide else text


@dataclass(frozen=True)
class Item:
    code: str
    group: str | None
    periods: tuple[str, ...]
    weights: tuple[float, ...]

    @property
    def category(self) -> str:
        return "recognition" if self.code == ITEM else "application"


def _items() -> list[Item]:
    """60 items: the batch's own (its earlier years), three more of its exclusivity
    group (never in 2026 but where planted), and 56 others, some grouped among
    themselves, annual, quarterly, monthly or one-off."""
    annual = ("2023", "2024", "2025", "2026")
    before = ("2023", "2024", "2025")
    items = [Item(ITEM, GROUP, ("2024", "2025"), (1, 1))]
    items += [Item(f"BENCH-{x}", GROUP, before, (1, 1, 1)) for x in "ABC"]
    departments = ("JXJ", "KJJ", "SWJ", "RSJ", "FGW", "NYJ", "SCJ")
    quarters = (*(f"{y}-Q{q}" for y in (2024, 2025) for q in (1, 2, 3, 4)), "2026-Q1")
    months = (*(f"2025-{m:02d}" for m in range(7, 13)), "2026-01", "2026-02")
    for n in range(56):
        code = f"{departments[n % len(departments)]}-{n + 1:03d}"
        group = f"G-{code[:3]}-{n // 3}" if n < 24 else None
        if n % 14 == 5:
            items.append(Item(code, group, quarters, (1,) * len(quarters)))
        elif n % 14 == 9:
            items.append(Item(code, None, months, (1,) * len(months)))
        elif n in (50, 53):
            items.append(Item(code, None, ("once",), (1,)))
        else:
            items.append(Item(code, group, annual, (3, 3.5, 3.5, 1)))
    return items


ITEMS = _items()
BENCH_GROUP_ITEMS = [i for i in ITEMS if i.group == GROUP and i.code != ITEM]
OTHER_ITEMS = [i for i in ITEMS if i.group != GROUP and i.periods != ("once",)]


# ----- history ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryProject:
    name: str
    location: str  # as the firm wrote it
    investment_fen: int
    eligible_cost_fen: int


@dataclass(frozen=True)
class HistoryCase:
    case_id: str
    uscc: str
    item: Item
    period: str
    paid_fen: int
    state: ClaimState
    project: HistoryProject | None
    invoices: tuple[str, ...]
    serials: tuple[str, ...]
    instalments: int  # paid in one or two instalments
    released_fen: int  # reserved beyond what was paid, released again


@dataclass
class Rows:
    """A chunk of history, as rows of each table."""

    cases: int = 0
    claims: list[dict[str, Any]] = field(default_factory=list)
    funding: list[dict[str, Any]] = field(default_factory=list)
    tokens: list[dict[str, Any]] = field(default_factory=list)
    ledger: list[dict[str, Any]] = field(default_factory=list)

    def add(self, case: HistoryCase) -> None:
        year = int(case.period[:4]) if case.period[:4].isdigit() else 2024
        at = datetime(year, 6, 30, 2, 0, tzinfo=UTC)
        closed = case.state == ClaimState.CLOSED
        self.cases += 1
        self.claims.append(
            {
                "case_id": case.case_id,
                "category": case.item.category,
                "item_code": case.item.code,
                "uscc": case.uscc,
                "period": case.period,
                "attempt": 1,
                "state": case.state.value,
                "created_at": at,
                "closed_at": at if closed else None,
            }
        )
        project = case.project
        self.funding.append(
            {
                "case_id": case.case_id,
                "category": case.item.category,
                "uscc": case.uscc,
                "item_code": case.item.code,
                "exclusivity_group": case.item.group,
                "period": case.period,
                "amount_fen": case.paid_fen,
                "project_name": project.name if project else None,
                "location_key": location_key(project.location) if project else None,
                "investment_fen": project.investment_fen if project else None,
                "eligible_cost_fen": project.eligible_cost_fen if project else None,
                "created_at": at,
            }
        )
        for kind, values in ((TokenKind.INVOICE, case.invoices), (TokenKind.SERIAL, case.serials)):
            self.tokens.extend(
                {"case_id": case.case_id, "kind": kind.value, "token": t}
                for t in sorted({token(v) for v in values})
            )
        if closed:
            self._entry(case, 1, LedgerKind.RESERVE, case.paid_fen, year, at)
            self._entry(case, 1, LedgerKind.RELEASE, case.paid_fen, year, at)
            return
        first = case.paid_fen if case.instalments == 1 else case.paid_fen // 2
        for instalment, amount in ((1, first), (2, case.paid_fen - first))[: case.instalments]:
            extra = case.released_fen if instalment == 1 else 0
            self._entry(case, instalment, LedgerKind.RESERVE, amount + extra, year, at)
            if extra:
                self._entry(case, instalment, LedgerKind.RELEASE, extra, year, at)
            self._entry(case, instalment, LedgerKind.INSTRUCT, amount, year, at)
            self._entry(case, instalment, LedgerKind.RECEIPT, amount, year, at)

    def _entry(
        self,
        case: HistoryCase,
        instalment: int,
        kind: LedgerKind,
        amount: int,
        year: int,
        at: datetime,
    ) -> None:
        receipt = kind == LedgerKind.RECEIPT
        self.ledger.append(
            {
                "case_id": case.case_id,
                "instalment": instalment,
                "kind": kind.value,
                "item_code": case.item.code,
                "year": year,
                "amount_fen": amount,
                "idempotency_key": f"{case.case_id}:{instalment}:{kind.value}",
                "voucher_no": f"ZF{year}{len(self.ledger):08d}" if receipt else None,
                "bank_serial": f"B{year}{case.case_id[-10:]}{instalment}" if receipt else None,
                # As the budget service writes it: JSON null but for the payee of an instruction.
                "details": {"payee_account": f"6222{case.uscc[8:16]}"}
                if kind == LedgerKind.INSTRUCT
                else None,
                "at": at,
            }
        )

    async def flush(self, engine: AsyncEngine) -> None:
        async with engine.begin() as conn:
            for model, rows in (
                (CaseClaim, self.claims),
                (FundingClaim, self.funding),
                (FundingToken, self.tokens),
                (LedgerEntry, self.ledger),
            ):
                for start in range(0, len(rows), CHUNK):
                    await conn.execute(sa.insert(model), rows[start : start + CHUNK])
        self.cases = 0
        self.claims, self.funding, self.tokens, self.ledger = [], [], [], []


# ----- the world: history and batch, with what was planted ---------------------------------


@dataclass(frozen=True)
class Plant:
    """A duplicate the check must find: this case, in this dimension."""

    case_id: str
    dimension: Dimension
    kind: str
    inputs: str


# Roles of the batch's firms: planted duplicates, near misses, and the rest.
EXCL = "exclusivity: same group, firm-level"
EXCL_PROJECT = "exclusivity: same group, same project"
PROJECT = "project: same firm, renamed"
SERIAL = "project: shared equipment serial"
INVOICE = "invoice: reused"
FIRM_GROUP = "firm group: related firm's case"
FIRM_PAIR = "firm group: two related firms of the batch"
NEAR_CAPACITY = "near miss: 年产N万 differs"
NEAR_PHASE = "near miss: 一期 vs 二期"
NEAR_ELSEWHERE = "near miss: same name, other firm and place"
NEAR_COST = "near miss: same project within its eligible cost"
NEAR_INVESTMENT = "near miss: same name and place, investment 30% apart"
NEAR_LAST_YEAR = "near miss: same group, last year"
NEAR_CLOSED = "near miss: same group, case closed unpaid"
NEAR_UNDER_CAP = "near miss: related firm, under the cap together"
NEAR_OTHER_PLACE = "near miss: related firm, project elsewhere"
INCIDENTAL = "unrelated history"
PLAIN = "plain"


class World:
    """A city's firms, the batch's claims and related firms, the history the check
    reads, and what was planted in it (the same seed makes the same world)."""

    def __init__(self, firms: int, history_cases: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.history_cases = history_cases
        self.pool = [
            make_uscc("91", REGIONS[n % len(REGIONS)], f"MA{n:07d}") for n in range(2 * firms)
        ]
        self.batch_firms = self.pool[:firms]
        self.others = self.pool[firms:]
        self.counterparts = 0  # `others` handed out to plants so far (never related at random)
        self.tokens = itertools.count(1)  # every invoice and serial is unique unless planted
        self.keys: set[tuple[str, str, str]] = set()
        self.planted_history: list[HistoryCase] = []
        self.plants: list[Plant] = []
        self.near_misses: dict[str, tuple[str, str]] = {}
        self.batch: list[ClaimRow] = []
        self.related: dict[str, dict[str, str]] = {}
        self.incidental: list[str] = []
        self._build(firms)

    # ----- building blocks -------------------------------------------------------------

    def counterpart(self) -> str:
        self.counterparts += 1
        return self.others[self.counterparts - 1]

    def place(self, numbers: range) -> Place:
        district = self.rng.choice(tuple(TOWNS))
        return Place(
            district,
            self.rng.choice(TOWNS[district]),
            self.rng.choice(ROADS),
            self.rng.choice(numbers),
        )

    def name(self, templates: Sequence[int] | None = None) -> ProjectName:
        template = self.rng.choice(templates or range(len(TEMPLATES)))
        return ProjectName(
            template,
            self.rng.choice(TEMPLATES[template][1]),
            self.rng.choice((1, 2, 3, 5, 6, 8, 10, 12, 15, 20, 30, 50, 100)),
            self.rng.randrange(3),
            self.rng.randrange(5),
        )

    def investment(self) -> int:
        return self.rng.randrange(20, 5_000) * 10_000_000  # 200万 to 5亿 yuan

    def renamed(self, name: ProjectName) -> str:
        """The same name written differently, never identically."""
        while True:
            flags = {f: self.rng.random() < 0.5 for f in ("wide", "gongcheng", "spaced", "short")}
            text = name.text(**flags)
            if text != name.text():
                return text

    def rewritten(self, place: Place, prefix: str) -> str:
        """The same place written differently: the province and city added or dropped
        (half the time), spaces, full-width digits."""
        while True:
            other = prefix
            if self.rng.random() < 0.5:
                other = "" if prefix else self.rng.choice(PREFIXES)
            text = place.text(other, spaced=self.rng.random() < 0.5, wide=self.rng.random() < 0.5)
            if text != place.text(prefix):
                return text

    def invoice(self, year: int) -> str:
        n = next(self.tokens)
        style = n % 3
        if style == 0:
            return f"{year % 100:02d}332000{n:012d}"  # 全电发票, 20 digits
        if style == 1:
            return f"3300{year % 100:02d}3130-{n:08d}"  # 发票代码-发票号码
        return f"ZJ{year}A{n:08d}"

    def serial(self, year: int) -> str:
        n = next(self.tokens)
        return f"{self.rng.choice(('HZM', 'SNK', 'ABB', 'FANUC', 'KUKA'))}-{year}-{n:07d}"

    @staticmethod
    def written(value: str) -> str:
        """An invoice or serial as another firm types it: lower case, in groups of four."""
        bare = value.replace("-", "").lower()
        return " ".join(bare[i : i + 4] for i in range(0, len(bare), 4))

    def history(
        self,
        uscc: str,
        item: Item,
        period: str,
        paid_fen: int,
        project: HistoryProject | None = None,
        *,
        invoices: tuple[str, ...] = (),
        serials: tuple[str, ...] = (),
        state: ClaimState = ClaimState.PAID,
    ) -> HistoryCase:
        key = (item.code, uscc, period)
        if key in self.keys:
            raise ValueError(f"two cases of {key}")
        self.keys.add(key)
        if item.code == ITEM:
            case_id = recognition_case_id(item.code, period, uscc)
        else:
            case_id = application_case_id(item.code, period, uscc)
        return HistoryCase(
            case_id=case_id,
            uscc=uscc,
            item=item,
            period=period,
            paid_fen=paid_fen,
            state=state,
            project=project,
            invoices=invoices,
            serials=serials,
            instalments=2 if self.rng.random() < 0.1 else 1,
            released_fen=self.rng.randrange(1, 50) * 10_000 if self.rng.random() < 0.4 else 0,
        )

    def planted(self, case: HistoryCase) -> HistoryCase:
        self.planted_history.append(case)
        return case

    def plant(self, case_id: str, dimension: Dimension, kind: str, inputs: str) -> None:
        self.plants.append(Plant(case_id, dimension, kind, inputs))

    def own_project(self, year: int = 2026) -> ProjectClaim:
        """A batch firm's own project, somewhere no history project is."""
        invoices = [self.invoice(year) for _ in range(self.rng.randint(1, 4))]
        serials = [self.serial(year) for _ in range(self.rng.randint(1, 2))]
        roll = self.rng.random()
        investment = self.investment()
        return ProjectClaim(
            name=self.name().text(),
            location=self.place(BATCH_NUMBERS).text(self.rng.choice(("", *PREFIXES))),
            investment_fen=investment,
            eligible_cost_fen=investment * 7 // 10,
            invoices=invoices if roll < 0.75 else [],
            equipment_serials=serials if roll >= 0.75 else [],
        )

    # ----- the batch -----------------------------------------------------------------------

    def _build(self, firms: int) -> None:
        k = max(10, firms // 100)
        near = max(5, k // 2)
        pairs = max(1, k // 10)
        counts = {
            EXCL: k // 2,
            EXCL_PROJECT: k - k // 2,
            PROJECT: k,
            SERIAL: k,
            INVOICE: k,
            FIRM_GROUP: k - 2 * pairs,
            FIRM_PAIR: 2 * pairs,
            **{
                role: near
                for role in (
                    NEAR_CAPACITY,
                    NEAR_PHASE,
                    NEAR_ELSEWHERE,
                    NEAR_COST,
                    NEAR_INVESTMENT,
                    NEAR_LAST_YEAR,
                    NEAR_CLOSED,
                    NEAR_UNDER_CAP,
                    NEAR_OTHER_PLACE,
                )
            },
            INCIDENTAL: firms * 15 // 100,
        }
        if sum(counts.values()) > firms:
            raise SystemExit(f"--firms {firms}: too few for the planted cases")
        roles = [role for role, n in counts.items() for _ in range(n)]
        roles += [PLAIN] * (firms - len(roles))
        self.rng.shuffle(roles)
        build: dict[str, Callable[[str, str], ProjectClaim | None]] = {
            EXCL: self._exclusivity,
            EXCL_PROJECT: self._exclusivity_project,
            PROJECT: self._project,
            SERIAL: self._serial,
            INVOICE: self._invoice,
            FIRM_GROUP: self._firm_group,
            FIRM_PAIR: self._firm_pair,
            NEAR_CAPACITY: self._near_capacity,
            NEAR_PHASE: self._near_phase,
            NEAR_ELSEWHERE: self._near_elsewhere,
            NEAR_COST: self._near_cost,
            NEAR_INVESTMENT: self._near_investment,
            NEAR_LAST_YEAR: self._near_last_year,
            NEAR_CLOSED: self._near_closed,
            NEAR_UNDER_CAP: self._near_under_cap,
            NEAR_OTHER_PLACE: self._near_other_place,
            INCIDENTAL: self._plain,
            PLAIN: self._plain,
        }
        paired: list[str] = []
        for uscc, role in zip(self.batch_firms, roles, strict=True):
            case_id = recognition_case_id(ITEM, PERIOD, uscc)
            if role == INCIDENTAL:
                self.incidental.append(uscc)
            if role == FIRM_PAIR:
                paired.append(uscc)
            project = build[role](case_id, uscc)
            self.batch.append(claim_row(case_id, uscc, ITEM, GROUP, PERIOD, AMOUNT, project))
        for first, second in zip(paired[::2], paired[1::2], strict=True):
            self.related[first] = {second: RELATION}
            self.related[second] = {first: RELATION}
            for one, other in ((first, second), (second, first)):
                self.plant(
                    recognition_case_id(ITEM, PERIOD, one),
                    Dimension.FIRM_GROUP,
                    FIRM_PAIR,
                    f"{one} related to {other}, both in the batch with no project: "
                    f"{AMOUNT} + {AMOUNT} > cap {CAP}",
                )
        # Some firms of the batch are related to firms whose cases fund nothing alike.
        spare = self.others[self.counterparts :]
        for uscc, role in zip(self.batch_firms, roles, strict=True):
            if role in (PLAIN, INCIDENTAL) and self.rng.random() < 0.1:
                relation = self.rng.choice((RELATION, "parent", "subsidiary"))
                self.related[uscc] = {self.rng.choice(spare): relation}

    def _plain(self, _case_id: str, _uscc: str) -> ProjectClaim | None:
        return self.own_project() if self.rng.random() < 0.4 else None

    def _exclusivity(self, case_id: str, uscc: str) -> ProjectClaim | None:
        item = self.rng.choice(BENCH_GROUP_ITEMS)
        paid = self.rng.randrange(30, 200) * 10_000
        self.planted(self.history(uscc, item, PERIOD, paid))
        self.plant(
            case_id,
            Dimension.EXCLUSIVITY,
            EXCL,
            f"{uscc} paid {paid} under {item.code} ({GROUP}) {PERIOD}; neither names a project",
        )
        return None

    def _exclusivity_project(self, case_id: str, uscc: str) -> ProjectClaim | None:
        item = self.rng.choice(BENCH_GROUP_ITEMS)
        paid = self.rng.randrange(30, 200) * 10_000
        name, place = self.name(), self.place(HISTORY_NUMBERS)
        location = place.text(self.rng.choice(("", *PREFIXES)))
        investment = self.investment()
        # Its eligible cost holds both, so the project dimension finds nothing.
        project = HistoryProject(name.text(), location, investment, investment)
        self.planted(self.history(uscc, item, PERIOD, paid, project))
        batch_name = self.renamed(name)
        self.plant(
            case_id,
            Dimension.EXCLUSIVITY,
            EXCL_PROJECT,
            f"{uscc} paid {paid} under {item.code} ({GROUP}) {PERIOD} for {project.name!r} "
            f"at {location!r}; the batch names {batch_name!r} at the same place",
        )
        return ProjectClaim(
            name=batch_name, location=location, investment_fen=investment, eligible_cost_fen=None
        )

    def _same_firm_project(
        self,
        uscc: str,
        *,
        eligible_cost: Callable[[int], int],
        item: Item | None = None,
        period: str | None = None,
        templates: Sequence[int] | None = None,
        batch_name: Callable[[ProjectName], str] | None = None,
        investment_factor: float | None = None,
    ) -> tuple[HistoryCase, ProjectClaim]:
        """A history case of the firm with a project, and the batch's claim of it."""
        item = item or self.rng.choice(OTHER_ITEMS)
        period = period or self.rng.choices(item.periods, item.weights)[0]
        paid = self.rng.randrange(40, 150) * 10_000
        name, place = self.name(templates), self.place(HISTORY_NUMBERS)
        prefix = self.rng.choice(("", "", *PREFIXES))
        investment = self.investment()
        project = HistoryProject(name.text(), place.text(prefix), investment, eligible_cost(paid))
        case = self.planted(self.history(uscc, item, period, paid, project))
        if investment_factor is None:
            investment_factor = 1 + self.rng.uniform(-0.08, 0.08)
        claim = ProjectClaim(
            name=batch_name(name) if batch_name else self.renamed(name),
            location=self.rewritten(place, prefix),
            investment_fen=round(investment * investment_factor / 10_000) * 10_000,
            eligible_cost_fen=None,
        )
        return case, claim

    @staticmethod
    def _describe(case: HistoryCase, claim: ProjectClaim) -> str:
        project = case.project
        assert project is not None
        return (
            f"history {case.case_id} paid {case.paid_fen}: {project.name!r} at "
            f"{project.location!r} (key {location_key(project.location)!r}), investment "
            f"{project.investment_fen}, eligible cost {project.eligible_cost_fen}; batch: "
            f"{claim.name!r} at {claim.location!r} (key {location_key(claim.location)!r}), "
            f"investment {claim.investment_fen}, eligible cost {claim.eligible_cost_fen}"
        )

    def _project(self, case_id: str, uscc: str) -> ProjectClaim | None:
        # The eligible cost is below what both pay together: an excess of 10万-90万 fen.
        case, claim = self._same_firm_project(
            uscc, eligible_cost=lambda paid: paid + AMOUNT - self.rng.randrange(10, 90) * 10_000
        )
        assert case.project is not None
        if self.rng.random() < 0.5:
            claim = claim.model_copy(
                update={"eligible_cost_fen": case.project.eligible_cost_fen * 9 // 10}
            )
        self.plant(case_id, Dimension.PROJECT, PROJECT, self._describe(case, claim))
        return claim

    def _serial(self, case_id: str, uscc: str) -> ProjectClaim | None:
        other = self.counterpart()
        item = self.rng.choice(OTHER_ITEMS)
        period = self.rng.choices(item.periods, item.weights)[0]
        year = int(period[:4])
        serial = self.serial(year)
        serials = (*(self.serial(year) for _ in range(self.rng.randint(0, 2))), serial)
        paid = self.rng.randrange(40, 150) * 10_000
        eligible = paid + AMOUNT - self.rng.randrange(10, 90) * 10_000
        name, place = self.name(), self.place(HISTORY_NUMBERS)
        project = HistoryProject(name.text(), place.text(), self.investment(), eligible)
        case = self.planted(self.history(other, item, period, paid, project, serials=serials))
        claim = self.own_project()
        claim = claim.model_copy(
            update={
                "equipment_serials": [*claim.equipment_serials, self.written(serial)],
                "eligible_cost_fen": None,
            }
        )
        self.plant(
            case_id,
            Dimension.PROJECT,
            SERIAL,
            f"serial {serial!r} of {case.case_id} (firm {other}, paid {paid}, eligible cost "
            f"{eligible}) listed by the batch as {self.written(serial)!r}",
        )
        return claim

    def _invoice(self, case_id: str, uscc: str) -> ProjectClaim | None:
        other = self.counterpart()
        item = self.rng.choice(OTHER_ITEMS)
        period = self.rng.choices(item.periods, item.weights)[0]
        year = int(period[:4])
        invoice = self.invoice(year)
        invoices = (invoice, *(self.invoice(year) for _ in range(self.rng.randint(0, 3))))
        paid = self.rng.randrange(20, 300) * 10_000
        name, place = self.name(), self.place(HISTORY_NUMBERS)
        investment = self.investment()
        project = HistoryProject(name.text(), place.text(), investment, investment * 7 // 10)
        case = self.planted(self.history(other, item, period, paid, project, invoices=invoices))
        claim = self.own_project()
        claim = claim.model_copy(update={"invoices": [*claim.invoices, self.written(invoice)]})
        self.plant(
            case_id,
            Dimension.INVOICE,
            INVOICE,
            f"invoice {invoice!r} of {case.case_id} (firm {other}) listed by the batch as "
            f"{self.written(invoice)!r}",
        )
        return claim

    def _related_case(
        self, uscc: str, paid: int, project: HistoryProject | None
    ) -> tuple[str, HistoryCase]:
        """A firm outside the batch, related to `uscc`, with a paid case of the batch's
        item or group in its period."""
        other = self.counterpart()
        item = self.rng.choice([ITEMS[0], *BENCH_GROUP_ITEMS])
        case = self.planted(self.history(other, item, PERIOD, paid, project))
        self.related[uscc] = {other: RELATION}
        return other, case

    def _firm_group(self, case_id: str, uscc: str) -> ProjectClaim | None:
        paid = self.rng.randrange(60, 200) * 10_000
        if self.rng.random() < 0.5:
            other, case = self._related_case(uscc, paid, None)
            self.plant(
                case_id,
                Dimension.FIRM_GROUP,
                FIRM_GROUP,
                f"related {other} paid {paid} under {case.item.code} {PERIOD} "
                f"({case.case_id}); the batch names no project: {paid} + {AMOUNT} > cap {CAP}",
            )
            return None
        name, place = self.name(), self.place(HISTORY_NUMBERS)
        prefix = self.rng.choice(("", "", *PREFIXES))
        investment = self.investment()
        project = HistoryProject(name.text(), place.text(prefix), investment, investment)
        other, case = self._related_case(uscc, paid, project)
        claim = ProjectClaim(
            name=self.renamed(name),
            location=self.rewritten(place, prefix),
            investment_fen=investment // 2,
            eligible_cost_fen=investment // 2,
        )
        self.plant(
            case_id,
            Dimension.FIRM_GROUP,
            FIRM_GROUP,
            f"related {other} paid {paid} under {case.item.code} {PERIOD} ({case.case_id}) "
            f"at {project.location!r} (key {location_key(project.location)!r}); the batch at "
            f"{claim.location!r} (key {location_key(claim.location)!r}): "
            f"{paid} + {AMOUNT} > cap {CAP}",
        )
        return claim

    def _firm_pair(self, _case_id: str, _uscc: str) -> ProjectClaim | None:
        return None  # planted once both firms of the pair are known

    def _near(self, case_id: str, role: str, detail: str) -> None:
        self.near_misses[case_id] = (role, detail)

    def _near_marks(self, case_id: str, uscc: str, role: str) -> ProjectClaim:
        """The same firm, place and template, but another capacity or phase; half the
        time under an item of the batch's own group in its period."""
        same_group = self.rng.random() < 0.5

        def other_name(name: ProjectName) -> str:
            if role == NEAR_CAPACITY:
                return replace(name, n=name.n * 2).text()
            return replace(name, phase=(name.phase + 1) % 3).text()

        case, claim = self._same_firm_project(
            uscc,
            eligible_cost=lambda paid: paid,
            item=self.rng.choice(BENCH_GROUP_ITEMS) if same_group else None,
            period=PERIOD if same_group else None,
            templates=CAPACITY_TEMPLATES if role == NEAR_CAPACITY else PHASE_TEMPLATES,
            batch_name=other_name,
        )
        self._near(case_id, role, self._describe(case, claim))
        return claim

    def _near_capacity(self, case_id: str, uscc: str) -> ProjectClaim | None:
        return self._near_marks(case_id, uscc, NEAR_CAPACITY)

    def _near_phase(self, case_id: str, uscc: str) -> ProjectClaim | None:
        return self._near_marks(case_id, uscc, NEAR_PHASE)

    def _near_elsewhere(self, case_id: str, uscc: str) -> ProjectClaim | None:
        other = self.counterpart()
        item = self.rng.choice(OTHER_ITEMS)
        period = self.rng.choices(item.periods, item.weights)[0]
        name = self.name().text()
        place = self.place(HISTORY_NUMBERS).text()
        investment = self.investment()
        project = HistoryProject(name, place, investment, investment // 10)
        case = self.planted(self.history(other, item, period, 800_000, project))
        claim = self.own_project().model_copy(
            update={"name": name, "investment_fen": investment, "eligible_cost_fen": None}
        )
        self._near(case_id, NEAR_ELSEWHERE, self._describe(case, claim))
        return claim

    def _near_cost(self, case_id: str, uscc: str) -> ProjectClaim | None:
        case, claim = self._same_firm_project(uscc, eligible_cost=lambda paid: paid + AMOUNT * 10)
        self._near(case_id, NEAR_COST, self._describe(case, claim))
        return claim

    def _near_investment(self, case_id: str, uscc: str) -> ProjectClaim | None:
        case, claim = self._same_firm_project(
            uscc, eligible_cost=lambda paid: paid, investment_factor=1.3
        )
        self._near(case_id, NEAR_INVESTMENT, self._describe(case, claim))
        return claim

    def _near_last_year(self, case_id: str, uscc: str) -> ProjectClaim | None:
        item = self.rng.choice([ITEMS[0], *BENCH_GROUP_ITEMS])
        case = self.planted(self.history(uscc, item, "2025", 900_000))
        self._near(case_id, NEAR_LAST_YEAR, f"{case.case_id} paid in 2025")
        return None

    def _near_closed(self, case_id: str, uscc: str) -> ProjectClaim | None:
        item = self.rng.choice(BENCH_GROUP_ITEMS)
        case = self.history(uscc, item, PERIOD, 900_000, state=ClaimState.CLOSED)
        self.planted(case)
        self._near(case_id, NEAR_CLOSED, f"{case.case_id} closed unpaid")
        return None

    def _near_under_cap(self, case_id: str, uscc: str) -> ProjectClaim | None:
        paid = self.rng.randrange(10, 50) * 10_000
        other, case = self._related_case(uscc, paid, None)
        self._near(case_id, NEAR_UNDER_CAP, f"related {other} paid {paid} ({case.case_id})")
        return None

    def _near_other_place(self, case_id: str, uscc: str) -> ProjectClaim | None:
        paid = self.rng.randrange(60, 200) * 10_000
        investment = self.investment()
        place = self.place(HISTORY_NUMBERS).text()
        project = HistoryProject(self.name().text(), place, investment, investment)
        other, case = self._related_case(uscc, paid, project)
        claim = self.own_project()
        self._near(
            case_id,
            NEAR_OTHER_PLACE,
            f"related {other} paid {paid} ({case.case_id}) at {place!r}; batch at "
            f"{claim.location!r}",
        )
        return claim

    # ----- the rest of history ------------------------------------------------------------

    def history_stream(self) -> Iterator[HistoryCase]:
        """The planted history, then paid cases of random firms up to the count: a tenth
        of them of the batch's firms with unrelated history, the rest of other firms.
        None is of the batch's group in 2026, or at a batch firm's own project's place."""
        yield from self.planted_history
        rng = self.rng
        made = len(self.planted_history)
        while made < self.history_cases:
            if self.incidental and rng.random() < 0.1:
                uscc = rng.choice(self.incidental)
            else:
                uscc = rng.choice(self.others)
            item = rng.choice(ITEMS)
            period = rng.choices(item.periods, item.weights)[0]
            if (item.code, uscc, period) in self.keys:
                continue
            year = int(period[:4]) if period[:4].isdigit() else 2024
            project: HistoryProject | None = None
            invoices: tuple[str, ...] = ()
            serials: tuple[str, ...] = ()
            if rng.random() < 0.4:
                investment = self.investment()
                project = HistoryProject(
                    self.name().text(),
                    self.place(HISTORY_NUMBERS).text(rng.choice(("", "", *PREFIXES))),
                    investment,
                    investment * rng.randrange(60, 90) // 100,
                )
                if rng.random() < 0.75:
                    invoices = tuple(self.invoice(year) for _ in range(rng.randint(1, 5)))
                else:
                    serials = tuple(self.serial(year) for _ in range(rng.randint(1, 3)))
            paid = rng.choice((5, 10, 20, 30, 50, 80, 100, 200, 500)) * 100_000
            yield self.history(
                uscc, item, period, paid, project, invoices=invoices, serials=serials
            )
            made += 1


# ----- the run -----------------------------------------------------------------------------


async def seed(engine: AsyncEngine, world: World) -> tuple[int, int]:
    """Write the history; the counts of cases and ledger entries."""
    rows = Rows()
    for case in world.history_stream():
        rows.add(case)
        if rows.cases >= CHUNK:
            await rows.flush(engine)
    await rows.flush(engine)
    async with engine.connect() as conn:
        cases = await conn.scalar(sa.select(sa.func.count()).select_from(CaseClaim))
        ledger = await conn.scalar(sa.select(sa.func.count()).select_from(LedgerEntry))
    return int(cases or 0), int(ledger or 0)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _summaries(drafts: Iterable[FindingDraft]) -> str:
    return "; ".join(f"[{d.dimension.value}] {d.summary}" for d in drafts) or "nothing"


def report(world: World, found: dict[str, list[FindingDraft]]) -> tuple[int, int]:
    """Print what was found of each planted kind and near miss, then the first misses
    and false positives; the number of planted duplicates found and of false positives."""
    planted = {(p.case_id, p.dimension): p for p in world.plants}
    hits: set[tuple[str, Dimension]] = set()
    false: list[tuple[str, FindingDraft]] = []
    for case_id, drafts in found.items():
        for draft in drafts:
            if (case_id, draft.dimension) in planted:
                hits.add((case_id, draft.dimension))
            else:
                false.append((case_id, draft))
    found_kinds = Counter(planted[hit].kind for hit in hits)
    for kind, n in sorted(Counter(p.kind for p in world.plants).items()):
        print(f"  {kind}: planted {n}, found {found_kinds[kind]}")
    found_near = Counter(world.near_misses[c][0] for c, _ in false if c in world.near_misses)
    for kind, n in sorted(Counter(role for role, _ in world.near_misses.values()).items()):
        print(f"  {kind}: {n} cases, {found_near[kind]} findings (want none)")
    misses = [p for key, p in planted.items() if key not in hits]
    if misses:
        print(f"MISSED {len(misses)}: {dict(Counter(p.kind for p in misses))}")
        for plant in misses[:8]:
            print(f"  {plant.dimension.value} of {plant.case_id} ({plant.kind})")
            print(f"    planted: {plant.inputs}")
            print(f"    found: {_summaries(found.get(plant.case_id, []))}")
    if false:
        print(f"FALSE POSITIVES {len(false)}")
        for case_id, draft in false[:8]:
            role, detail = world.near_misses.get(case_id, ("nothing planted", ""))
            print(f"  {draft.dimension.value} of {case_id}: {draft.summary}")
            print(f"    the case: {role} {detail}")
    return len(hits), len(false)


async def run(
    database_url: str, firms: int, history_cases: int, seed_value: int, profile: bool
) -> int:
    clock = time.perf_counter()
    world = World(firms, history_cases, seed_value)
    print(
        f"world: {len(world.batch)} batch firms, {len(world.plants)} planted, "
        f"{len(world.near_misses)} near misses, {len(world.related)} firms with related "
        f"firms ({time.perf_counter() - clock:.1f}s)"
    )
    await upgrade_async(database_url)
    engine = make_engine(database_url)
    try:
        clock = time.perf_counter()
        history, ledger = await seed(engine, world)
        print(
            f"history: {history} cases, {ledger} ledger entries written in "
            f"{time.perf_counter() - clock:.0f}s (peak {_peak_mb():.0f} MB so far)"
        )
        reader = make_read_sessionmaker(engine)
        async with reader() as session:
            clock = time.perf_counter()
            rows = await every_open_claim(session)
            load_s = time.perf_counter() - clock
        print(f"every_open_claim: {len(rows)} claims in {load_s:.1f}s")
        del rows
        profiler = cProfile.Profile() if profile else None
        async with reader() as session:
            clock = time.perf_counter()
            if profiler:
                profiler.enable()
            found = await check_batch(session, world.batch, CHECKS, world.related)
            if profiler:
                profiler.disable()
            seconds = time.perf_counter() - clock
    finally:
        await engine.dispose()
    check_s = max(0.0, seconds - load_s)  # the load alone again varies by a little
    print(
        f"check_batch: {sum(map(len, found.values()))} findings on {len(found)} cases in "
        f"{seconds:.1f}s (load {load_s:.1f}s, the rest {check_s:.1f}s)"
    )
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(15)
        print(out.getvalue())
    hits, false = report(world, found)
    print(
        f"firms={firms} history={history} ledger={ledger} planted={len(world.plants)} "
        f"found={hits} false_positives={false} seconds={seconds:.1f} load_s={load_s:.1f} "
        f"check_s={check_s:.1f} peak_mb={_peak_mb():.0f}"
    )
    return 0 if hits == len(world.plants) and false == 0 else 1


async def postgres_database(url: str, statement: str) -> None:
    """CREATE or DROP the URL's database, from the server's own, as the tests do."""
    name = sa.make_url(url).database
    admin = make_engine(sa.make_url(url).set(database="postgres").render_as_string(False))
    try:
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(sa.text(statement.format(name=name)))
    finally:
        await admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--firms", type=int, default=100_000)
    parser.add_argument("--history-cases", type=int, default=300_000)
    parser.add_argument(
        "--database",
        default="sqlite",
        help="sqlite (a new file in a temporary directory) or the URL of a PostgreSQL "
        "database to create (it must not exist; dropped afterwards unless --keep)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL database")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--profile", action="store_true", help="cProfile check_batch, top 15")
    args = parser.parse_args()
    if args.database == "sqlite":
        directory = Path(tempfile.mkdtemp(prefix="zhida-review-"))
        url = f"sqlite+aiosqlite:///{directory / 'bench.db'}"
    else:
        # As the platform reads it: postgresql://… means the asyncpg driver.
        url = Settings(environment=Environment.TEST, database_url=args.database).database_url
        asyncio.run(postgres_database(url, 'CREATE DATABASE "{name}"'))
    try:
        code = asyncio.run(run(url, args.firms, args.history_cases, args.seed, args.profile))
    finally:
        if args.database != "sqlite" and not args.keep:
            asyncio.run(postgres_database(url, 'DROP DATABASE "{name}" WITH (FORCE)'))
    sys.exit(code)


if __name__ == "__main__":
    main()
