"""The eligibility rule language (条件准入) and its single-pair evaluator.

People write rules in YAML; they are stored as JSON. A rule is a tree of nodes:

    all: [node, ...]        every child must pass
    any: [node, ...]        at least one child must pass
    not: node               the child must fail
    fact: NAME              a comparison over one named fact (models.facts)
      op: eq|ne|gt|gte|lt|lte|in|not_in|prefix|between
      value: ...
    manual: TEXT            a free-text condition no machine can check

Evaluation is three-valued: a condition passes, fails, or is unknown because its
fact is missing, too old or invalid (a stored value outside its kind's type or
range), or because it is manual. `all`/`any`/`not` combine these with Kleene
logic, so a verdict is `eligible` only when it is proven.

A rule is at most MAX_RULE_DEPTH levels deep and MAX_RULE_NODES nodes large, and an
`in`, `not_in` or `prefix` list holds at most MAX_LIST_VALUES values; larger rules are
refused with the path of the offending node before any recursive step reads them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from models.eligibility import ConditionResult, Evaluation, Outcome, UnknownReason, Verdict
from models.facts import (
    CHOICE_LABELS,
    FACT_KINDS,
    FactKind,
    FactType,
    FactValue,
    coerce_fact_value,
)
from models.money import format_yuan

Op = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "prefix", "between"]

MAX_RULE_DEPTH = 12
MAX_RULE_NODES = 500
MAX_LIST_VALUES = 200
MAX_RULE_TEXT = 500  # a manual condition or a label
MAX_PREFIX_LENGTH = 16

_SCALAR_OPS = {"eq", "ne", "gt", "gte", "lt", "lte"}
_LIST_OPS = {"in", "not_in", "prefix"}
_OPS_BY_TYPE: dict[FactType, set[str]] = {
    FactType.INT: _SCALAR_OPS | {"in", "not_in", "between"},
    FactType.DATE: _SCALAR_OPS | {"between"},
    FactType.STR: {"eq", "ne", "in", "not_in", "prefix"},
    FactType.BOOL: {"eq", "ne"},
}
_OP_SYMBOL = {
    "eq": "=",
    "ne": "≠",
    "gt": ">",
    "gte": "≥",
    "lt": "<",
    "lte": "≤",
    "in": "属于",
    "not_in": "不属于",
    "prefix": "以此开头",
    "between": "介于",
}


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Condition(_Node):
    fact: str
    op: Op
    value: Any
    label: str | None = Field(
        default=None, max_length=MAX_RULE_TEXT, description="Chinese wording shown to people"
    )

    @field_validator("fact")
    @classmethod
    def _known_fact(cls, fact: str) -> str:
        if fact not in FACT_KINDS:
            raise ValueError(f"unknown fact '{fact}'")
        return fact

    @field_validator("value")
    @classmethod
    def _value_fits(cls, value: Any, info: ValidationInfo) -> Any:
        fact, op = info.data.get("fact"), info.data.get("op")
        if fact is None or op is None:
            return value  # the fact or op error is reported already
        kind = FACT_KINDS[fact]
        if op not in _OPS_BY_TYPE[kind.type]:
            raise ValueError(f"operator '{op}' does not apply to {kind.type.value} fact '{fact}'")
        if op in _SCALAR_OPS:
            return _coerce(kind, value, op)
        if not isinstance(value, list) or not value:
            raise ValueError(f"operator '{op}' needs a non-empty list")
        if len(value) > MAX_LIST_VALUES:
            raise ValueError(f"operator '{op}' takes at most {MAX_LIST_VALUES} values")
        if op == "prefix":
            if not all(isinstance(v, str) and 0 < len(v) <= MAX_PREFIX_LENGTH for v in value):
                raise ValueError(f"prefixes must be strings of 1 to {MAX_PREFIX_LENGTH} characters")
            return list(value)
        items: list[Any] = [_coerce(kind, v, op) for v in value]
        if op == "between":
            if len(items) != 2:
                raise ValueError("between needs [low, high]")
            low, high = items
            if low > high:
                raise ValueError("between needs low <= high")
        return items


def _coerce(kind: FactKind, raw: Any, op: str) -> FactValue:
    if kind.type is FactType.INT and (isinstance(raw, bool) or not isinstance(raw, int)):
        # Strict, as money is everywhere: a rule states a number, not text that reads as one.
        raise ValueError(f"value for '{kind.name}': must be an integer")
    try:
        value = coerce_fact_value(kind, raw)
    except ValueError as exc:
        raise ValueError(f"value for '{kind.name}': {exc}") from None
    if kind.choices is not None and op in {"gt", "gte", "lt", "lte"}:
        raise ValueError("categorical facts are compared with eq, ne, in or not_in")
    return value


class ManualCondition(_Node):
    manual: str = Field(min_length=1, max_length=MAX_RULE_TEXT)


class AllOf(_Node):
    all: list[RuleNode] = Field(min_length=1)


class AnyOf(_Node):
    any: list[RuleNode] = Field(min_length=1)


class NotRule(_Node):
    not_: RuleNode = Field(alias="not")


def _node_kind(raw: Any) -> str | None:
    if isinstance(raw, BaseModel):
        return type(raw).__name__
    if isinstance(raw, dict):
        for key, tag in (
            ("all", "AllOf"),
            ("any", "AnyOf"),
            ("not", "NotRule"),
            ("manual", "ManualCondition"),
            ("fact", "Condition"),
        ):
            if key in raw:
                return tag
    return None


RuleNode = Annotated[
    Annotated[AllOf, Tag("AllOf")]
    | Annotated[AnyOf, Tag("AnyOf")]
    | Annotated[NotRule, Tag("NotRule")]
    | Annotated[ManualCondition, Tag("ManualCondition")]
    | Annotated[Condition, Tag("Condition")],
    Discriminator(
        _node_kind,
        custom_error_type="invalid_rule_node",
        custom_error_message="a rule node needs one of the keys all, any, not, fact, manual",
    ),
]

for _model in (AllOf, AnyOf, NotRule):
    _model.model_rebuild()

_RULE_ADAPTER: TypeAdapter[RuleNode] = TypeAdapter(RuleNode)
_TAGS = {"AllOf", "AnyOf", "NotRule", "ManualCondition", "Condition"}


@dataclass(frozen=True)
class RuleError:
    path: str
    message: str


class InvalidRule(ValueError):
    def __init__(self, errors: list[RuleError]) -> None:
        super().__init__("; ".join(f"{e.path}: {e.message}" for e in errors))
        self.errors = errors


def format_path(loc: Sequence[int | str], root: str = "") -> str:
    """Render a pydantic error location as `all[2].any[0].value`, without union tags."""
    out = root
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _TAGS:
            continue
        else:
            out += f".{part}" if out else part
    return out or "$"


def check_rule_size(raw: Any, root: str = "") -> None:
    """Refuse a rule deeper than MAX_RULE_DEPTH or larger than MAX_RULE_NODES, walking
    the raw structure without recursion (no depth of input can exhaust the stack)."""
    pending: list[tuple[Any, str, int]] = [(raw, root, 1)]
    nodes = 1
    while pending:
        node, path, depth = pending.pop()
        if not isinstance(node, dict):
            continue
        if depth > MAX_RULE_DEPTH:
            message = f"a rule nests at most {MAX_RULE_DEPTH} levels deep"
            raise InvalidRule([RuleError(path or "$", message)])
        groups = [(key, node[key]) for key in ("all", "any") if isinstance(node.get(key), list)]
        nodes += sum(len(children) for _key, children in groups) + ("not" in node)
        if nodes > MAX_RULE_NODES:
            message = f"a rule has at most {MAX_RULE_NODES} conditions and groups"
            raise InvalidRule([RuleError(root or "$", message)])
        # Pushed in reverse, so that the first offending node in reading order is named.
        if "not" in node:
            pending.append((node["not"], _child(path, "not"), depth + 1))
        for key, children in reversed(groups):
            for i in reversed(range(len(children))):
                pending.append((children[i], _child(path, f"{key}[{i}]"), depth + 1))


def parse_rule(raw: Any, root: str = "") -> RuleNode:
    check_rule_size(raw, root)
    try:
        return _RULE_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise InvalidRule(
            [RuleError(format_path(e["loc"], root), _message(e)) for e in exc.errors()]
        ) from None


def _message(error: Any) -> str:
    msg = str(error["msg"])
    return msg.removeprefix("Value error, ")


def rule_to_json(rule: RuleNode) -> Any:
    return _RULE_ADAPTER.dump_python(rule, mode="json", by_alias=True, exclude_none=True)


# ----- evaluation -----------------------------------------------------------------


@dataclass(frozen=True)
class KnownFact:
    value: FactValue
    period_end: date | None = None  # None for profile facts, which never go stale
    # Why the stored value cannot be used (then `value` is how it reads, shortened):
    # an invalid fact counts as unknown, never as passing.
    invalid: str | None = None


def invalid_fact(raw: object, error: str, period_end: date | None = None) -> KnownFact:
    """A stored value that failed `coerce_fact_value`, kept to be shown and reported."""
    return KnownFact(_shown_raw(raw), period_end, error)


def _shown_raw(raw: object) -> str:
    if isinstance(raw, int) and not isinstance(raw, bool) and raw.bit_length() > 128:
        return f"{'-' if raw < 0 else ''}约{int(raw.bit_length() * 0.30103)}位整数"
    try:
        shown = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        shown = type(raw).__name__
    return shown if len(shown) <= 40 else shown[:39] + "…"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, list):
        return "、".join(_show(v) for v in value)
    return str(value)


def describe(condition: Condition) -> str:
    if condition.label:
        return condition.label
    kind = FACT_KINDS[condition.fact]
    if kind.unit.startswith("分"):  # money reads in 元: 30,000.00元/亩, not 3000000 分/亩
        per = kind.unit[1:]
        value = condition.value
        shown = (
            "、".join(format_yuan(v) + per for v in value)
            if isinstance(value, list)
            else format_yuan(value) + per
        )
        return f"{kind.label} {_OP_SYMBOL[condition.op]} {shown}"
    unit = f" {kind.unit}" if kind.unit else ""
    names = CHOICE_LABELS.get(condition.fact)
    value = condition.value
    if names:
        value = (
            [names.get(v, v) for v in value] if isinstance(value, list) else names.get(value, value)
        )
    return f"{kind.label} {_OP_SYMBOL[condition.op]} {_show(value)}{unit}"


def _child(path: str, segment: str) -> str:
    return f"{path}.{segment}" if path else segment


def evaluate(rule: RuleNode, facts: Mapping[str, KnownFact], as_of: date) -> Evaluation:
    """Evaluate one enterprise's facts against one rule, with a result per leaf."""
    results: list[ConditionResult] = []
    outcome = _eval(rule, facts, as_of, "", results)
    verdict = {
        Outcome.PASS: Verdict.ELIGIBLE,
        Outcome.UNKNOWN: Verdict.POSSIBLY_ELIGIBLE,
        Outcome.FAIL: Verdict.NOT_ELIGIBLE,
    }[outcome]
    return Evaluation(verdict=verdict, conditions=results)


