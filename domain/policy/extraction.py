"""Drafting computable items from a policy document's text (政策条款解析).

For each article that pays something (a 补助, 奖励 or 补贴 with an amount), one proposed
item: its eligibility conditions, each linked to the sentence it came from and marked
with how sure the reading is, and its amount rule. Conditions stated once for the whole
document (申报条件, 基本条件) join every item of it. What cannot be expressed in the rule
language becomes a manual condition quoting the text. A proposal is a draft for a
caseworker to read, edit and submit through the library's approval: never published
as it stands.

The reading is by patterns over each sentence, after the way Chinese subsidy policies
are written: a noun naming a figure (营业收入, 设备投资额, 参保人数 ...), a number with its
unit, and a word saying which side of it qualifies (以上, 不低于, 超过, 以下 ...; 以上
and 以下 include the number, as in Civil Code art. 1259). bench/extraction.py measures
it against labelled real articles.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal, InvalidOperation
from itertools import pairwise
from typing import Any

import cn2an
import opencc

from domain.engine.amounts import parse_amount_rule
from domain.engine.rules import MAX_RULE_TEXT, parse_rule
from models.period import PeriodScheme
from models.policy import Category
from models.policy_feed import Article

# ----- numbers and money --------------------------------------------------------------

_NUM = r"(\d+(?:\.\d+)?|[零〇一二两三四五六七八九十百千]+)"
_MONEY_UNITS = {"元": 100, "万元": 1_000_000, "亿元": 10_000_000_000}
MONEY = _NUM + r"\s*(亿元|万元|元)"
_SEP = r"[，,。；;：:（）()]"


def number(text: str) -> Decimal | None:
    try:
        return Decimal(text)
    except InvalidOperation:
        pass
    try:
        return Decimal(str(cn2an.cn2an(text.replace("两", "二"), "smart")))
    except (ValueError, KeyError, InvalidOperation):
        return None


def fen(amount: str, unit: str) -> int | None:
    value = number(amount)
    if value is None:
        return None
    return int(value * _MONEY_UNITS[unit])


# ----- what a figure is called --------------------------------------------------------

# The nouns of each numeric fact, longest first within a fact.
NOUNS: dict[str, tuple[str, ...]] = {
    "revenue_fen": ("主营业务收入", "营业收入", "销售收入", "营收"),
    "tax_paid_fen": (
        "实缴税金",
        "实缴税收",
        "纳税总额",
        "入库税收",
        "纳税额",
        "税收贡献",
        "年纳税",
    ),
    "rd_expense_fen": ("研究开发费用", "研发费用", "研发投入", "研发经费"),
    "renovation_investment_fen": (
        "生产性设备投资",
        "技术改造投资",
        "设备投资额",
        "设备投资",
        "技改投资",
        "设备购置",
    ),
    "tax_per_mu_fen": ("亩均税收",),
    "social_security_headcount": ("社保参保人数", "参保人数", "参保职工", "职工人数", "从业人员"),
    "energy_saved_tce": ("节能量",),
    "talent_count": ("高层次人才",),
}
_NOUN_FACT = sorted(
    ((noun, fact) for fact, nouns in NOUNS.items() for noun in nouns), key=lambda p: -len(p[0])
)
_NOUN = "|".join(re.escape(noun) for noun, _ in _NOUN_FACT)
_COUNT_UNITS = {
    "social_security_headcount": "人",
    "talent_count": "人",
    "energy_saved_tce": "吨标准煤",
}


def fact_of(noun_phrase: str) -> str | None:
    for noun, fact in _NOUN_FACT:
        if noun in noun_phrase:
            return fact
    return None


# Which side of the number qualifies: before the number, and after it.
_BEFORE = {
    "超过": "gt",
    "高于": "gt",
    "大于": "gt",
    "不低于": "gte",
    "不少于": "gte",
    "达到": "gte",
    "低于": "lt",
    "不足": "lt",
    "少于": "lt",
    "不超过": "lte",
    "不高于": "lte",
}
_AFTER = {
    "以上": "gte",
    "及以上": "gte",
    "（含）以上": "gte",
    "以上（含）": "gte",
    "以下": "lte",
    "及以下": "lte",
    "以内": "lte",
}
_BEFORE_RE = "|".join(sorted(_BEFORE, key=len, reverse=True))
_AFTER_RE = "|".join(re.escape(w) for w in sorted(_AFTER, key=len, reverse=True))

_THRESHOLD = re.compile(
    rf"(?P<noun>{_NOUN})[^，。；;]{{0,14}}?(?P<before>{_BEFORE_RE})?\s*"
    rf"(?P<num>{_NUM[1:-1]})\s*(?P<unit>亿元|万元|元|人|名|吨标准煤|吨)(?:/亩|每亩)?"
    rf"(?P<after>{_AFTER_RE})?"
)

# ----- the proposal's shape -----------------------------------------------------------


@dataclass(frozen=True)
class Proposed:
    """One proposed condition: a rule node, the words it was read from (`quote`), the
    whole sentence they stand in, and how sure the reading is (0 to 1)."""

    rule: dict[str, Any]
    quote: str
    confidence: float
    sentence: str = ""


@dataclass(frozen=True)
class ProposedAmount:
    rule: dict[str, Any]
    quote: str
    confidence: float
    sentence: str = ""


@dataclass
class Draft:
    article: str
    title: str
    category: Category
    period_scheme: PeriodScheme
    conditions: list[Proposed] = field(default_factory=list)
    manual: list[Proposed] = field(default_factory=list)
    amount: ProposedAmount | None = None
    amount_note: str | None = None


_SIMPLIFIED = opencc.OpenCC("t2s")
# Full-width punctuation as the portals write it (some mirrors turn it half-width).
_PUNCTUATION = str.maketrans({",": "，", ";": "；", ":": "：", "(": "（", ")": "）", "%": "％"})


def normalised(text: str) -> str:
    """Simplified characters and full-width punctuation; figures keep their digits."""
    simplified: str = _SIMPLIFIED.convert(text)
    return simplified.translate(_PUNCTUATION).replace("％", "%")


def sentences(text: str) -> list[str]:
    """The text's sentences and clauses that end in 。 or ；, without empty ones."""
    return [s.strip() for s in re.split(r"(?<=[。；])", normalised(text)) if s.strip()]


