"""The catalogue of enterprise facts that eligibility and amount rules may name.

Profile facts come from the enterprise record itself and are always known. Data
facts come from the public data platform with a period; a fact older than its
kind's maximum age counts as unknown, not as passing.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import date

ZHEJIANG_CREDIT_RATINGS = ("A", "B", "C", "D")
MU_GRADES = ("A", "B", "C", "D")
ENV_CREDIT_COLOURS = ("green", "blue", "yellow", "red", "black")
SIZE_CLASSES = ("large", "medium", "small", "micro")
SPECIALISED_LEVELS = ("none", "city", "province", "national")
GREEN_FACTORY_LEVELS = ("none", "city", "province", "national")


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
        FactKind("tax_per_mu_fen", FactType.INT, "亩均税收", "分/亩", max_age_days=_ANNUAL),
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
        FactKind("social_security_headcount", FactType.INT, "社保参保人数", "人", max_age_days=120),
        FactKind("revenue_fen", FactType.INT, "营业收入", "分", max_age_days=_ANNUAL),
        FactKind("tax_paid_fen", FactType.INT, "实缴税金", "分", max_age_days=_ANNUAL),
        FactKind("rd_expense_fen", FactType.INT, "研发费用", "分", max_age_days=_ANNUAL),
        FactKind("export_value_fen", FactType.INT, "出口额", "分", max_age_days=_ANNUAL),
        FactKind(
            "renovation_investment_fen", FactType.INT, "技改设备投资额", "分", max_age_days=_ANNUAL
        ),
        FactKind("energy_saved_tce", FactType.INT, "年节能量", "吨标准煤", max_age_days=_ANNUAL),
        FactKind("talent_count", FactType.INT, "高层次人才数", "人", max_age_days=_ANNUAL),
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
    )
}

PROFILE_FACTS = tuple(k.name for k in FACT_KINDS.values() if k.profile)
DATA_FACTS = tuple(k.name for k in FACT_KINDS.values() if not k.profile)

FactValue = int | str | bool | date

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
        if isinstance(raw, bool):
            raise ValueError("must be an integer")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, str) and re.fullmatch(r"-?\d+", raw.strip()):
            return int(raw.strip())
        raise ValueError("must be an integer")
    if kind.type is FactType.DATE:
        if isinstance(raw, date):
            return raw
        if isinstance(raw, str):
            try:
                return date.fromisoformat(raw.strip())
            except ValueError:
                pass
        raise ValueError("must be a date YYYY-MM-DD")
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("must be a non-empty string")
    value = raw.strip()
    if kind.choices is not None and value not in kind.choices:
        raise ValueError(f"must be one of {', '.join(kind.choices)}")
    return value