def _eval(
    node: RuleNode,
    facts: Mapping[str, KnownFact],
    as_of: date,
    path: str,
    results: list[ConditionResult],
    negated: bool = False,
) -> Outcome:
    """Return the node's outcome. Under an odd number of `not`s (negated) a leaf reports
    whether its negation holds, so every reported outcome reads toward eligibility."""
    if isinstance(node, AllOf):
        outs = [
            _eval(c, facts, as_of, _child(path, f"all[{i}]"), results, negated)
            for i, c in enumerate(node.all)
        ]
        if Outcome.FAIL in outs:
            return Outcome.FAIL
        return Outcome.UNKNOWN if Outcome.UNKNOWN in outs else Outcome.PASS
    if isinstance(node, AnyOf):
        outs = [
            _eval(c, facts, as_of, _child(path, f"any[{i}]"), results, negated)
            for i, c in enumerate(node.any)
        ]
        if Outcome.PASS in outs:
            return Outcome.PASS
        return Outcome.UNKNOWN if Outcome.UNKNOWN in outs else Outcome.FAIL
    if isinstance(node, NotRule):
        return _flip(
            _eval(node.not_, facts, as_of, _child(path, "not"), results, not negated), True
        )
    leaf_path = path or "$"
    if isinstance(node, ManualCondition):
        results.append(
            ConditionResult(
                path=leaf_path,
                description=node.manual,
                outcome=Outcome.UNKNOWN,
                reason=UnknownReason.MANUAL,
            )
        )
        return Outcome.UNKNOWN
    outcome, reason, actual = _compare(node, facts, as_of)
    reported = _flip(outcome, negated)
    results.append(
        ConditionResult(
            path=leaf_path,
            description=("并非：" if negated else "") + describe(node),
            outcome=reported,
            fact=node.fact,
            expected=node.value,
            actual=actual,
            reason=reason,
        )
    )
    return outcome