# ----- conditions -----------------------------------------------------------------------

_GRADES = "ABCD"


def _at_least(letter: str) -> list[str]:
    return list(_GRADES[: _GRADES.index(letter) + 1])


def _grades(found: str, and_above: bool) -> list[str]:
    letters = [c for c in found if c in _GRADES]
    if and_above and letters:
        return _at_least(max(letters))
    return sorted(set(letters))


_MU = re.compile(
    r"亩均(?:效益)?(?:综合)?评价[^，。；]{0,8}?(?P<grades>[ABCD]类(?:[、和或及与/][ABCD]类)*)(?P<up>及以上)?"
)
_CREDIT = re.compile(
    r"公共信用(?:综合)?评价[^，。；]{0,8}?(?P<grades>[ABCD]级(?:[、和或及与/][ABCD]级)*)(?P<up>及以上)?"
)
_ENV_OK = re.compile(
    r"(?:环保|环境)信用[^，。；]{0,10}?(?P<colours>(?:绿色|蓝色|黄色)(?:[、和或及与/](?:绿色|蓝色|黄色))*)(?P<up>及以上)?"
)
_ENV_NOT = re.compile(r"(?:环保|环境)信用[^，。；]{0,12}?(?:红色|黑色)")
_ADJUSTS = re.compile(r"下调|上调|降低|提高至|提高到|减半|扣减|调减")
_EXCLUDED = re.compile(r"不得享受|不予(?:支持|享受|奖励|补助)|不享受|不得申报|不列入支持")
_BLACKLIST = re.compile(r"(?:未|没有|不得|未曾)被?列入[^，。；]{0,10}?(?:严重)?失信")
_HIGH_TECH = re.compile(r"(?:认定为|为|属于|是)?(?:国家级?)?高新技术企业")
_SPECIALISED = re.compile(r"(?P<level>国家级|省级|市级)?专精特新(?P<giant>“?小巨人”?)?")
_GREEN = re.compile(r"(?P<level>国家级|省级|市级)绿色工厂")
_SINCE = re.compile(
    r"(?P<y>\d{4})年(?P<m>\d{1,2})月(?P<d>\d{1,2})日(?:以后|之后|后|起|及以后)[^，。；]{0,6}?(?:注册|成立|设立)"
)
_COLOURS = {"绿色": "green", "蓝色": "blue", "黄色": "yellow"}
_LEVELS = {"国家级": "national", "省级": "province", "市级": "city"}
# Firm sizes and industries only where they say who qualifies (对…中小企业, 为规模以上
# 工业企业), not where a sentence merely names them (中小微企业按60%返还).
_WHO = r"(?:对|为|属于|是|支持|面向|扶持|鼓励|适用于)[^，。；]{0,12}?"
_SIZES = (
    (re.compile(_WHO + r"小微企业"), ["small", "micro"]),
    (re.compile(_WHO + r"中小(?:微)?企业"), ["medium", "small", "micro"]),
)
_INDUSTRIES = (
    (re.compile(r"软件和信息技术服务业(?:企业)?|软件企业"), ["I65"]),
    (re.compile(r"金融机构|金融企业|持牌金融"), ["J"]),
    (re.compile(r"批发(?:和|与|、)?零售(?:业)?企业|商贸(?:流通)?企业"), ["F"]),
    (re.compile(r"制造业(?:企业|技术改造|技改)"), ["C"]),
    (re.compile(r"规模以上工业企业|" + _WHO + r"工业企业|的工业企业和"), ["B", "C", "D"]),
    (re.compile(r"农业(?:产业化)?龙头企业|农产品加工企业"), ["A"]),
)
# Sentences that state a condition no figure can check (kept as manual conditions).
_MANUAL_HINTS = re.compile(
    r"未发生|无重大|不得|已通过|验收|不重复|重复享受|合法经营|依法|无违法|安全生产|环境污染|"
    r"独立法人|财务制度|诚信"
)
# Sentences about the money itself (what it is used for, how it is paid out) or about
# sanctions: no condition of who qualifies.
_NOT_A_CONDITION = re.compile(
    r"资金[^。；]{0,10}用于|分.{1,2}年拨付|拨付\d|差别化|追回|取消.{0,6}资格"
)
# Where a paying sentence's condition ends and its payment begins.
_PAYMENT_STARTS = re.compile(r"[，,]?\s*(?:每家|每户|每个)?(?:分别)?(?:给予|奖励|补助|按)")


