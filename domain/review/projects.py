"""Project fingerprints: the same project found under two names, and two projects
with near names kept apart.

A name is compared after normalising it (full-width to half-width, case, spaces and
punctuation, the words every project name carries); its *marks* (numbers, Latin
letters, and Chinese numerals before 期/号/车间...) must be equal, so "年产10万吨" and
"年产20万吨", or "一期" and "二期", are different projects however alike the rest.
A location is compared after dropping the province and city a firm may or may not
write. Invoices and serials are compared as upper-case tokens without separators.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from rapidfuzz import fuzz

_PUNCTUATION = re.compile(r"[\W_]+", re.UNICODE)
_COMMON_WORDS = re.compile(r"(建设项目|项目|工程|建设)")
_CN_DIGITS = {
    "零": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
# Chinese numerals before a unit, a count or an ordinal are written as digits ("十万套"
# and "10万套" alike; "二期" as "2期").
_CN_ORDINAL = re.compile(
    r"([零一二两三四五六七八九十]+)(?=期|号|栋|座|条|标段|车间|批|线|万|千|百|亿|吨|套|台|件|个|亩|辆)"
)
# Numbers, Latin letters, and the side of a site (东区 and 西区 are two places).
_MARKS = re.compile(r"[0-9]+(?:\.[0-9]+)?|[a-z]+|[东南西北](?=区|侧|片|厂|院|楼|线|门)")
_PROVINCE = re.compile(r"^.{2,3}省")
# A city only when a district or county follows it: "湖州市德清县..." loses 湖州市, while
# 德清县新市镇 or 吴兴区市场路 keep the 市 inside their names.
_CITY = re.compile(r"^.{2,3}市(?=[^区县]{1,5}[区县])")


def _cn_number(text: str) -> str:
    """一..九十九 as digits (enough for phases, buildings and lines)."""
    if "十" not in text:
        return "".join(str(_CN_DIGITS[c]) for c in text)
    tens, _, units = text.partition("十")
    return str((_CN_DIGITS[tens] if tens else 1) * 10 + (_CN_DIGITS[units] if units else 0))


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return _PUNCTUATION.sub("", text)


def name_key(name: str) -> str:
    text = _CN_ORDINAL.sub(lambda m: _cn_number(m.group(1)), normalise(name))
    return _COMMON_WORDS.sub("", text)


def marks(key: str) -> tuple[str, ...]:
    return tuple(sorted(_MARKS.findall(key)))


def location_key(location: str) -> str:
    whole = normalise(location)
    return _CITY.sub("", _PROVINCE.sub("", whole, count=1), count=1) or whole


def token(text: str) -> str:
    return normalise(text).upper()


@dataclass(frozen=True)
class Fingerprint:
    name: str
    key: str
    marks: tuple[str, ...]
    location: str
    investment_fen: int | None

    @classmethod
    def of(cls, name: str, location: str, investment_fen: int | None) -> Fingerprint:
        return cls.stored(name, location_key(location), investment_fen)

    @classmethod
    def stored(cls, name: str, location: str, investment_fen: int | None) -> Fingerprint:
        """From a name and an already normalised location (`location_key`)."""
        key = name_key(name)
        return cls(name, key, marks(key), location, investment_fen)


def similarity(a: Fingerprint, b: Fingerprint) -> float:
    """0-1: how alike two project names are once normalised."""
    return fuzz.ratio(a.key, b.key) / 100


def same_project(
    a: Fingerprint, b: Fingerprint, threshold: float, tolerance_pct: int
) -> float | None:
    """The names' similarity when `a` and `b` are one project by name, place and size;
    None when they are not."""
    if a.location != b.location or a.marks != b.marks:
        return None
    if a.investment_fen and b.investment_fen:
        larger = max(a.investment_fen, b.investment_fen)
        if abs(a.investment_fen - b.investment_fen) * 100 > tolerance_pct * larger:
            return None
    score = similarity(a, b)
    return score if score >= threshold else None
