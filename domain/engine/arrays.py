"""The matching engine: every item's rules over every firm's facts, as array operations.

`domain.engine.rules.evaluate` is the reference: one firm, one rule, with a readable reason
per condition. This module computes the same verdicts for many firms at once. The
facts live in a column-per-kind `FactTable` (integers, dictionary codes for text,
day ordinals for dates, a `present` mask and the period end for staleness), and a
rule becomes numpy operations over those columns.

Three-valued logic is kept as two boolean masks per node:

    P  the node passes           (proven)
    M  the node may pass         (not proven to fail: pass or unknown)

so that for a leaf with a fresh fact `P = fresh & holds`, `M = ~fresh | holds`, and
Kleene's connectives become plain mask algebra: all = (ΠP, ΠM), any = (ΣP, ΣM),
not = (~M, ~P). A verdict is eligible where P, possibly eligible where M & ~P, and
not eligible where ~M. Identical leaves across items are computed once.

For one firm (a fact changed, a firm asks "what is there for me") `RowEvaluator`
runs the same semantics over plain Python values, without building arrays.
Both agree with `domain.engine.rules.evaluate` exactly: tests/test_matching.py proves it
with generated rules and firms.

Bad data never stops a run for everyone else. A stored fact that fails its kind's
type or range is kept aside in its column (`FactColumn.invalid`) and counts as
missing, so its conditions are unknown (reason `invalid`) for that firm alone. Each
condition and each item is computed in isolation: one that raises is reported as an
`ItemFailure` for the items it belongs to, and the others finish.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import json
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from domain.engine.amounts import (
    AmountRule,
    FixedAmount,
    Rounding,
    TieredAmount,
    amount_fen_of,
)
from domain.engine.rules import (
    AllOf,
    AnyOf,
    Condition,
    KnownFact,
    ManualCondition,
    NotRule,
    RuleNode,
    compare_value,
    is_stale,
)
from models.eligibility import Outcome, Verdict
from models.facts import FACT_KINDS, MAX_TEXT_LENGTH, FactKind, FactType, FactValue
from models.money import MAX_FEN

Mask = npt.NDArray[np.bool_]
Bits = npt.NDArray[np.uint8]  # a mask packed 8 firms to the byte
Ints = npt.NDArray[np.int64]
Rows = npt.NDArray[np.int32]

OUTCOME_CODE = {Outcome.PASS: "P", Outcome.FAIL: "F", Outcome.UNKNOWN: "U"}
_MISSING = -1
# A numeric fact with at least this many distinct conditions in a run is compared in
# buckets (`Buckets`), if its conditions have few enough breakpoints.
BUCKETED_FROM = 8
_MAX_BUCKETS = 256  # codes fit in one byte


# ----- facts as columns ----------------------------------------------------------------


@dataclass
class FactColumn:
    """One fact kind for every firm. Text is stored as codes into `dictionary`."""

    kind: FactKind
    values: Ints
    present: Mask
    period_end: npt.NDArray[np.int32] | None  # day ordinals; None for profile facts
    dictionary: list[str] = field(default_factory=list)
    # Rows whose stored value failed validation (not `present`: they read as unknown).
    invalid: dict[int, KnownFact] = field(default_factory=dict)

    def code_of(self, text: str) -> int:
        try:
            return self.dictionary.index(text)
        except ValueError:
            return _MISSING


class FactTable:
    """Every firm's current facts, one column per fact kind, one row per firm."""

    def __init__(self, uscc: Sequence[str], columns: dict[str, FactColumn]) -> None:
        self.uscc = list(uscc)
        self.row_of = {u: i for i, u in enumerate(self.uscc)}
        self.columns = columns
        self._onehot: dict[str, Bits] = {}
        self._sorted: dict[str, tuple[Ints, Ints]] = {}

    def __len__(self) -> int:
        return len(self.uscc)

    @classmethod
    def build(cls, firms: Iterable[tuple[str, Mapping[str, KnownFact]]]) -> FactTable:
        """From (credit code, facts) pairs, as `registry.enterprises.known_facts` gives them."""
        builder = FactTableBuilder()
        for uscc, facts in firms:
            row = builder.add_firm(uscc)
            for name, known in facts.items():
                builder.add(row, name, known)
        return builder.finish()

    def onehot(self, fact: str) -> Bits:
        """For a text fact, one packed mask per dictionary entry (row c: firms whose
        value is entry c), so a set of values is an OR of a few rows."""
        cached = self._onehot.get(fact)
        if cached is None:
            column = self.columns[fact]
            rows = [np.packbits(column.values == c) for c in range(len(column.dictionary))]
            cached = np.stack(rows) if rows else np.zeros((0, (len(self) + 7) // 8), np.uint8)
            self._onehot[fact] = cached
        return cached

    def holds(self, condition: Condition) -> Bits:
        """Packed: where the comparison holds. Meaningless where the fact is not fresh."""
        column = self.columns[condition.fact]
        values, op, expected = column.values, condition.op, condition.value
        if column.kind.type is FactType.STR:
            # Decide on the (small) dictionary, then OR the matching entries' masks.
            onehot = self.onehot(condition.fact)
            chosen = [
                code
                for code, text in enumerate(column.dictionary)
                if compare_value(op, text, expected)
            ]
            return (
                np.bitwise_or.reduce(onehot[chosen], axis=0)
                if chosen
                else np.zeros(onehot.shape[1], dtype=np.uint8)
            )
        return np.packbits(_compare(values, condition, column.kind))

    def sorted_values(self, fact: str) -> tuple[Ints, Ints]:
        """A numeric fact's rows in the order of their values, and the values in that
        order (computed once per table, as an index is)."""
        cached = self._sorted.get(fact)
        if cached is None:
            values = self.columns[fact].values
            order = np.argsort(values, kind="stable")
            cached = self._sorted[fact] = (order, values[order])
        return cached

    def known_facts(self, row: int) -> dict[str, KnownFact]:
        """One firm's facts back in the single-pair evaluator's form."""
        out: dict[str, KnownFact] = {}
        for name, column in self.columns.items():
            if not column.present[row]:
                if column.invalid and row in column.invalid:
                    out[name] = column.invalid[row]
                continue
            end = None
            if column.period_end is not None and column.period_end[row]:
                end = date.fromordinal(int(column.period_end[row]))
            out[name] = KnownFact(_decode(column, int(column.values[row])), end)
        return out

    def subset(self, rows: Sequence[int]) -> FactTable:
        index = np.asarray(rows, dtype=np.int64)
        spoilt = any(c.invalid for c in self.columns.values())
        position = {old: new for new, old in enumerate(rows)} if spoilt else {}
        return FactTable(
            [self.uscc[i] for i in rows],
            {
                name: FactColumn(
                    c.kind,
                    c.values[index],
                    c.present[index],
                    None if c.period_end is None else c.period_end[index],
                    c.dictionary,
                    {position[o]: known for o, known in c.invalid.items() if o in position},
                )
                for name, c in self.columns.items()
            },
        )

    def patched(self, fresh: FactTable, gone: Iterable[str]) -> FactTable:
        """A new table: this one with the rows of `fresh` (the same firms' facts read
        again) in place of their own, its firms that this table lacks added, and the
        firms of `gone` (no longer in the registry) left out; where firms were added
        or left, in credit-code order, as a whole read gives them (a match run's
        comparison with the stored rows depends on it). This table is left as it is,
        for whoever still reads it."""
        targets = np.fromiter((self.row_of.get(u, -1) for u in fresh.uscc), np.int64)
        added = [u for u, row in zip(fresh.uscc, targets.tolist(), strict=True) if row < 0]
        targets[targets < 0] = np.arange(len(self), len(self) + len(added))
        n = len(self) + len(added)
        into = set(targets.tolist())
        columns = {}
        for name, column in self.columns.items():
            new = fresh.columns[name]
            values = np.full(n, _MISSING, dtype=np.int64)
            values[: len(self)] = column.values
            dictionary = column.dictionary
            fresh_values = new.values
            if column.kind.type is FactType.STR:  # the fresh codes into this dictionary
                dictionary = list(dictionary)
                code = {text: c for c, text in enumerate(dictionary)}
                for text in new.dictionary:
                    if text not in code:
                        code[text] = len(dictionary)
                        dictionary.append(text)
                recode = np.fromiter(map(code.__getitem__, new.dictionary), np.int64)
                known = new.values >= 0
                fresh_values = new.values.copy()
                fresh_values[known] = recode[new.values[known]]
            values[targets] = fresh_values
            present = np.zeros(n, dtype=np.bool_)
            present[: len(self)] = column.present
            present[targets] = new.present
            period_end = None
            if column.period_end is not None and new.period_end is not None:
                period_end = np.zeros(n, dtype=np.int32)
                period_end[: len(self)] = column.period_end
                period_end[targets] = new.period_end
            invalid = {row: k for row, k in column.invalid.items() if row not in into}
            invalid.update((int(targets[row]), k) for row, k in new.invalid.items())
            columns[name] = FactColumn(
                column.kind, values, present, period_end, dictionary, invalid
            )
        table = FactTable([*self.uscc, *added], columns)
        leaving = {table.row_of[u] for u in gone if u in table.row_of}
        if not leaving and not added:
            return table
        staying = (row for row in range(n) if row not in leaving)
        return table.subset(sorted(staying, key=table.uscc.__getitem__))

    def invalid_facts(self) -> list[tuple[str, str, KnownFact]]:
        """(credit code, fact kind, the invalid fact) of every stored value that failed
        validation, by firm."""
        found = [
            (self.uscc[row], name, known)
            for name, column in self.columns.items()
            for row, known in column.invalid.items()
        ]
        return sorted(found, key=lambda f: (f[0], f[1]))


class FactTableBuilder:
    """Fills a FactTable firm by firm and fact by fact, in any order, without holding
    a dictionary per firm (a full run reads millions of facts)."""

    def __init__(self) -> None:
        self.uscc: list[str] = []
        self.row_of: dict[str, int] = {}
        self._columns = {name: _ColumnBuilder(kind) for name, kind in FACT_KINDS.items()}

    def add_firm(self, uscc: str) -> int:
        row = self.row_of[uscc] = len(self.uscc)
        self.uscc.append(uscc)
        return row

    def add(self, row: int, name: str, known: KnownFact) -> None:
        column = self._columns[name]
        if known.invalid is not None:
            column.invalid[row] = known
        else:
            column.add(row, known)

    def add_stored(self, row: int, name: str, stored: str | None, end: date | None) -> bool:
        """A stored fact (its JSON text) added without an object for it, where it is
        plainly valid; False where `domain.registry.enterprises.read_fact` must decide."""
        return self._columns[name].add_stored(row, stored, end)

    def add_firms(self, usccs: Sequence[str]) -> Ints:
        """`add_firm` of many: their rows."""
        start = len(self.uscc)
        self.uscc.extend(usccs)
        self.row_of.update(zip(usccs, range(start, len(self.uscc)), strict=True))
        return np.arange(start, len(self.uscc), dtype=np.int64)

    def add_texts(self, name: str, rows: Ints, texts: Sequence[str]) -> None:
        """`add` of a text fact without a period (a profile's) to many rows."""
        codes = self._columns[name].codes
        for text in set(texts):
            codes.setdefault(text, len(codes))
        values = np.fromiter(map(codes.__getitem__, texts), np.int64, len(texts))
        self.add_many(name, rows, values, np.zeros(len(rows), dtype=np.int32))

    def plain_many(self, name: str, stored: Sequence[str]) -> tuple[Ints, Mask]:
        """`add_stored`'s reading of many texts of one kind, without adding them: each
        one's column value, and whether it is plainly valid."""
        return self._columns[name].plain_many(stored)

    def add_many(self, name: str, rows: Ints, values: Ints, ends: npt.NDArray[np.int32]) -> None:
        """Add plain values of one kind (from `plain_many`) to these rows at once;
        `ends` as day ordinals, 0 for none."""
        self._columns[name].add_many(rows, values, ends)

    def finish(self) -> FactTable:
        n = len(self.uscc)
        return FactTable(self.uscc, {name: b.finish(n) for name, b in self._columns.items()})


_JSON_BOOLS = {"true": 1, "false": 0}


class _ColumnBuilder:
    """Collects one fact kind in compact arrays (300,000 firms × 20 kinds would be
    millions of Python objects in lists)."""

    def __init__(self, kind: FactKind) -> None:
        self.kind = kind
        self.rows = array("q")
        self.values = array("q")
        self.ends = array("i")
        self.codes: dict[str, int] = {}
        self.invalid: dict[int, KnownFact] = {}

    def add(self, row: int, known: KnownFact) -> None:
        self.rows.append(row)
        value = known.value
        if self.kind.type is FactType.STR:
            self.values.append(self.codes.setdefault(str(value), len(self.codes)))
        elif isinstance(value, date):
            self.values.append(value.toordinal())
        else:
            self.values.append(int(value))
        self.ends.append(known.period_end.toordinal() if known.period_end else 0)

    def add_stored(self, row: int, stored: str | None, end: date | None) -> bool:
        """`add` of what reading `stored` as JSON and checking it against the kind
        gives, for the values a full run reads millions of (integers, true and false,
        plain strings), at a fraction of the cost; False for anything else (dates,
        escapes, out of range, not JSON), which the full reading decides and explains."""
        value = self.plain(stored)
        if value is None:
            return False
        self.rows.append(row)
        self.values.append(value)
        self.ends.append(end.toordinal() if end else 0)
        return True

    def plain(self, stored: str | None) -> int | None:
        """The column's value for a plainly valid stored text (text: its code, made
        here); None where the full reading must decide."""
        if not stored:
            return None
        kind = self.kind
        if kind.type is FactType.INT:
            digits = stored[1:] if stored[0] == "-" else stored
            if (
                not digits
                or len(digits) > 18
                or not (digits.isascii() and digits.isdigit())
                or (digits[0] == "0" and len(digits) > 1)  # not JSON
                or kind.minimum is None
                or kind.maximum is None
            ):
                return None
            value = int(stored)
            return value if kind.minimum <= value <= kind.maximum else None
        if kind.type is FactType.BOOL:
            return _JSON_BOOLS.get(stored)
        if kind.type is FactType.STR:
            text = stored[1:-1]
            if (
                len(stored) < 3
                or stored[0] != '"'
                or stored[-1] != '"'
                or "\\" in text
                or '"' in text
                or not text.isprintable()  # JSON has no raw control characters
                or text != text.strip()
                or len(text) > MAX_TEXT_LENGTH
                or (kind.choices is not None and text not in kind.choices)
            ):
                return None
            return self.codes.setdefault(text, len(self.codes))
        return None

    def plain_many(self, stored: Sequence[str]) -> tuple[Ints, Mask]:
        """`plain` of many texts at once: the values, and where each is plain. Numbers
        are checked as arrays of their characters (a few hundred thousand per kind
        in a full run, too many to check one by one); other kinds have few distinct
        texts, each checked once."""
        if self.kind.type is FactType.INT:
            return _plain_ints(stored, self.kind)
        read = {text: self.plain(text) for text in set(stored)}
        value_of = {text: value or 0 for text, value in read.items()}
        plain_of = {text: value is not None for text, value in read.items()}
        n = len(stored)
        values = np.fromiter(map(value_of.__getitem__, stored), np.int64, n)
        return values, np.fromiter(map(plain_of.__getitem__, stored), np.bool_, n)

    def add_many(self, rows: Ints, values: Ints, ends: npt.NDArray[np.int32]) -> None:
        """`add` of many plain values (as `plain_many` gives them) at once."""
        self.rows.frombytes(rows.astype(np.int64).tobytes())
        self.values.frombytes(values.astype(np.int64).tobytes())
        self.ends.frombytes(ends.astype(np.int32).tobytes())

    def finish(self, n: int) -> FactColumn:
        index = np.frombuffer(self.rows, dtype=np.int64)
        present = np.zeros(n, dtype=np.bool_)
        values = np.full(n, _MISSING, dtype=np.int64)
        if self.kind.absent is not None:  # no record is knowledge (models.facts.FactKind)
            values[:] = int(self.kind.absent)
            present[:] = True
            present[list(self.invalid)] = False  # an invalid record spoils its fact
        present[index] = True
        values[index] = np.frombuffer(self.values, dtype=np.int64)
        period_end = None
        if not self.kind.profile:
            period_end = np.zeros(n, dtype=np.int32)
            period_end[index] = np.frombuffer(self.ends, dtype=np.int32)
        return FactColumn(self.kind, values, present, period_end, list(self.codes), self.invalid)


_DIGITS = 18  # at most: beyond, an integer may not fit in int64 (the full reading decides)
_ZERO, _NINE, _MINUS = ord("0"), ord("9"), ord("-")


def _plain_ints(stored: Sequence[str], kind: FactKind) -> tuple[Ints, Mask]:
    """`_ColumnBuilder.plain` of integer texts, as arrays: an optional minus, then 1 to
    18 ASCII digits without a leading zero, within the kind's range."""
    n = len(stored)
    width = _DIGITS + 1
    lengths = np.fromiter(map(len, stored), np.int64, n)
    plain = (lengths >= 1) & (lengths <= width)
    if kind.minimum is None or kind.maximum is None:
        plain[:] = False
    texts = np.asarray(stored, dtype=f"<U{width}")  # longer ones cut, but not plain
    chars = texts.view(np.uint32).reshape(n, width)
    padding = chars == 0
    negative = chars[:, 0] == _MINUS
    allowed = ((chars >= _ZERO) & (chars <= _NINE)) | padding
    allowed[:, 0] |= negative
    plain &= allowed.all(axis=1)
    plain &= width - padding.sum(axis=1) == lengths  # no NUL inside the text
    digits = lengths - negative
    plain &= (digits >= 1) & (digits <= _DIGITS)
    first = np.where(negative, chars[:, 1], chars[:, 0])
    plain &= ~((first == _ZERO) & (digits > 1))  # a leading zero is not JSON
    values = np.zeros(n, dtype=np.int64)
    values[plain] = texts[plain].astype(np.int64)
    if kind.minimum is not None and kind.maximum is not None:
        plain &= (values >= kind.minimum) & (values <= kind.maximum)
    return values, plain


def _compare(values: Ints, condition: Condition, kind: FactKind) -> Mask:
    """Where a numeric condition's comparison holds over `values`."""
    op, expected = condition.op, condition.value
    match op:
        case "eq":
            return np.equal(values, _as_int(expected))
        case "ne":
            return np.not_equal(values, _as_int(expected))
        case "gt":
            return values > _as_int(expected)
        case "gte":
            return values >= _as_int(expected)
        case "lt":
            return values < _as_int(expected)
        case "lte":
            return values <= _as_int(expected)
        case "in" | "not_in":
            mask = np.zeros(len(values), dtype=np.bool_)
            for wanted in expected:
                mask |= values == _as_int(wanted)
            return ~mask if op == "not_in" else mask
        case "between":
            low, high = (_as_int(v) for v in expected)
            return (values >= low) & (values <= high)
    raise ValueError(f"operator {op} does not apply to {kind.name}")


def _decode(column: FactColumn, value: int) -> FactValue:
    match column.kind.type:
        case FactType.STR:
            return column.dictionary[value]
        case FactType.DATE:
            return date.fromordinal(value)
        case FactType.BOOL:
            return bool(value)
    return value


# ----- rules as mask algebra -------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    """A condition as `domain.engine.rules.evaluate` reports it: path and negation parity."""

    path: str
    node: Condition | ManualCondition
    negated: bool


def leaves(rule: RuleNode) -> list[Leaf]:
    """The rule's conditions in the order `domain.engine.rules.evaluate` reports them."""
    out: list[Leaf] = []

    def walk(node: RuleNode, path: str, negated: bool) -> None:
        if isinstance(node, AllOf):
            for i, child in enumerate(node.all):
                walk(child, _child(path, f"all[{i}]"), negated)
        elif isinstance(node, AnyOf):
            for i, child in enumerate(node.any):
                walk(child, _child(path, f"any[{i}]"), negated)
        elif isinstance(node, NotRule):
            walk(node.not_, _child(path, "not"), not negated)
        else:
            out.append(Leaf(path or "$", node, negated))

    walk(rule, "", False)
    return out


def _child(path: str, segment: str) -> str:
    return f"{path}.{segment}" if path else segment


def condition_key(condition: Condition) -> str:
    try:
        value = json.dumps(condition.value, default=str)
    except ValueError:  # e.g. a circular or absurdly long value: distinct all the same
        value = f"{type(condition.value).__name__}@{id(condition.value)}"
    return f"{condition.fact}\x1f{condition.op}\x1f{value}"


class EvaluationError(Exception):
    """A condition or an item the engine could not evaluate."""


def failure_message(exc: BaseException) -> str:
    """An error as it is recorded and shown (bounded: an error may quote its input)."""
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 500 else text[:499] + "…"


def _breakpoints(condition: Condition) -> list[int]:
    """Where a condition on an integer value may change its answer: at each of its
    constants c, and at c + 1."""
    values = condition.value if isinstance(condition.value, list) else [condition.value]
    return [point for value in values for point in (_as_int(value), _as_int(value) + 1)]


def _representatives(breakpoints: list[int]) -> Ints:
    """A value in each bucket the sorted breakpoints cut (bucket i holds
    B[i-1] <= v < B[i]): the first bucket's is below every breakpoint."""
    return np.asarray([breakpoints[0] - 1, *breakpoints], dtype=np.int64)


class Buckets:
    """A numeric fact's values as one byte per firm, for one run's conditions on it.

    Every condition on an integer value changes its answer only at its constants c
    (at c or c + 1: `gte c` at c, `gt c` at c + 1, `eq c` at both). Sorted, those
    breakpoints B cut the values into buckets (bucket i holds B[i-1] <= v < B[i]) in
    which every one of the conditions gives one answer. So a condition is decided once
    per bucket, on a value of it, and becomes a comparison over the bucket codes: a
    byte per firm read instead of eight (the compare is bound by memory)."""

    def __init__(self, codes: npt.NDArray[np.uint8], breakpoints: list[int]) -> None:
        self.codes = codes
        self.breakpoints = frozenset(breakpoints)
        self.representatives = _representatives(breakpoints)

    def cover(self, condition: Condition) -> bool:
        """Whether the buckets were cut for this condition (a condition of another run
        on the same context may change its answer inside a bucket)."""
        return all(point in self.breakpoints for point in _breakpoints(condition))

    @classmethod
    def of(cls, table: FactTable, fact: str, conditions: Sequence[Condition]) -> Buckets | None:
        """The buckets for these conditions, or None where there would be too many (or
        a constant is beyond what int64 holds with room)."""
        points = {point for condition in conditions for point in _breakpoints(condition)}
        if len(points) >= _MAX_BUCKETS or any(abs(p) >= 2**62 for p in points):
            return None
        breakpoints = sorted(points)
        order, ordered = table.sorted_values(fact)
        # In value order, the firms of bucket i run from the first value >= B[i-1]
        # to the last one < B[i].
        starts = np.searchsorted(ordered, breakpoints, side="left")
        sizes = np.diff(np.concatenate(([0], starts, [len(ordered)])))
        codes = np.empty(len(ordered), dtype=np.uint8)
        codes[order] = np.repeat(np.arange(len(breakpoints) + 1, dtype=np.uint8), sizes)
        return cls(codes, breakpoints)

    def holds(self, condition: Condition, kind: FactKind) -> Mask:
        """Where the condition holds, from its answer per bucket."""
        answer = _compare(self.representatives, condition, kind)
        # Python ints, so that the comparisons stay in bytes (a numpy int64 would widen them).
        edges = np.flatnonzero(np.diff(answer.view(np.int8))).tolist()
        codes = self.codes
        mask: Mask
        if not edges:  # the same answer for every value
            mask = np.full(len(codes), bool(answer[0]))
        elif len(edges) == 1:  # one step: a threshold on the codes
            mask = codes <= edges[0] if answer[0] else codes > edges[0]
        elif len(edges) == 2 and not answer[0]:  # one run of buckets
            mask = (codes > edges[0]) & (codes <= edges[1])
        else:
            mask = answer[codes]
        return mask


class MaskContext:
    """Evaluates rules over one FactTable on one day, sharing leaves between rules.

    Masks are bit-packed (`np.packbits`): one bit per firm, so that combining two
    masks over 300,000 firms touches 37.5 kB rather than 300 kB."""

    def __init__(self, table: FactTable, as_of: date, bucketed_from: int = BUCKETED_FROM) -> None:
        self.table = table
        self.size = len(table)
        self.as_of = as_of
        self.bucketed_from = bucketed_from  # conditions on a numeric fact (see `Buckets`)
        self._fresh: dict[str, Bits] = {}
        self._buckets: dict[str, Buckets] = {}
        self._leaves: dict[str, tuple[Bits, Bits]] = {}
        self._negated: dict[str, tuple[Bits, Bits]] = {}
        self._failed: dict[str, str] = {}  # condition key -> why it could not be computed
        self.valid = np.packbits(np.ones(self.size, dtype=np.bool_))  # padding bits are 0
        self._none = np.zeros_like(self.valid)

    def verdict_bits(self, plan: RowPlan) -> tuple[Bits, Bits]:
        """An item's verdict for every firm, from its compiled rule: (passes, may
        pass), packed."""
        p, m = self._masks(plan.tree)
        return p & self.valid, m & self.valid

    def _masks(self, node: PlanNode) -> tuple[Bits, Bits]:
        """(P, M) of a node, packed: passes, and may pass. Padding bits are arbitrary;
        `verdict_bits` clears them."""
        kind = node[0]
        if kind == _ALL_CONDITIONS:  # the common case: conditions, some negated
            terms = node[1]
            p, m = self._term(*terms[0])
            for term in terms[1:]:
                tp, tm = self._term(*term)
                p, m = p & tp, m & tm
            return p, m
        if kind == _CONDITION:
            return self.leaf(node[2], node[1])
        if kind in (_ALL, _ANY):
            combine = np.bitwise_and if kind == _ALL else np.bitwise_or
            p, m = self._masks(node[1][0])
            for child in node[1][1:]:
                cp, cm = self._masks(child)
                p, m = combine(p, cp), combine(m, cm)
            return p, m
        if kind == _NOT:
            p, m = self._masks(node[1])
            return ~m, ~p
        return self._none, self.valid  # a manual condition: unknown

    def _term(self, key: str, condition: Condition, negated: bool) -> tuple[Bits, Bits]:
        """A condition's masks, or its negation's (computed once: many items share
        "not blacklisted")."""
        if not negated:
            return self.leaf(condition, key)
        cached = self._negated.get(key)
        if cached is None:
            p, m = self.leaf(condition, key)
            cached = self._negated[key] = (~m, ~p)
        return cached

    def leaf(self, condition: Condition, key: str | None = None) -> tuple[Bits, Bits]:
        """A condition's masks (`key`, its `condition_key`, where the caller has it)."""
        key = key or condition_key(condition)
        cached = self._leaves.get(key)
        if cached is None:
            if key in self._failed:
                raise EvaluationError(self._failed[key])
            fresh = self.fresh(condition.fact)
            buckets = self._buckets.get(condition.fact)
            if buckets is None or not buckets.cover(condition):
                holds = self.table.holds(condition)
            else:
                holds = np.packbits(buckets.holds(condition, FACT_KINDS[condition.fact]))
            cached = (fresh & holds, ~fresh | holds)
            self._leaves[key] = cached
        return cached

    def prepare(self, plans: Iterable[RowPlan], threads: int) -> None:
        """Compute the conditions of these items now, spread over `threads`."""
        wanted = {key: c for plan in plans for key, c in plan.conditions}
        todo = [(k, c) for k, c in wanted.items() if k not in self._leaves]
        by_fact: dict[str, list[Condition]] = {}
        for _, condition in todo:
            by_fact.setdefault(condition.fact, []).append(condition)
        for fact, on_fact in by_fact.items():
            self._isolated(self.fresh, fact)
            column = self.table.columns.get(fact)
            if column is None:
                continue
            if column.kind.type is FactType.STR:
                self._isolated(self.table.onehot, fact)
            elif len(on_fact) >= self.bucketed_from and fact not in self._buckets:
                self._isolated(functools.partial(self._bucket, conditions=on_fact), fact)
        if threads <= 1 or len(todo) < 2 * threads:
            self._prepare_leaves(todo)
            return
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(self._prepare_leaves, _split(todo, threads)))

    def _prepare_leaves(self, conditions: Sequence[tuple[str, Condition]]) -> None:
        """A condition that cannot be computed fails the items that use it, not the run."""
        for key, condition in conditions:
            try:
                self.leaf(condition, key)
            except Exception as exc:  # isolation boundary: one condition, whatever went wrong
                what = f"condition {condition.fact} {condition.op}: {failure_message(exc)}"
                self._failed[key] = what

    def _bucket(self, fact: str, conditions: Sequence[Condition]) -> None:
        buckets = Buckets.of(self.table, fact, conditions)
        if buckets is not None:
            self._buckets[fact] = buckets

    @staticmethod
    def _isolated(compute: Callable[[str], object], fact: str) -> None:
        # Warming a cache only: a failure shows again, isolated, in `_prepare_leaf`.
        with contextlib.suppress(Exception):
            compute(fact)

    def fresh(self, fact: str) -> Bits:
        """Present and not too old on `as_of` (the evaluator's missing/stale rules)."""
        bits = self._fresh.get(fact)
        if bits is None:
            column = self.table.columns[fact]
            mask = column.present
            kind = column.kind
            if kind.max_age_days is not None and column.period_end is not None:
                oldest = (self.as_of - timedelta(days=kind.max_age_days)).toordinal()
                mask = mask & (column.period_end >= oldest)
            bits = np.packbits(mask)
            self._fresh[fact] = bits
        return bits

    def leaf_outcomes(self, rule: RuleNode, rows: Rows) -> list[str]:
        """For each of `rows`, one letter per leaf (P pass, F fail, U unknown), in the
        order and with the negation `domain.engine.rules.evaluate` reports them."""
        if not len(rows):
            return []
        columns = []
        for leaf in leaves(rule):
            if isinstance(leaf.node, ManualCondition):
                p = np.zeros(len(rows), dtype=np.bool_)
                m = np.ones(len(rows), dtype=np.bool_)
            else:
                lp, lm = self.leaf(leaf.node)
                p = np.unpackbits(lp, count=self.size).view(np.bool_)[rows]
                m = np.unpackbits(lm, count=self.size).view(np.bool_)[rows]
                if leaf.negated:
                    p, m = ~m, ~p
            columns.append(np.where(p, b"P", np.where(m, b"U", b"F")).astype("S1"))
        codes = np.ascontiguousarray(np.stack(columns, axis=1))
        return [row.decode() for row in codes.view(f"S{codes.shape[1]}").ravel()]


def unpack(bits: Bits, size: int) -> Mask:
    return np.unpackbits(bits, count=size).view(np.bool_)


def _split(items: Sequence[Any], parts: int) -> list[Sequence[Any]]:
    return [items[i::parts] for i in range(parts)]


def _as_int(value: Any) -> int:
    if isinstance(value, date):
        return value.toordinal()
    return int(value)


# ----- amounts as arrays -------------------------------------------------------------------


def amounts(rule: AmountRule, table: FactTable, rows: Rows) -> tuple[Ints, Mask]:
    """The amount for each of `rows`, and whether it could be computed (the fact is
    present), exactly as `domain.engine.amounts.compute_amount` rounds it."""
    n = len(rows)
    if isinstance(rule, FixedAmount):
        return np.full(n, rule.amount_fen, dtype=np.int64), np.ones(n, dtype=np.bool_)
    column = table.columns[rule.fact]
    base, known = column.values[rows], column.present[rows]
    if isinstance(rule, TieredAmount):
        thresholds = np.asarray([t.at_least for t in rule.tiers], dtype=np.int64)
        prizes = np.asarray([0] + [t.amount_fen for t in rule.tiers], dtype=np.int64)
        reached = np.searchsorted(thresholds, base, side="right")
        return prizes[reached], known
    amount = _rate(base, rule.rate, rule.rounding)
    amount = np.maximum(amount, 0)
    if rule.floor_fen is not None:
        amount = np.maximum(amount, rule.floor_fen)
    if rule.cap_fen is not None:
        amount = np.minimum(amount, rule.cap_fen)
    return amount, known


def _rate(base: Ints, rate: Decimal, rounding: Rounding) -> Ints:
    """base × rate rounded to whole fen, in exact integer arithmetic."""
    num, den = rate.as_integer_ratio()
    biggest = int(np.abs(base).max()) if len(base) else 0
    if biggest * num >= 2**62:  # would overflow int64: exact Python integers instead
        product: npt.NDArray[Any] = base.astype(object) * num
    else:
        product = base * num
    sign = np.where(product < 0, -1, 1)
    magnitude = np.abs(product)
    quotient = magnitude // den
    remainder = magnitude - quotient * den
    match rounding:
        case Rounding.HALF_UP:
            quotient = quotient + (2 * remainder >= den)
        case Rounding.HALF_EVEN:
            quotient = quotient + (
                (2 * remainder > den) | ((2 * remainder == den) & (quotient % 2 == 1))
            )
        case Rounding.UP:
            quotient = quotient + (remainder > 0)
        case Rounding.DOWN:
            pass
    if quotient.dtype == object:
        # Beyond MAX_FEN only before a cap (a rule without one cannot get there):
        # clamping here changes no amount and keeps the cast to int64 exact.
        quotient = np.minimum(quotient, MAX_FEN)
    result: Ints = (sign * quotient).astype(np.int64)
    return result


def exact_sum(amounts: Ints) -> int:
    """The sum of amounts (each 0..MAX_FEN), exact where int64 would overflow (more
    than about 9,000 amounts of the largest size)."""
    if not len(amounts) or int(amounts.max()) * len(amounts) < 2**63:
        return int(amounts.sum())
    return sum(amounts.tolist())


# ----- the full run ----------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledItem:
    item_code: str
    version: int
    rule: RuleNode
    amount_rule: AmountRule
    # The rule as one firm's evaluator walks it, compiled once with the item.
    plan: RowPlan = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "plan", plan_of(self.rule))