def _rule(fact: str, op: str, value: Any) -> dict[str, Any] | None:
    node = {"fact": fact, "op": op, "value": value}
    try:
        parse_rule(node)
    except ValueError:
        return None
    return node


def _threshold_value(fact: str, num: str, unit: str) -> int | None:
    if fact.endswith("_fen"):
        if unit not in _MONEY_UNITS:
            return None
        return fen(num, unit)
    if unit in ("元", "万元", "亿元"):
        return None
    value = number(num)
    return None if value is None or value != int(value) else int(value)


_RANGE = re.compile(
    rf"(?P<noun>{_NOUN})[^，。；]{{0,14}}?(?P<low>{_NUM[1:-1]})\s*(?P<lunit>亿元|万元|元)?(?P<lin>（含）)?"
    rf"\s*[—–~～至到-]\s*(?P<high>{_NUM[1:-1]})\s*(?P<hunit>亿元|万元|元)(?P<hin>（含）)?"
)


def _ranges(sentence: str) -> Iterable[tuple[Proposed, tuple[int, int]]]:
    """A band (1亿元（含）—5亿元): at least the first figure (more than it, unless 含),
    below the second (at most it, when 含)."""
    for match in _RANGE.finditer(sentence):
        fact = fact_of(match["noun"])
        if fact is None or not fact.endswith("_fen"):
            continue
        low = fen(match["low"], match["lunit"] or match["hunit"])
        high = fen(match["high"], match["hunit"])
        if low is None or high is None or low >= high:
            continue
        span = (match.start("low"), match.end())
        for node in (
            _rule(fact, "gte" if match["lin"] or not match["hin"] else "gt", low),
            _rule(fact, "lte" if match["hin"] else "lt", high),
        ):
            if node:
                yield Proposed(node, match.group(0), 0.8), span


def _thresholds(sentence: str, amount_spans: list[tuple[int, int]]) -> Iterable[Proposed]:
    bands = list(_ranges(sentence))
    for proposed, _span in bands:
        yield proposed
    amount_spans = amount_spans + [span for _, span in bands]
    for match in _THRESHOLD.finditer(sentence):
        if any(start <= match.start("num") < end for start, end in amount_spans):
            continue  # the amount a rule pays, not a threshold
        op = _BEFORE.get(match["before"] or "") or _AFTER.get(match["after"] or "")
        if op is None:
            continue
        if (
            match["after"]
            and match["before"]
            and _BEFORE[match["before"]] != _AFTER[match["after"]]
        ):
            continue
        fact = fact_of(match["noun"])
        if fact is None or "美元" in sentence[match.end() : match.end() + 2]:
            continue
        if fact == "tax_per_mu_fen" and "亩" not in sentence[match.start() : match.end() + 2]:
            continue
        value = _threshold_value(fact, match["num"], match["unit"])
        if value is None:
            continue
        node = _rule(fact, op, value)
        if node is not None:
            gap = match.start("num") - match.end("noun")
            yield Proposed(node, match.group(0), 0.9 if gap <= 6 else 0.7)


