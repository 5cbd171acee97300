"""Evidence from data: each fact a review depends on, the firm's figure beside the
public data platform's, with its source and when it was fetched. What the data cannot
vouch for (stale, missing, the platform down) is an unknown with its reason, never a
pass."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta

from models.data_platform import DATA_PLATFORM_KINDS, FactsAnswer
from models.facts import FACT_KINDS
from models.review import UNKNOWN_EVIDENCE, Evidence, EvidenceStatus, FactValue

DECLARED = "企业申报"
REGISTRY = "企业库"
# Facts the platform serves that no rule names (penalties, patents): current for a year.
DEFAULT_MAX_AGE_DAYS = 400
_EXTRA_LABELS = {"env_penalty_count": "近三年环保处罚次数", "patent_count": "有效专利数"}


def label_of(kind: str) -> str:
    known = FACT_KINDS.get(kind)
    return known.label if known else _EXTRA_LABELS.get(kind, kind)


def _max_age(kind: str) -> int:
    known = FACT_KINDS.get(kind)
    if known is not None and known.max_age_days is not None:
        return known.max_age_days
    return DEFAULT_MAX_AGE_DAYS


def served(kinds: Iterable[str]) -> list[str]:
    """The kinds among `kinds` that the platform serves, once each, in order."""
    return sorted({k for k in kinds if k in DATA_PLATFORM_KINDS})


def _agrees(declared: FactValue, data: FactValue, tolerance_pct: int) -> bool:
    if isinstance(declared, bool) or isinstance(data, bool):
        return declared == data
    if isinstance(declared, int) and isinstance(data, int):
        return abs(declared - data) * 100 <= tolerance_pct * max(abs(declared), abs(data))
    return str(declared) == str(data)


def weigh(
    kinds: Iterable[str],
    answer: FactsAnswer | None,
    declared: Mapping[str, tuple[FactValue, str]],
    today: date,
    tolerance_pct: int,
    unavailable: str = "",
) -> list[Evidence]:
    """One `Evidence` per kind. `answer` None: the platform could not be asked
    (`unavailable` says why)."""
    readings = {r.kind: r for r in answer.readings} if answer else {}
    out = []
    for kind in kinds:
        mine = declared.get(kind)
        evidence = Evidence(
            kind=kind,
            label=label_of(kind),
            declared=mine[0] if mine else None,
            declared_source=mine[1] if mine else None,
            status=EvidenceStatus.UNAVAILABLE,
            reason=f"公共数据平台暂不可用：{unavailable}" if answer is None else "",
        )
        reading = readings.get(kind)
        if answer is not None and reading is None:
            evidence.status = EvidenceStatus.MISSING
            evidence.reason = "公共数据平台无该企业此项数据"
        elif reading is not None:
            assert answer is not None
            evidence.data, evidence.as_of = reading.value, reading.as_of
            evidence.source, evidence.retrieved_at = reading.source, answer.retrieved_at
            age = _max_age(kind)
            if reading.as_of < today - timedelta(days=age):
                evidence.status = EvidenceStatus.STALE
                evidence.reason = f"数据截至 {reading.as_of.isoformat()}，已超过 {age} 天"
            elif mine is None:
                evidence.status = EvidenceStatus.FROM_DATA
            elif _agrees(mine[0], reading.value, tolerance_pct):
                evidence.status = EvidenceStatus.CONFIRMED
            else:
                evidence.status = EvidenceStatus.MISMATCH
                evidence.reason = (
                    f"{mine[1]} {mine[0]}，数据 {reading.value}（{reading.source}，"
                    f"截至 {reading.as_of.isoformat()}）"
                )
        out.append(evidence)
    return out


def to_verify(evidence: Iterable[Evidence]) -> list[str]:
    """What a reviewer must check by hand: every unknown and every mismatch."""
    return [
        f"需人工核实：{e.label}，{e.reason}"
        for e in evidence
        if e.status in UNKNOWN_EVIDENCE or e.status is EvidenceStatus.MISMATCH
    ]


def retrieved(evidence: Iterable[Evidence]) -> datetime | None:
    times = [e.retrieved_at for e in evidence if e.retrieved_at]
    return max(times) if times else None