@dataclass
class ItemMatches:
    """One item version against every firm of a table: the verdict of every pair as
    two packed masks, and the amount of every eligible pair."""

    item: CompiledItem
    size: int
    passes: Bits  # eligible
    may_pass: Bits  # eligible or possibly eligible
    eligible_amounts: Ints  # one per eligible firm, in row order
    eligible_amount_known: Mask  # False where the amount's fact is missing

    @property
    def eligible_count(self) -> int:
        return int(np.bitwise_count(self.passes).sum())

    @property
    def matched_count(self) -> int:
        return int(np.bitwise_count(self.may_pass).sum())

    @property
    def possible_count(self) -> int:
        return self.matched_count - self.eligible_count

    def eligible_rows(self) -> Rows:
        return np.flatnonzero(unpack(self.passes, self.size)).astype(np.int32)

    def matched(self, table: FactTable) -> MatchedRows:
        """Every eligible or possibly eligible firm with its verdict and amount (the
        rows the match library stores)."""
        rows = np.flatnonzero(unpack(self.may_pass, self.size)).astype(np.int32)
        eligible = unpack(self.passes, self.size)[rows]
        amount, known = amounts(self.item.amount_rule, table, rows)
        return MatchedRows(rows, eligible, amount, known)


@dataclass(frozen=True)
class ItemFailure:
    """An item version the engine could not evaluate (its rules do not parse, or a
    condition or amount of it raised): skipped by the run and reported."""

    item_code: str
    version: int
    message: str