def _categorical(sentence: str) -> Iterable[Proposed]:
    for fact, pattern in (("mu_grade", _MU), ("credit_rating", _CREDIT)):
        for match in pattern.finditer(sentence):
            # 为C类的，补助比例下调: a grade that changes the amount is no condition.
            if _ADJUSTS.search(sentence, match.end()):
                continue
            # 评价为D类的企业…不得享受: the grades named are the ones left out.
            op = "not_in" if _EXCLUDED.search(sentence, match.end()) else "in"
            node = _rule(fact, op, _grades(match["grades"], bool(match["up"])))
            if node:
                yield Proposed(node, match.group(0), 0.9 if op == "in" else 0.7)
    env = _ENV_OK.search(sentence)
    if env:
        colours = [_COLOURS[c] for c in re.findall("绿色|蓝色|黄色", env["colours"])]
        if env["up"]:
            colours = ["green", "blue", "yellow"][
                : max(["green", "blue", "yellow"].index(c) for c in colours) + 1
            ]
        node = _rule("env_credit_colour", "in", sorted(set(colours)))
        if node:
            yield Proposed(node, env.group(0), 0.8)
    elif excluded := _ENV_NOT.search(sentence):
        node = _rule("env_credit_colour", "not_in", ["red", "black"])
        if node:
            yield Proposed(node, excluded.group(0), 0.8)
    black = _BLACKLIST.search(sentence)
    if black:
        node = _rule("blacklisted", "eq", False)
        if node:
            yield Proposed(node, black.group(0), 0.9)
    green = _GREEN.search(sentence)
    if green:
        node = _rule("green_factory_level", "eq", _LEVELS[green["level"]])
        if node:
            yield Proposed(node, green.group(0), 0.8)
    special = _SPECIALISED.search(sentence)
    if special:
        level = "national" if special["giant"] else _LEVELS.get(special["level"] or "")
        if level:
            node = _rule("specialised_level", "eq", level)
            if node:
                yield Proposed(node, special.group(0), 0.8)
    tech = _HIGH_TECH.search(sentence)
    if tech and "高新技术企业" in sentence and "非高新" not in sentence:
        node = _rule("high_tech", "eq", True)
        if node:
            yield Proposed(node, tech.group(0), 0.6)
    for pattern, sizes in _SIZES:
        size = pattern.search(sentence)
        if size:
            node = _rule("size_class", "in", sizes)
            if node:
                yield Proposed(node, size.group(0), 0.7)
            break
    for pattern, prefixes in _INDUSTRIES:  # several: alternatives, widened by `merged`
        industry = pattern.search(sentence)
        if industry:
            node = _rule("industry_code", "prefix", prefixes)
            if node:
                yield Proposed(node, industry.group(0), 0.6)
    since = _SINCE.search(sentence)
    if since:
        try:
            day = date(int(since["y"]), int(since["m"]), int(since["d"]))
        except ValueError:
            day = None
        node = _rule("established_on", "gte", day.isoformat()) if day else None
        if node:
            yield Proposed(node, since.group(0), 0.8)


def _regions(sentence: str, regions: Mapping[str, str]) -> Iterable[Proposed]:
    if not re.search(r"注册|辖区|范围内|区域内|行政区域|落户|所在地", sentence):
        return
    # 吴兴区（不含南太湖新区托管区域）: what is left out is not where a firm qualifies.
    allowed = _LEFT_OUT.sub("", sentence)
    named = [(name, code) for name, code in regions.items() if name in allowed]
    if not named:
        return
    node = _rule("region_code", "in", sorted({code for _, code in named}))
    if node:
        yield Proposed(node, "、".join(name for name, _ in named), 0.6)


_ASIDE = re.compile(r"（(?!含）)[^（）]{1,12}）")
_LEFT_OUT = re.compile(r"（(?:不含|不包括|除)[^（）]*）|(?:不含|不包括)[^，。；、）]*")


def _without_asides(sentence: str) -> tuple[str, list[int]]:
    """The sentence without its short asides, and where each character left stood."""
    kept: list[int] = []
    start = 0
    for aside in _ASIDE.finditer(sentence):
        kept.extend(range(start, aside.start()))
        start = aside.end()
    kept.extend(range(start, len(sentence)))
    return "".join(sentence[i] for i in kept), kept


def _original(quote: str, plain: str, where: list[int], sentence: str) -> str:
    """The words of the sentence a quote of its plain form came from, asides and all."""
    at = plain.find(quote)
    if at < 0 or not quote:
        return quote
    return sentence[where[at] : where[at + len(quote) - 1] + 1]