def _flip(outcome: Outcome, flip: bool) -> Outcome:
    if not flip:
        return outcome
    return {Outcome.PASS: Outcome.FAIL, Outcome.FAIL: Outcome.PASS}.get(outcome, outcome)


def is_stale(kind: FactKind, known: KnownFact, as_of: date) -> bool:
    if kind.max_age_days is None or known.period_end is None:
        return False
    return known.period_end < as_of - timedelta(days=kind.max_age_days)


def _compare(
    cond: Condition, facts: Mapping[str, KnownFact], as_of: date
) -> tuple[Outcome, UnknownReason | None, FactValue | None]:
    known = facts.get(cond.fact)
    if known is None:
        return Outcome.UNKNOWN, UnknownReason.MISSING, None
    if known.invalid is not None:
        return Outcome.UNKNOWN, UnknownReason.INVALID, known.value
    if is_stale(FACT_KINDS[cond.fact], known, as_of):
        return Outcome.UNKNOWN, UnknownReason.STALE, known.value
    ok = compare_value(cond.op, known.value, cond.value)
    return (Outcome.PASS if ok else Outcome.FAIL), None, known.value


def compare_value(op: str, actual: Any, expected: Any) -> bool:
    match op:
        case "eq":
            return bool(actual == expected)
        case "ne":
            return bool(actual != expected)
        case "gt":
            return bool(actual > expected)
        case "gte":
            return bool(actual >= expected)
        case "lt":
            return bool(actual < expected)
        case "lte":
            return bool(actual <= expected)
        case "in":
            return actual in expected
        case "not_in":
            return actual not in expected
        case "prefix":
            return any(str(actual).startswith(p) for p in expected)
        case "between":
            return bool(expected[0] <= actual <= expected[1])
    raise ValueError(f"unknown operator {op}")