@dataclass
class MatchedRows:
    rows: Rows
    eligible: Mask
    amount_fen: Ints
    amount_known: Mask  # False where the amount's fact is missing


def match_items(
    table: FactTable,
    items: Sequence[CompiledItem],
    as_of: date,
    threads: int = 2,
    context: MaskContext | None = None,
    failures: list[ItemFailure] | None = None,
) -> list[ItemMatches]:
    """Every item against every firm of `table`: distinct conditions first (shared by
    all items, spread over `threads`; numpy releases the GIL inside its loops), then
    each item's masks and its eligible firms' amounts. Pass a `context` to read the
    per-condition outcomes afterwards (`MaskContext.leaf_outcomes`).

    Given a `failures` list, an item that cannot be evaluated is added to it and left
    out of the results, and every other item is still evaluated; without one, the
    first such item's error is raised."""
    context = context or MaskContext(table, as_of)
    context.prepare((item.plan for item in items), threads)
    outcomes = _per_item(
        lambda item: _match_isolated(context, item, failures is None), items, threads
    )
    results = []
    for outcome in outcomes:
        if isinstance(outcome, ItemFailure):
            assert failures is not None
            failures.append(outcome)
        else:
            results.append(outcome)
    return results


def all_verdicts(
    table: FactTable, items: Sequence[CompiledItem], as_of: date, threads: int = 2
) -> list[tuple[Bits, Bits]]:
    """Every item's verdict for every firm, and nothing else: (passes, may pass),
    packed, per item, as `match_items` computes them before the amounts.

    Only the conditions are spread over `threads`. Combining them item by item is a
    few microseconds of numpy per operation on packed masks, too short to release the
    GIL for long: on two threads it was slower than on one (measured, see
    bench/openfisca_compare.py), so it runs on the calling thread."""
    context = MaskContext(table, as_of)
    context.prepare((item.plan for item in items), threads)
    return [context.verdict_bits(item.plan) for item in items]