def conditions_of(
    sentence: str, regions: Mapping[str, str], amount_spans: list[tuple[int, int]] | None = None
) -> list[Proposed]:
    found: list[Proposed] = []
    # A short aside between a figure's name and its number (设备投资额（不含税，下同）在
    # 300万元以上) is read past (the amount's figures found again without it).
    plain, where = _without_asides(sentence)
    spans = amount_spans or []
    if plain != sentence:
        read = amount_of(plain)
        spans = read[1] if read else []
    thresholds = [
        replace(p, quote=_original(p.quote, plain, where, sentence))
        for p in _thresholds(plain, spans)
    ]
    for proposed in (
        *thresholds,
        *_categorical(sentence),
        *_regions(sentence, regions),
    ):
        found = merged(found, proposed)
    return found


def merged(found: list[Proposed], new: Proposed) -> list[Proposed]:
    """`found` with `new` added: once only, and a list condition on a fact already listed
    (工业企业和软件企业: two industries named as alternatives) widened to both."""
    if new.rule in [p.rule for p in found]:
        return found
    rule = new.rule
    if rule.get("op") in ("prefix", "in") and rule.get("fact") in ("industry_code", "size_class"):
        for index, old in enumerate(found):
            if old.rule.get("fact") == rule["fact"] and old.rule.get("op") == rule["op"]:
                values = sorted({*old.rule["value"], *rule["value"]})
                wider = Proposed(
                    {**old.rule, "value": values},
                    f"{old.quote}；{new.quote}",
                    min(old.confidence, new.confidence),
                    old.sentence
                    if new.sentence in ("", old.sentence)
                    else f"{old.sentence}{new.sentence}",
                )
                return [*found[:index], wider, *found[index + 1 :]]
    return [*found, new]


# ----- amounts --------------------------------------------------------------------------

_PAYS = r"(?:补助|奖励|补贴|资助|扶持|支持)"
_CAP = re.compile(rf"(?:最高|最多|上限为?|不超过|封顶)[^，。；0-9]{{0,6}}?{MONEY}")
_FLOOR = re.compile(rf"最低[^，。；0-9]{{0,4}}?{MONEY}")
_RATE = re.compile(r"按(?:照)?(?P<base>[^，。；]{1,24}?)的\s*(?P<pct>\d+(?:\.\d+)?)\s*[%％]")
_PER_UNIT = re.compile(
    rf"(?:按|每)(?:每|照)?(?:节约|新增|吸纳)?(?:一|1)?名?(?P<unit>吨标准煤|人)[^，。；0-9]{{0,8}}?{MONEY}"
    rf"|{MONEY}\s*/\s*(?P<unit2>吨标准煤|人)"
)
# A list of amounts where only the last may carry its unit: 10万、20万、50万元.
_LIST = rf"{_NUM}\s*(?:亿元|万元|元|亿|万)?(?:\s*[、，和及]\s*{_NUM}\s*(?:亿元|万元|元|亿|万)?)+"
_TIER_STEPS = re.compile(
    rf"(?P<noun>{_NOUN})[^。；]{{0,12}}?(?:首次)?(?:突破|超过|达到|迈上|跨越)\s*(?P<steps>{_LIST})"
)
_TIER_PAYS = re.compile(rf"分别[^，。；0-9]{{0,14}}?(?P<pays>{_LIST})")
_LISTED = re.compile(rf"{_NUM}\s*(亿元|万元|元|亿|万)?")


def _listed(text: str) -> list[int]:
    """The amounts of a list, each in the unit written after it or after a later one."""
    found = [(m.group(1), m.group(2)) for m in _LISTED.finditer(text)]
    amounts: list[int] = []
    unit: str | None = None
    for value, written in reversed(found):
        unit = {"亿": "亿元", "万": "万元"}.get(written or "", written) or unit
        amount = fen(value, unit) if unit else None
        if amount is None:
            return []
        amounts.append(amount)
    return amounts[::-1]


_FIXED = re.compile(
    rf"(?:一次性|给予|奖励|补助|补贴|资助)[^，。；0-9]{{0,8}}?{MONEY}(?:的)?(?:一次性)?{_PAYS}?"
)
_MONEY_RE = re.compile(MONEY)


def _checked_amount(rule: dict[str, Any]) -> dict[str, Any] | None:
    try:
        parse_amount_rule(rule)
    except ValueError:
        return None
    return rule


