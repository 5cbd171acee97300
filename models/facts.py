"""The catalogue of enterprise facts that eligibility and amount rules may name.

Profile facts come from the enterprise record itself and are always known. Data
facts come from the public data platform with a period; a fact older than its
kind's maximum age counts as unknown, not as passing.

Every numeric kind has a plausible range and every date lies between 1900 and 2099:
`coerce_fact_value` refuses anything else, so the importer, the API, the command line
and rule conditions all refuse the same values, and a value planted in the database
past them is treated as invalid (unknown) by the engine rather than trusted.
"""

from __future__ import annotations

import contextlib
import enum
import re
from dataclasses import dataclass
from datetime import date

from models.money import MAX_FEN

ZHEJIANG_CREDIT_RATINGS = ("A", "B", "C", "D")
MU_GRADES = ("A", "B", "C", "D")
ENV_CREDIT_COLOURS = ("green", "blue", "yellow", "red", "black")
SIZE_CLASSES = ("large", "medium", "small", "micro")
SPECIALISED_LEVELS = ("none", "city", "province", "national")
GREEN_FACTORY_LEVELS = ("none", "city", "province", "national")
# How people read a graded fact's codes (a condition shown in words).
_LEVEL_NAMES = {"none": "无", "city": "市级", "province": "省级", "national": "国家级"}
CHOICE_LABELS: dict[str, dict[str, str]] = {
    "size_class": {"large": "大型", "medium": "中型", "small": "小型", "micro": "微型"},
    "env_credit_colour": {
        "green": "绿色",
        "blue": "蓝色",
        "yellow": "黄色",
        "red": "红色",
        "black": "黑色",
    },
    "specialised_level": _LEVEL_NAMES,
    "green_factory_level": _LEVEL_NAMES,
    "mu_grade": {grade: f"{grade}类" for grade in MU_GRADES},
    "credit_rating": {grade: f"{grade}级" for grade in ZHEJIANG_CREDIT_RATINGS},
}


class FactType(enum.StrEnum):
    INT = "int"
    STR = "str"
    BOOL = "bool"
    DATE = "date"


@dataclass(frozen=True)
class FactKind:
    name: str
    type: FactType
    label: str
    unit: str = ""
    max_age_days: int | None = None
    choices: tuple[str, ...] | None = None
    profile: bool = False
    # The plausible range of an int kind, both ends included.
    minimum: int | None = None
    maximum: int | None = None
    # What a firm with no record of this kind has: set only where the platform itself is
    # the one source of the fact, so that no record is knowledge, not missing data.
    absent: bool | None = None


EARLIEST_DATE = date(1900, 1, 1)
LATEST_DATE = date(2099, 12, 31)
MAX_TAX_PER_MU_FEN = 10**12  # 100亿元 per mu: far above any real figure
MAX_HEADCOUNT = 10**7
MAX_ENERGY_SAVED_TCE = 10**9
MAX_TALENT_COUNT = 10**6


_ANNUAL = 550  # an annual figure is current until the next year's is due

FACT_KINDS: dict[str, FactKind] = {
    k.name: k
    for k in (
        FactKind("region_code", FactType.STR, "所在区县", profile=True),
        FactKind("industry_code", FactType.STR, "国民经济行业分类", profile=True),
        FactKind("size_class", FactType.STR, "企业规模", choices=SIZE_CLASSES, profile=True),
        FactKind("established_on", FactType.DATE, "成立日期", profile=True),
        FactKind(
            "mu_grade", FactType.STR, "亩均效益评价等级", max_age_days=_ANNUAL, choices=MU_GRADES
        ),
        FactKind(
            "tax_per_mu_fen",
            FactType.INT,
            "亩均税收",
            "分/亩",
            max_age_days=_ANNUAL,
            minimum=0,
            maximum=MAX_TAX_PER_MU_FEN,
        ),
        FactKind(
            "credit_rating",
            FactType.STR,
            "公共信用评价等级",
            max_age_days=400,
            choices=ZHEJIANG_CREDIT_RATINGS,
        ),
        FactKind(
            "env_credit_colour",
            FactType.STR,
            "环保信用等级",
            max_age_days=400,
            choices=ENV_CREDIT_COLOURS,
        ),
        FactKind(
            "social_security_headcount",
            FactType.INT,
            "社保参保人数",
            "人",
            max_age_days=120,
            minimum=0,
            maximum=MAX_HEADCOUNT,
        ),
        FactKind(
            "revenue_fen",
            FactType.INT,
            "营业收入",
            "分",
            max_age_days=_ANNUAL,
            minimum=0,
            maximum=MAX_FEN,
        ),
        FactKind(
            "tax_paid_fen",
            FactType.INT,
            "实缴税金",
            "分",
            max_age_days=_ANNUAL,
            minimum=0,
            maximum=MAX_FEN,
        ),
        FactKind(
            "rd_expense_fen",
            FactType.INT,
            "研发费用",
            "分",
            max_age_days=_ANNUAL,
            minimum=0,
            maximum=MAX_FEN,
        ),
        FactKind(
            "export_value_fen",
            FactType.INT,
            "出口额",
            "分",
            max_age_days=_ANNUAL,
            minimum=0,
            maximum=MAX_FEN,
        ),
        FactKind(
            "renovation_investment_fen",
            FactType.INT,
            "技改设备投资额",
            "分",
            max_age_days=_ANNUAL,
            minimum=0,
            maximum=MAX_FEN,
        ),
        FactKind(
            "energy_saved_tce",
            FactType.INT,
            "年节能量",
            "吨标准煤",
            max_age_days=_ANNUAL,
            minimum=0,
            maximum=MAX_ENERGY_SAVED_TCE,
        ),
        FactKind(
            "talent_count",
            FactType.INT,
            "高层次人才数",
            "人",
            max_age_days=_ANNUAL,
            minimum=0,
            maximum=MAX_TALENT_COUNT,
        ),
        FactKind("high_tech", FactType.BOOL, "高新技术企业", max_age_days=1100),
        FactKind(
            "specialised_level",
            FactType.STR,
            "专精特新等级",
            max_age_days=1100,
            choices=SPECIALISED_LEVELS,
        ),
        FactKind(
            "green_factory_level",
            FactType.STR,
            "绿色工厂等级",
            max_age_days=1100,
            choices=GREEN_FACTORY_LEVELS,
        ),
        FactKind("blacklisted", FactType.BOOL, "列入严重失信名单", max_age_days=31),
        # Recorded by the platform when a commitment's recovery goes unpaid past its
        # deadline and grace (the fact's period end is the day of default); never stale.
        FactKind("commitment_default", FactType.BOOL, "承诺事项违约未退回资金", absent=False),
    )
}