_T = TypeVar("_T")


def _per_item(
    work: Callable[[CompiledItem], _T], items: Sequence[CompiledItem], threads: int
) -> list[_T]:
    """`work` on each item, spread over `threads`, results in the items' order."""
    if threads <= 1 or len(items) < 2 * threads:
        return [work(item) for item in items]
    with ThreadPoolExecutor(threads) as pool:
        parts = list(pool.map(lambda chunk: [work(item) for item in chunk], _split(items, threads)))
    # _split deals items round-robin; deal the results back the same way.
    return [parts[i % threads][i // threads] for i in range(len(items))]


def _match_isolated(
    context: MaskContext, item: CompiledItem, strict: bool
) -> ItemMatches | ItemFailure:
    try:
        return _match_one(context, item)
    except Exception as exc:  # isolation boundary: one item, whatever went wrong
        if strict:
            raise
        return ItemFailure(item.item_code, item.version, failure_message(exc))


def _match_one(context: MaskContext, item: CompiledItem) -> ItemMatches:
    passes, may_pass = context.verdict_bits(item.plan)
    if isinstance(item.amount_rule, FixedAmount):
        count = int(np.bitwise_count(passes).sum())
        amount = np.full(count, item.amount_rule.amount_fen, dtype=np.int64)
        known = np.ones(count, dtype=np.bool_)
    else:
        rows = np.flatnonzero(unpack(passes, context.size))
        amount, known = amounts(item.amount_rule, context.table, rows.astype(np.int32))
    return ItemMatches(item, context.size, passes, may_pass, amount, known)


# ----- one firm ----------------------------------------------------------------------------


def _negate(outcome: Outcome) -> Outcome:
    if outcome is Outcome.UNKNOWN:
        return outcome
    return Outcome.FAIL if outcome is Outcome.PASS else Outcome.PASS


_ALL, _ANY, _NOT, _MANUAL, _CONDITION, _ALL_CONDITIONS = range(6)
# A rule compiled for one firm at a time (`RowPlan.tree`): (_ALL, children),
# (_ANY, children), (_NOT, child), (_MANUAL,), (_CONDITION, key, condition), or, for
# the common "all of these conditions (some negated)", one flat node walked in one
# loop: (_ALL_CONDITIONS, ((key, condition, negated), ...)).
PlanNode = tuple[Any, ...]
# The letter of each outcome as reported, and of its negation.
_LETTER = {
    (outcome, negated): OUTCOME_CODE[_negate(outcome) if negated else outcome]
    for outcome in Outcome
    for negated in (False, True)
}


@dataclass(frozen=True)
class RowPlan:
    """An item's rule as `RowEvaluator` walks it: each condition carries its key, made
    once here, under which a firm's evaluator remembers the outcome, so that a
    condition many items share is decided once per firm; and the conditions in the
    order their outcomes are reported, each with its negation parity."""

    tree: PlanNode
    reported: tuple[tuple[PlanNode, bool], ...]
    conditions: tuple[tuple[str, Condition], ...]  # each distinct one, with its key


def plan_of(rule: RuleNode) -> RowPlan:
    def compiled(node: RuleNode) -> PlanNode:
        if isinstance(node, AllOf):
            children = tuple(compiled(child) for child in node.all)
            flat = [_plain(child) for child in children]
            if children and all(part is not None for part in flat):
                return (_ALL_CONDITIONS, tuple(flat))
            return (_ALL, children)
        if isinstance(node, AnyOf):
            return (_ANY, tuple(compiled(child) for child in node.any))
        if isinstance(node, NotRule):
            return (_NOT, compiled(node.not_))
        if isinstance(node, ManualCondition):
            return (_MANUAL,)
        return (_CONDITION, condition_key(node), node)

    reported = tuple((compiled(leaf.node), leaf.negated) for leaf in leaves(rule))
    conditions = {node[1]: node[2] for node, _ in reported if node[0] == _CONDITION}
    return RowPlan(compiled(rule), reported, tuple(conditions.items()))


def _plain(node: PlanNode) -> tuple[str, Condition, bool] | None:
    """A condition, or the negation of one, as (key, condition, negated); else None."""
    if node[0] == _CONDITION:
        return node[1], node[2], False
    if node[0] == _NOT and node[1][0] == _CONDITION:
        return node[1][1], node[1][2], True
    return None


class RowEvaluator:
    """The same verdicts for one firm, over plain values: a microsecond or two per item
    (each distinct condition decided once, then each item's tree walked)."""

    def __init__(self, facts: Mapping[str, KnownFact], as_of: date) -> None:
        self._facts = facts
        self._as_of = as_of
        self._decided: dict[str, Outcome] = {}

    def verdict(self, plan: RowPlan) -> Verdict:
        outcome = self._outcome(plan.tree)
        if outcome is Outcome.PASS:
            return Verdict.ELIGIBLE
        return Verdict.POSSIBLY_ELIGIBLE if outcome is Outcome.UNKNOWN else Verdict.NOT_ELIGIBLE

    def outcomes(self, plan: RowPlan) -> str:
        """One letter per condition, as `MaskContext.leaf_outcomes` gives them."""
        return "".join(_LETTER[self._outcome(node), negated] for node, negated in plan.reported)

    def _outcome(self, node: PlanNode) -> Outcome:
        kind = node[0]
        if kind == _ALL_CONDITIONS:  # the hot case, in one loop
            decided, outcome = self._decided, Outcome.PASS
            for key, condition, negated in node[1]:
                result = decided.get(key)
                if result is None:
                    result = decided[key] = self._decide(condition)
                if negated:
                    result = _negate(result)
                if result is Outcome.FAIL:
                    return Outcome.FAIL
                if result is Outcome.UNKNOWN:
                    outcome = Outcome.UNKNOWN
            return outcome
        if kind == _CONDITION:
            known = self._decided.get(node[1])
            if known is None:
                known = self._decided[node[1]] = self._decide(node[2])
            return known
        if kind == _ALL:
            return self._combine(node[1], decisive=Outcome.FAIL, otherwise=Outcome.PASS)
        if kind == _ANY:
            return self._combine(node[1], decisive=Outcome.PASS, otherwise=Outcome.FAIL)
        if kind == _NOT:
            return _negate(self._outcome(node[1]))
        return Outcome.UNKNOWN  # a manual condition

    def _combine(
        self, children: tuple[PlanNode, ...], decisive: Outcome, otherwise: Outcome
    ) -> Outcome:
        """Kleene all (decisive FAIL) or any (decisive PASS), stopping at the first
        decisive child as `domain.engine.rules.evaluate` does not need to."""
        outcome = otherwise
        for child in children:
            result = self._outcome(child)
            if result is decisive:
                return decisive
            if result is Outcome.UNKNOWN:
                outcome = Outcome.UNKNOWN
        return outcome

    def _decide(self, condition: Condition) -> Outcome:
        known = self._facts.get(condition.fact)
        if (
            known is None
            or known.invalid is not None
            or is_stale(FACT_KINDS[condition.fact], known, self._as_of)
        ):
            return Outcome.UNKNOWN
        if compare_value(condition.op, known.value, condition.value):
            return Outcome.PASS
        return Outcome.FAIL


@dataclass(frozen=True)
class PairMatch:
    """An item that matches a firm, as the match library stores it."""

    item: CompiledItem
    uscc: str
    verdict: Verdict
    amount_fen: int | None
    outcomes: str


def match_firm(
    uscc: str, facts: Mapping[str, KnownFact], items: Sequence[CompiledItem], as_of: date
) -> list[PairMatch]:
    """Every item against one firm, one item at a time (`FirmMatcher` does the same
    for many firms against the same items, faster)."""
    evaluator = RowEvaluator(facts, as_of)
    out = []
    for item in items:  # `match_pair`, inlined
        verdict = evaluator.verdict(item.plan)
        if verdict is Verdict.NOT_ELIGIBLE:
            continue
        amount = amount_fen_of(item.amount_rule, facts)
        out.append(PairMatch(item, uscc, verdict, amount, evaluator.outcomes(item.plan)))
    return out


# Kleene's three values as numbers, so that all = min, any = max and not = 2 - x.
_FAIL, _UNKNOWN, _PASS = 0, 1, 2
_VERDICT_OF = (Verdict.NOT_ELIGIBLE, Verdict.POSSIBLY_ELIGIBLE, Verdict.ELIGIBLE)
_LETTERS = np.frombuffer(b"FUP", dtype=np.uint8)
_TEXT_CACHE = 10_000  # distinct text values remembered per fact


@dataclass
class _Terms:
    """Children of nodes as flat arrays: node j's are index[start[j]:start[j+1]]."""

    index: list[int] = field(default_factory=list)
    negated: list[bool] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)

    def add(self, terms: Sequence[tuple[int, bool]]) -> None:
        self.starts.append(len(self.index))
        for index, negated in terms:
            self.index.append(index)
            self.negated.append(negated)

    def arrays(self) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_], npt.NDArray[np.intp]]:
        return (
            np.asarray(self.index, dtype=np.intp),
            np.asarray(self.negated, dtype=np.bool_),
            np.asarray(self.starts, dtype=np.intp),
        )