def amount_of(sentence: str) -> tuple[ProposedAmount, list[tuple[int, int]]] | None:
    """The amount rule a sentence states, and the spans of its figures (not thresholds)."""
    steps = _TIER_STEPS.search(sentence)
    pays = _TIER_PAYS.search(sentence, steps.end()) if steps else None
    if steps and pays:
        fact = fact_of(steps["noun"])
        thresholds = _listed(steps["steps"])
        amounts = _listed(pays["pays"])
        if fact and len(thresholds) == len(amounts) and fact.endswith("_fen"):
            rule = _checked_amount(
                {
                    "kind": "tiers",
                    "fact": fact,
                    "tiers": [
                        {"at_least": t, "amount_fen": a}
                        for t, a in zip(thresholds, amounts, strict=True)
                    ],
                }
            )
            if rule:
                span = [(steps.start("steps"), steps.end("steps")), (pays.start(), pays.end())]
                return ProposedAmount(rule, sentence[steps.start() : pays.end()], 0.8), span
    cap = _CAP.search(sentence)
    cap_fen = fen(cap.group(1), cap.group(2)) if cap else None
    floor = _FLOOR.search(sentence)
    floor_fen = fen(floor.group(1), floor.group(2)) if floor else None
    bounds = [(m.start(), m.end()) for m in (cap, floor) if m]
    rate = _RATE.search(sentence)
    if rate and re.search(_PAYS, sentence[rate.end() : rate.end() + 12]):
        fact = fact_of(rate["base"])
        if fact and fact.endswith("_fen"):
            spec: dict[str, Any] = {
                "kind": "rate",
                "fact": fact,
                "rate": str(Decimal(rate["pct"]) / 100),
            }
            if cap_fen is not None:
                spec["cap_fen"] = cap_fen
            if floor_fen is not None:
                spec["floor_fen"] = floor_fen
            rule = _checked_amount(spec)
            if rule:
                end = max([rate.end(), *(e for _, e in bounds)])
                # A rate of a growth or an excess (增长部分, 超过部分) is not a rate of the
                # figure itself: proposed, but for a person to rewrite.
                sure = 0.4 if re.search(r"增长|增量|增加|超过部分|较上年", rate["base"]) else 0.85
                return ProposedAmount(rule, sentence[rate.start() : end], sure), bounds
    per = _PER_UNIT.search(sentence)
    if per:
        unit = per["unit"] or per["unit2"]
        fact = "energy_saved_tce" if unit == "吨标准煤" else "social_security_headcount"
        each = fen(per.group(2), per.group(3)) if per["unit"] else fen(per.group(5), per.group(6))
        if each:
            spec = {"kind": "rate", "fact": fact, "rate": str(each)}
            if cap_fen is not None:
                spec["cap_fen"] = cap_fen
            rule = _checked_amount(spec)
            if rule:
                end = max([per.end(), *(e for _, e in bounds)])
                return ProposedAmount(rule, sentence[per.start() : end], 0.7), [
                    (per.start(), per.end()),
                    *bounds,
                ]
    listed = _TIER_PAYS.search(sentence)
    if listed and len(_listed(listed["pays"])) > 1:
        return None  # 分别给予100万元、30万元: one amount per kind of firm, for a person
    fixed = _FIXED.search(sentence)
    # Not "最高20万元" (a cap with no rule under it), not "每千瓦1000元" (a rate of a
    # figure the platform does not keep), and not one of several amounts (by area,
    # by kind: for a person to split).
    if (
        fixed
        and not re.search(
            r"最高|最多|不超过|每(?!家|户|个|名企业|企业|项)",
            sentence[max(0, fixed.start() - 4) : fixed.start(1)],
        )
        and len(_MONEY_RE.findall(sentence)) == 1
    ):
        value = fen(fixed.group(1), fixed.group(2))
        rule = _checked_amount({"kind": "fixed", "amount_fen": value}) if value else None
        if rule:
            return ProposedAmount(rule, fixed.group(0), 0.8), [(fixed.start(), fixed.end())]
    return None


# ----- articles and documents -----------------------------------------------------------

_COMMON = re.compile(
    r"申报条件|基本条件|应同时(?:符合|满足|具备)|应当具备|须同时|支持对象|适用对象|申报主体"
)


_DOCUMENT_CATEGORY = re.compile(
    r"本(?:政策|办法|细则|措施|通知|规定)[^。；]{0,20}?(?:实行|适用|采取)[^。；]{0,6}?"
    r"(?P<how>免申即享|承诺制|申报制)"
)


def document_category(text: str) -> Category:
    """How a document pays as a whole, only where it says so of itself (本办法实行
    免申即享); an article that pays its own way says so in itself."""
    said = _DOCUMENT_CATEGORY.search(text)
    if said is None:
        return Category.APPLICATION
    return category_of(said["how"])