PROFILE_FACTS = tuple(k.name for k in FACT_KINDS.values() if k.profile)
DATA_FACTS = tuple(k.name for k in FACT_KINDS.values() if not k.profile)

FactValue = int | str | bool | date

# Longer digit strings than any range allows are refused before int() reads them.
_INTEGER = re.compile(r"-?\d{1,20}")
MAX_TEXT_LENGTH = 64

_PERIOD = re.compile(r"^(\d{4})(?:-(Q[1-4]|\d{2}))?$")


def period_end(period: str) -> date:
    """Last day of a period written YYYY, YYYY-Qn or YYYY-MM."""
    match = _PERIOD.match(period)
    if not match:
        raise ValueError("period must be YYYY, YYYY-Qn or YYYY-MM")
    year, part = int(match.group(1)), match.group(2)
    if part is None:
        return date(year, 12, 31)
    month = int(part[1]) * 3 if part.startswith("Q") else int(part)
    if not 1 <= month <= 12:
        raise ValueError("month must be 01-12")
    first_of_next = date(year + month // 12, month % 12 + 1, 1)
    return date.fromordinal(first_of_next.toordinal() - 1)


def coerce_fact_value(kind: FactKind, raw: object) -> FactValue:
    """Turn a raw value (from JSON, CSV or YAML) into the kind's type or raise ValueError."""
    if kind.type is FactType.BOOL:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in {"true", "1", "yes", "false", "0", "no"}:
            return raw.strip().lower() in {"true", "1", "yes"}
        raise ValueError("must be true or false")
    if kind.type is FactType.INT:
        number: int | None = None
        if isinstance(raw, int) and not isinstance(raw, bool):
            number = raw
        elif isinstance(raw, str) and _INTEGER.fullmatch(raw.strip()):
            number = int(raw.strip())
        if number is None:
            raise ValueError("must be an integer")
        # Inline (this runs for every stored fact a run loads); every int kind has both.
        if (
            kind.minimum is None
            or kind.maximum is None
            or not (kind.minimum <= number <= kind.maximum)
        ):
            raise _out_of_range(kind)
        return number
    if kind.type is FactType.DATE:
        day: date | None = raw if isinstance(raw, date) else None
        if isinstance(raw, str):
            with contextlib.suppress(ValueError):
                day = date.fromisoformat(raw.strip())
        if day is None:
            raise ValueError("must be a date YYYY-MM-DD")
        if not EARLIEST_DATE <= day <= LATEST_DATE:
            raise ValueError(f"must be between {EARLIEST_DATE} and {LATEST_DATE}")
        return day
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("must be a non-empty string")
    value = raw.strip()
    if len(value) > MAX_TEXT_LENGTH:
        raise ValueError(f"must be at most {MAX_TEXT_LENGTH} characters")
    if kind.choices is not None and value not in kind.choices:
        raise ValueError(f"must be one of {', '.join(kind.choices)}")
    return value


def _out_of_range(kind: FactKind) -> ValueError:
    low, high = fact_range(kind)
    unit = f" {kind.unit}" if kind.unit else ""
    return ValueError(f"must be between {low:,} and {high:,}{unit}")


def fact_range(kind: FactKind) -> tuple[int, int]:
    """The range of an int kind (every int kind declares one; a test keeps it so)."""
    assert kind.minimum is not None and kind.maximum is not None, kind.name
    return kind.minimum, kind.maximum