@dataclass
class _FactConditions:
    """The conditions on one fact: a slice of the firm's outcome vector."""

    fact: str
    kind: FactKind
    start: int
    conditions: list[Condition]
    breakpoints: list[int] = field(default_factory=list)  # numeric facts
    answers: npt.NDArray[np.int8] | None = None  # numeric: one row per bucket
    by_text: dict[str, npt.NDArray[np.int8]] = field(default_factory=dict)  # text facts

    def compile(self) -> None:
        """Numeric facts: every condition's answer in every bucket (`Buckets`), so that
        a firm's value is decided for all of them by one lookup."""
        if self.kind.type is FactType.STR:
            return
        self.breakpoints = sorted({p for c in self.conditions for p in _breakpoints(c)})
        representatives = _representatives(self.breakpoints)
        columns = [_compare(representatives, c, self.kind) for c in self.conditions]
        self.answers = (np.stack(columns, axis=1) * _PASS).astype(np.int8)

    def decide(self, value: FactValue) -> npt.NDArray[np.int8]:
        """Every condition's outcome for a fresh value: 2 passes, 0 fails."""
        if self.answers is not None:
            number = _number(value, self.kind)
            answers: npt.NDArray[np.int8] = self.answers[
                bisect.bisect_right(self.breakpoints, number)
            ]
            return answers
        text = value if isinstance(value, str) else str(value)
        row = self.by_text.get(text)
        if row is None:
            row = np.asarray(
                [_PASS if compare_value(c.op, value, c.value) else _FAIL for c in self.conditions],
                dtype=np.int8,
            )
            if len(self.by_text) < _TEXT_CACHE and isinstance(value, str):
                self.by_text[text] = row
        return row