def category_of(text: str) -> Category:
    if re.search(r"免申即享|免申报|无需申报|免于申报|直接兑付", text):
        return Category.RECOGNITION
    if re.search(r"承诺制|承诺书|先行兑付|预拨|先兑付后", text):
        return Category.COMMITMENT
    return Category.APPLICATION


_SHORT_TITLE = re.compile(r"《(?P<t>[^》]{2,60})》")


def _title(article: Article, title: str) -> str:
    """The article's heading (its first short sentence: 支持工业技术改造), else the
    document's title and the article's number."""
    first = re.split(r"[。：:]", article.text, maxsplit=1)[0].strip()
    if 2 <= len(first) <= 24 and not re.search(r"\d", first):
        return first
    inner = _SHORT_TITLE.search(title)
    return f"{inner['t'] if inner else title}{article.number}"[:120]


def _manual(sentence: str, pays: bool) -> Proposed | None:
    """A sentence's condition no figure checks, quoting it; of a sentence that pays, only
    the part before the payment (通过验收的企业，给予…: 通过验收的企业), which names who
    qualifies (对首次入选领跑者前20名的企业) even with no word of the hints below."""
    names_who = False
    if pays:
        start = _PAYMENT_STARTS.search(sentence)
        sentence = sentence[: start.start()] if start else sentence
        names_who = sentence.startswith("对") and len(sentence) > 3
    if _NOT_A_CONDITION.search(sentence) or not (names_who or _MANUAL_HINTS.search(sentence)):
        return None
    text = sentence.strip("。；;， ").removeprefix("对")
    if len(text) > MAX_RULE_TEXT:
        text = text[: MAX_RULE_TEXT - 1] + "…"
    return Proposed({"manual": text}, sentence, 0.5)


# A sentence that pays money, whether or not its amount is one rule can compute.
# 给予…20万元, 奖励20万元, 奖励提高至20万元; not 享受本条奖励的企业…不低于1000万元 (a
# condition on the firms paid, which stays with the payment it qualifies).
_PAYS_MONEY = re.compile(
    rf"(?:给予[^。；，]{{0,16}}?|(?:奖励|补助|补贴|资助|奖补)[^。；，0-9]{{0,4}}){_NUM}\s*(?:亿元|万元|元|万)"
)


@dataclass
class Reading:
    """What a text says: its conditions, manual conditions, its first amount rule, or
    the sentence that pays an amount no rule was read from (for a person to write)."""

    conditions: list[Proposed] = field(default_factory=list)
    manual: list[Proposed] = field(default_factory=list)
    amount: ProposedAmount | None = None
    amount_note: str | None = None

    @property
    def pays(self) -> bool:
        return self.amount is not None or self.amount_note is not None


def read_text(text: str, regions: Mapping[str, str]) -> Reading:
    reading = Reading()
    for sentence in sentences(text):
        found = amount_of(sentence)
        spans: list[tuple[int, int]] = []
        if found is not None:
            spans = found[1]
            if reading.amount is None:
                reading.amount = replace(found[0], sentence=sentence)
        elif reading.amount is None and reading.amount_note is None:
            pays = _PAYS_MONEY.search(sentence)
            if pays:
                reading.amount_note = sentence
        read = conditions_of(sentence, regions, spans)
        for proposed in read:
            reading.conditions = merged(reading.conditions, replace(proposed, sentence=sentence))
        if not read:
            note = _manual(sentence, found is not None or bool(_PAYS_MONEY.search(sentence)))
            if note is not None:
                reading.manual.append(note)
    if reading.amount is not None:
        reading.amount_note = None
    return reading


_POINT = re.compile(r"[（(][一二三四五六七八九十]+[)）]")


def parts_of(article: Article) -> list[Article]:
    """The article's paying parts, each an item: its sub-points （一）（二）… that pay
    amounts of their own, else its sentences that do (对…给予20万元；对…给予10万元),
    each with the lead-in before the first and the sentences after it up to the next."""
    marks = list(_POINT.finditer(article.text))
    if len(marks) >= 2:
        lead = article.text[: marks[0].start()]
        pieces = [
            (
                m.group(0),
                article.text[m.start() : marks[i + 1].start() if i + 1 < len(marks) else None],
            )
            for i, m in enumerate(marks)
        ]
        paying = [(mark, text) for mark, text in pieces if _pays(text)]
        if len(paying) >= 2:
            return [
                Article(number=f"{article.number}{mark}", text=lead + text) for mark, text in paying
            ]
    said = sentences(article.text)
    starts = [i for i, sentence in enumerate(said) if _pays(sentence)]
    if len(starts) < 2:
        return [article]
    lead = "".join(said[: starts[0]])
    # What the article says of all its payments (享受本条奖励的企业…) holds for each part.
    whole = "".join(x for x in said[starts[-1] + 1 :] if _WHOLE_ARTICLE.search(x))
    bounds = [*starts, len(said)]
    return [
        Article(
            number=f"{article.number}（{n}）",
            text=lead + "".join(x for x in said[start:end] if x not in whole) + whole,
        )
        for n, (start, end) in enumerate(pairwise(bounds), start=1)
    ]


_WHOLE_ARTICLE = re.compile(r"本条|上述|以上(?:奖励|补助|政策)")


def _pays(text: str) -> bool:
    return any(amount_of(s) or _PAYS_MONEY.search(s) for s in sentences(text))


_AMENDS = re.compile(r"修改为|删去|调整为|删除")


def draft_items(title: str, articles: Sequence[Article], regions: Mapping[str, str]) -> list[Draft]:
    """One draft per article (or paying part of one) that pays an amount; the document's
    common conditions (an article of 申报条件 that pays nothing) join each."""
    read = [
        (part, read_text(part.text, regions))
        for article in articles
        for part in parts_of(article)
        if not _AMENDS.search(part.text)  # 将…修改为…: the alert's business, not an item's
    ]
    # How the document as a whole pays, from the articles that pay nothing themselves;
    # an article's own way (本条实行“免申即享”) holds for every part of it.
    category = document_category("".join(part.text for part, reading in read if not reading.pays))
    named_ways = _ways_named(" ".join(normalised(a.text) for a in articles))
    own_way = {
        article.number: named_ways.get(
            article.number, _own_or(category_of(normalised(article.text)), category)
        )
        for article in articles
    }
    common: list[Proposed] = []
    common_manual: list[Proposed] = []
    for part, reading in read:
        if not reading.pays and _COMMON.search(part.text):
            for condition in reading.conditions:
                common = merged(common, condition)
            common_manual.extend(reading.manual)
    drafts: list[Draft] = []
    for part, reading in read:
        if not reading.pays:
            continue
        own = [c for c in reading.conditions if c.rule not in [x.rule for x in common]]
        drafts.append(
            Draft(
                article=part.number,
                title=_title(part, title),
                category=own_way.get(_article_of(part.number), category),
                period_scheme=period_scheme_of(part.text),
                conditions=[*common, *own],
                manual=[*common_manual, *reading.manual],
                amount=reading.amount,
                amount_note=reading.amount_note,
            )
        )
    return drafts


_NUMERAL = "[一二三四五六七八九十]+"
_WAYS_NAMED = re.compile(
    rf"(?P<numbers>第{_NUMERAL}(?:条)?(?:[、和及至]第?{_NUMERAL}条?)*条?)"
    r"[^。；，]{0,8}?(?:实行|适用|采取)[^。；]{0,4}?[“\"]?(?P<how>免申即享|承诺制|申报制)"
)


def _ways_named(text: str) -> dict[str, Category]:
    """How the articles a document names pay (第四条、第六条实行“免申即享”; 第四、六条…)."""
    ways: dict[str, Category] = {}
    for match in _WAYS_NAMED.finditer(text):
        for number in re.findall(_NUMERAL, match["numbers"]):
            ways[f"第{number}条"] = category_of(match["how"])
    return ways


def _article_of(number: str) -> str:
    """The article a part's number was made from (第五条（一） -> 第五条)."""
    return re.split(r"[（(]", number, maxsplit=1)[0] if number.endswith(("）", ")")) else number


_ONE_OFF = re.compile(r"一次性|首次|新认定|新评为|新获评|新入选|首批")
_QUARTERLY = re.compile(r"按季度?|每季度?|季度(?:兑现|拨付|发放)")
_MONTHLY = re.compile(r"按月|每月|逐月")


def period_scheme_of(text: str) -> PeriodScheme:
    """How often a firm may be paid: once (一次性, 首次, 新认定 …), by quarter or month
    when the text says so, else yearly (年度 figures, 每年 申报)."""
    if _QUARTERLY.search(text):
        return PeriodScheme.QUARTERLY
    if _MONTHLY.search(text):
        return PeriodScheme.MONTHLY
    if _ONE_OFF.search(text):
        return PeriodScheme.ONE_OFF
    return PeriodScheme.ANNUAL


def _own_or(own: Category, document: Category) -> Category:
    return own if own is not Category.APPLICATION else document


def eligibility_of(draft: Draft) -> dict[str, Any]:
    """The proposed rule: every condition and manual condition, all required."""
    nodes = [c.rule for c in draft.conditions] + [m.rule for m in draft.manual]
    return {"all": nodes or [{"manual": "请根据政策原文补充享受条件"}]}