def _number(value: FactValue, kind: FactKind) -> int:
    """A numeric fact's value as the columns hold it; anything else is refused (the
    caller then decides the firm one item at a time, as `RowEvaluator` does)."""
    if kind.type is FactType.DATE and isinstance(value, date):
        return value.toordinal()
    if kind.type is FactType.BOOL and isinstance(value, bool):
        return int(value)
    if kind.type is FactType.INT and isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError(f"{kind.name}: {value!r} is not a {kind.type.value}")


class FirmMatcher:
    """Every item against one firm at a time, as `match_firm` gives it, in well under
    a millisecond for a thousand items: each distinct condition of the items is decided
    once for the firm (all those on a numeric fact by one bucket lookup), into a vector
    of outcomes; the items' rules are compiled, once, into a few layers of array
    reductions over that vector (all = min, any = max, not = 2 - x), so that every
    verdict comes from a dozen numpy calls rather than a walk of a thousand trees.

    Items whose conditions cannot be compiled, and firms whose facts the arrays cannot
    hold, are matched one item at a time by `RowEvaluator`, with its errors."""

    def __init__(self, items: Sequence[CompiledItem], as_of: date) -> None:
        self.items = list(items)
        self.as_of = as_of
        index: dict[str, int] = {}
        grouped: dict[str, list[tuple[str, Condition]]] = {}
        for item in self.items:
            for key, condition in item.plan.conditions:
                if key not in index:
                    index[key] = -1
                    grouped.setdefault(condition.fact, []).append((key, condition))
        self._facts: list[_FactConditions] = []
        self._broken: set[str] = set()  # condition keys that could not be compiled
        position = 0
        for fact, pairs in grouped.items():
            try:
                group = _FactConditions(fact, FACT_KINDS[fact], position, [c for _, c in pairs])
                group.compile()
            except Exception:  # isolation boundary: left to RowEvaluator, which reports it
                self._broken.update(key for key, _ in pairs)
                continue
            for offset, (key, _) in enumerate(pairs):
                index[key] = position + offset
            self._facts.append(group)
            position += len(pairs)
        self._unknown = position  # a slot that is always unknown (manual conditions)
        self._size = position + 1
        self._index = index
        self._layers: dict[tuple[int, bool], _Terms] = {}  # (height, any) -> nodes
        self._outputs: dict[tuple[int, bool], list[int]] = {}
        self._fallback: list[int] = []  # items RowEvaluator matches
        roots: list[tuple[int, bool]] = []
        reported = _Terms()
        self._compiled: list[int] = []  # items compiled, in item order
        for n, item in enumerate(self.items):
            if any(key in self._broken for key, _ in item.plan.conditions):
                self._fallback.append(n)
                continue
            root, _height = self._term(item.plan.tree)
            roots.append(root)
            reported.add([self._reported(node, negated) for node, negated in item.plan.reported])
            self._compiled.append(n)
        self._root_index = np.asarray([r for r, _ in roots], dtype=np.intp)
        self._root_negated = np.asarray([neg for _, neg in roots], dtype=np.bool_)
        reported.starts.append(len(reported.index))
        self._reported_index, self._reported_negated, starts = reported.arrays()
        self._reported_starts = starts.tolist()
        self._steps = [
            (*self._layers[key].arrays(), np.asarray(self._outputs[key], dtype=np.intp), key[1])
            for key in sorted(self._layers)
        ]
        self._fixed = [
            item.amount_rule.amount_fen if isinstance(item.amount_rule, FixedAmount) else None
            for item in self.items
        ]

    def _term(self, node: PlanNode) -> tuple[tuple[int, bool], int]:
        """A node as (slot, negated) in the outcome vector, and its height."""
        kind = node[0]
        if kind == _CONDITION:
            return (self._index[node[1]], False), 0
        if kind == _MANUAL:
            return (self._unknown, False), 0
        if kind == _NOT:
            (slot, negated), height = self._term(node[1])
            return (slot, not negated), height
        if kind == _ALL_CONDITIONS:
            children = [(self._index[key], negated) for key, _, negated in node[1]]
            height = 1
        else:
            parts = [self._term(child) for child in node[1]]
            children = [term for term, _ in parts]
            height = 1 + max(h for _, h in parts)
        key = (height, kind == _ANY)
        self._layers.setdefault(key, _Terms()).add(children)
        slot = self._size
        self._size += 1
        self._outputs.setdefault(key, []).append(slot)
        return (slot, False), height

    def _reported(self, node: PlanNode, negated: bool) -> tuple[int, bool]:
        if node[0] == _CONDITION:
            return self._index[node[1]], negated
        return self._unknown, negated

    @property
    def uncompiled(self) -> list[CompiledItem]:
        """Items with a condition that could not be compiled (`match_compiled` leaves
        them out)."""
        return [self.items[n] for n in self._fallback]

    def match(self, uscc: str, facts: Mapping[str, KnownFact]) -> list[PairMatch]:
        """What `match_firm` gives, item for item."""
        try:
            found = self._pairs(uscc, facts)
        except Exception:  # a value the arrays cannot hold: one item at a time
            return match_firm(uscc, facts, self.items, self.as_of)
        if self._fallback:
            evaluator = RowEvaluator(facts, self.as_of)
            for n in self._fallback:
                pair = match_pair(evaluator, uscc, facts, self.items[n])
                if pair is not None:
                    found.append((n, pair))
            found.sort(key=lambda numbered: numbered[0])
        return [pair for _, pair in found]

    def match_compiled(self, uscc: str, facts: Mapping[str, KnownFact]) -> list[PairMatch]:
        """The pairs of every item but the `uncompiled`; raises for a fact value the
        arrays cannot hold, and for whatever an amount rule raises."""
        return [pair for _, pair in self._pairs(uscc, facts)]

    def _pairs(self, uscc: str, facts: Mapping[str, KnownFact]) -> list[tuple[int, PairMatch]]:
        """The compiled items' pairs, each with the item's position in `items`."""
        outcomes = self._outcomes(facts)
        roots = outcomes[self._root_index]
        verdicts = np.where(self._root_negated, _PASS - roots, roots)
        matched = np.flatnonzero(verdicts).tolist()
        if not matched:
            return []
        codes = outcomes[self._reported_index]
        codes = np.where(self._reported_negated, _PASS - codes, codes)
        letters = _LETTERS[codes].tobytes().decode("ascii")
        starts, items, fixed = self._reported_starts, self.items, self._fixed
        verdict_codes = verdicts.tolist()
        out = []
        for position in matched:
            n = self._compiled[position]
            item = items[n]
            amount = fixed[n]
            if amount is None:
                amount = amount_fen_of(item.amount_rule, facts)
            text = letters[starts[position] : starts[position + 1]]
            verdict = _VERDICT_OF[verdict_codes[position]]
            out.append((n, PairMatch(item, uscc, verdict, amount, text)))
        return out

    def _outcomes(self, facts: Mapping[str, KnownFact]) -> npt.NDArray[np.int8]:
        """Every slot's outcome for the firm: conditions, then the nodes layer by layer."""
        outcomes = np.empty(self._size, dtype=np.int8)
        outcomes[self._unknown] = _UNKNOWN
        as_of = self.as_of
        for group in self._facts:
            end = group.start + len(group.conditions)
            known = facts.get(group.fact)
            if known is None or known.invalid is not None or is_stale(group.kind, known, as_of):
                outcomes[group.start : end] = _UNKNOWN
            else:
                outcomes[group.start : end] = group.decide(known.value)
        for index, negated, starts, slots, any_of in self._steps:
            values = outcomes[index]
            values = np.where(negated, _PASS - values, values)
            reduce = np.maximum if any_of else np.minimum
            outcomes[slots] = reduce.reduceat(values, starts)
        return outcomes


def match_pair(
    evaluator: RowEvaluator, uscc: str, facts: Mapping[str, KnownFact], item: CompiledItem
) -> PairMatch | None:
    """One item against one firm (the evaluator holds the firm's facts); None when the
    firm is not eligible."""
    verdict = evaluator.verdict(item.plan)
    if verdict is Verdict.NOT_ELIGIBLE:
        return None
    amount = amount_fen_of(item.amount_rule, facts)
    return PairMatch(item, uscc, verdict, amount, evaluator.outcomes(item.plan))


def match_table(
    table: FactTable, items: Sequence[CompiledItem], as_of: date, threads: int = 2
) -> Iterator[PairMatch]:
    """Every item against every firm of `table`, as library rows."""
    context = MaskContext(table, as_of)
    for result in match_items(table, items, as_of, threads, context):
        yield from item_pairs(context, result)


def item_pairs(context: MaskContext, result: ItemMatches) -> list[PairMatch]:
    """One item's matched firms as library rows, with each condition's outcome."""
    table = context.table
    matched = result.matched(table)
    letters = context.leaf_outcomes(result.item.rule, matched.rows)
    return [
        PairMatch(
            result.item,
            table.uscc[row],
            Verdict.ELIGIBLE if eligible else Verdict.POSSIBLY_ELIGIBLE,
            amount if known else None,
            outcome,
        )
        for row, eligible, amount, known, outcome in zip(
            matched.rows.tolist(),
            matched.eligible.tolist(),
            matched.amount_fen.tolist(),
            matched.amount_known.tolist(),
            letters,
            strict=True,
        )
    ]
