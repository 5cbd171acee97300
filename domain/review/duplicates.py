"""The duplicate-funding check (多维度查重), in memory: a case's claim against the
claims of every open or paid case that could fund the same thing.

Pure: the callers load the claims (domain/review/claims.py) and store the findings
(domain/review/findings.py). One index serves one case at review and a whole
recognition batch alike.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from domain.review.projects import Fingerprint, same_project
from models.money import format_yuan
from models.review import Counterpart, Dimension, FindingDraft, ReviewChecks

_PERIOD = re.compile(r"^(\d{4})(?:-Q([1-4])|-(\d{2}))?$")
RELATION_LABELS = {
    "legal_representative": "同一法定代表人",
    "parent": "母公司",
    "subsidiary": "子公司",
}


def period_span(text: str) -> tuple[int, int] | None:
    """The months a period covers, as year*12+month indexes; None for a one-off period
    (it spans the item's whole life, so it overlaps every period)."""
    match = _PERIOD.match(text)
    if match is None:
        return None
    year = int(match.group(1)) * 12
    if match.group(2):
        quarter = int(match.group(2))
        return year + 3 * quarter - 2, year + 3 * quarter
    if match.group(3):
        month = int(match.group(3))
        return year + month, year + month
    return year + 1, year + 12


def overlap(a: str, b: str) -> bool:
    span_a, span_b = period_span(a), period_span(b)
    if span_a is None or span_b is None:
        return True
    return span_a[0] <= span_b[1] and span_b[0] <= span_a[1]


@dataclass(frozen=True)
class ClaimRow:
    """One case's claim as the check sees it."""

    case_id: str
    uscc: str
    item_code: str
    group: str | None
    period: str
    amount_fen: int | None
    paid_fen: int = 0
    state: str = "open"
    project: Fingerprint | None = None
    eligible_cost_fen: int | None = None
    invoices: frozenset[str] = field(default_factory=frozenset)
    serials: frozenset[str] = field(default_factory=frozenset)

    @property
    def funded_fen(self) -> int:
        """What the case takes of public money: paid, or for an open case its entitlement."""
        return self.paid_fen if self.state == "paid" else max(self.paid_fen, self.amount_fen or 0)

    def counterpart(self) -> Counterpart:
        return Counterpart(
            case_id=self.case_id,
            uscc=self.uscc,
            item_code=self.item_code,
            period=self.period,
            amount_fen=self.amount_fen,
            paid_fen=self.paid_fen,
            state=self.state,
            project_name=self.project.name if self.project else None,
        )


_STATE_TEXT = {"paid": "已兑付", "open": "办理中"}


def _describe(row: ClaimRow) -> str:
    return (
        f"{row.item_code} {row.period} 案件 {row.case_id}"
        f"（{_STATE_TEXT.get(row.state, row.state)}，{format_yuan(row.funded_fen)}）"
    )


class DuplicateIndex:
    """Claims by firm and by invoice or serial, for the checks to look up."""

    def __init__(self, rows: Iterable[ClaimRow] = ()) -> None:
        self._by_uscc: dict[str, list[ClaimRow]] = defaultdict(list)
        self._by_invoice: dict[str, list[ClaimRow]] = defaultdict(list)
        self._by_serial: dict[str, list[ClaimRow]] = defaultdict(list)
        for row in rows:
            self.add(row)

    def add(self, row: ClaimRow) -> None:
        self._by_uscc[row.uscc].append(row)
        for invoice in row.invoices:
            self._by_invoice[invoice].append(row)
        for serial in row.serials:
            self._by_serial[serial].append(row)

    def check(
        self,
        case: ClaimRow,
        checks: ReviewChecks,
        related: Mapping[str, str] | None = None,
    ) -> list[FindingDraft]:
        """Every finding for `case`: `related` maps related firms to their relation."""
        found: list[FindingDraft] = []
        wanted = set(checks.dimensions)
        if case.group:  # an item in a group is always checked against it
            found.extend(self._exclusivity(case, checks))
        if Dimension.PROJECT in wanted and case.project:
            found.extend(self._project(case, checks))
        if Dimension.INVOICE in wanted and case.invoices:
            found.extend(self._invoice(case))
        if Dimension.FIRM_GROUP in wanted and related:
            found.extend(self._firm_group(case, checks, related))
        return found

    # ----- the dimensions ------------------------------------------------------------

    def _others(self, rows: Iterable[ClaimRow], case: ClaimRow) -> Iterable[ClaimRow]:
        return (r for r in rows if r.case_id != case.case_id)

    def _same_thing(self, case: ClaimRow, other: ClaimRow, checks: ReviewChecks) -> bool:
        """Both fund the firm for the period, or the same project (when both name one)."""
        if case.project is None or other.project is None:
            return True
        if case.serials & other.serials:
            return True
        return (
            same_project(
                case.project,
                other.project,
                checks.name_similarity,
                checks.investment_tolerance_pct,
            )
            is not None
        )

    def _exclusivity(self, case: ClaimRow, checks: ReviewChecks) -> list[FindingDraft]:
        """就高不重复 over every case of the group that funds the same firm (and, where the
        item allows a firm several projects, the same project) for an overlapping period:
        together they may take no more than the highest entitlement, so what is due is
        this case's entitlement less all they took."""
        others = sorted(
            (
                other
                for other in self._others(self._by_uscc.get(case.uscc, ()), case)
                if other.group == case.group
                and other.item_code != case.item_code
                and overlap(case.period, other.period)
                and (not checks.exclusivity_per_project or self._same_thing(case, other, checks))
            ),
            key=lambda r: r.case_id,
        )
        if not others:
            return []
        theirs, ours = sum(o.funded_fen for o in others), case.amount_fen
        if ours is None:
            excess, suggested = theirs, None
            verdict = "本案金额未定：核定时应扣除已享受部分"
        elif ours > theirs:
            excess, suggested = theirs, ours - theirs
            verdict = f"本案较高，只应补差额 {format_yuan(ours - theirs)}"
            if any(o.state != "paid" for o in others):
                verdict += "（或在较低案件兑付前将其撤销后全额兑付）"
        else:
            excess, suggested = ours, 0
            verdict = "本案不高于已享受的同组政策，不应再享受"
        listed = "；".join(_describe(o) for o in others)
        return [
            FindingDraft(
                dimension=Dimension.EXCLUSIVITY,
                key="exclusivity:" + ",".join(o.case_id for o in others),
                score=100,
                summary=f"同组政策（{case.group}）已有{listed}，"
                f"合计 {format_yuan(theirs)}；{verdict}",
                evidence={"group": case.group, "their_fen": theirs, "our_fen": ours},
                counterparts=[o.counterpart() for o in others],
                amount_fen=ours,
                excess_fen=excess,
                suggested_fen=suggested,
            )
        ]

    def _project(self, case: ClaimRow, checks: ReviewChecks) -> list[FindingDraft]:
        assert case.project is not None
        matched: dict[str, tuple[ClaimRow, float, str]] = {}
        for serial in case.serials:
            for other in self._others(self._by_serial.get(serial, ()), case):
                matched[other.case_id] = (other, 1.0, f"设备序列号 {serial} 相同")
        for other in self._others(self._by_uscc.get(case.uscc, ()), case):
            if other.project is None or other.case_id in matched:
                continue
            score = same_project(
                case.project, other.project, checks.name_similarity, checks.investment_tolerance_pct
            )
            if score is not None:
                matched[other.case_id] = (
                    other,
                    score,
                    f"项目名称相似度 {score:.2f}，地点与投资额一致",
                )
        if not matched:
            return []
        rows = sorted(matched.values(), key=lambda m: m[0].case_id)
        theirs = sum(r.funded_fen for r, _s, _w in rows)
        ours = case.amount_fen or 0
        costs = [
            c for c in [case.eligible_cost_fen, *(r.eligible_cost_fen for r, _s, _w in rows)] if c
        ]
        if costs:
            cost = max(costs)
            excess = max(0, theirs + ours - cost)
            if excess == 0:
                return []  # funded under two items, but within its eligible cost
            limit = f"合规成本 {format_yuan(cost)}，合计扶持 {format_yuan(theirs + ours)}"
        else:
            excess = min(ours, theirs)
            limit = "合规成本未申报"
        listed = "；".join(f"{_describe(r)}：{why}" for r, _s, why in rows)
        return [
            FindingDraft(
                dimension=Dimension.PROJECT,
                key="project:" + ",".join(r.case_id for r, _s, _w in rows),
                score=round(max(s for _r, s, _w in rows) * 100),
                summary=f"项目“{case.project.name}”疑已获扶持：{listed}；{limit}",
                evidence={
                    "project": case.project.name,
                    "location": case.project.location,
                    "matches": [
                        {
                            "case_id": r.case_id,
                            "project": r.project.name if r.project else None,
                            "score": round(s, 3),
                            "why": why,
                        }
                        for r, s, why in rows
                    ],
                    "eligible_cost_fen": max(costs) if costs else None,
                    "total_fen": theirs + ours,
                },
                counterparts=[r.counterpart() for r, _s, _w in rows],
                amount_fen=case.amount_fen,
                excess_fen=excess,
                suggested_fen=max(0, ours - excess) if case.amount_fen is not None else None,
            )
        ]

    def _invoice(self, case: ClaimRow) -> list[FindingDraft]:
        shared: dict[str, tuple[ClaimRow, list[str]]] = {}
        for invoice in sorted(case.invoices):
            for other in self._others(self._by_invoice.get(invoice, ()), case):
                shared.setdefault(other.case_id, (other, []))[1].append(invoice)
        out = []
        for case_id in sorted(shared):
            other, invoices = shared[case_id]
            shown = "、".join(invoices[:5]) + (" 等" if len(invoices) > 5 else "")
            out.append(
                FindingDraft(
                    dimension=Dimension.INVOICE,
                    key=f"invoice:{case_id}",
                    score=100,
                    summary=f"发票 {shown}（{len(invoices)} 张）已用于{_describe(other)}",
                    evidence={"invoices": invoices},
                    counterparts=[other.counterpart()],
                    amount_fen=case.amount_fen,
                    excess_fen=min(case.amount_fen or 0, other.funded_fen),
                    suggested_fen=None,  # what the reused invoices are worth is for a person
                )
            )
        return out

    def _firm_group(
        self, case: ClaimRow, checks: ReviewChecks, related: Mapping[str, str]
    ) -> list[FindingDraft]:
        rows: list[tuple[ClaimRow, str]] = []
        for uscc, relation in sorted(related.items()):
            if uscc == case.uscc:
                continue
            for other in self._by_uscc.get(uscc, ()):
                same_item = other.item_code == case.item_code or (
                    case.group is not None and other.group == case.group
                )
                if not same_item or not overlap(case.period, other.period):
                    continue
                if (
                    case.project
                    and other.project
                    and case.project.location != other.project.location
                ):
                    continue
                rows.append((other, relation))
        if not rows:
            return []
        theirs = sum(r.funded_fen for r, _ in rows)
        ours = case.amount_fen or 0
        cap = checks.firm_group_cap_fen
        if cap is not None:
            excess = max(0, theirs + ours - cap)
            if excess == 0:
                return []
            limit = f"单户上限 {format_yuan(cap)}，关联企业合计 {format_yuan(theirs + ours)}"
        else:
            excess = min(ours, theirs)
            limit = "关联企业同期享受同一政策"
        same_place = all(
            case.project and r.project and r.project.location == case.project.location
            for r, _ in rows
        )
        listed = "；".join(
            f"{RELATION_LABELS.get(rel, rel)} {r.uscc}：{_describe(r)}" for r, rel in rows
        )
        return [
            FindingDraft(
                dimension=Dimension.FIRM_GROUP,
                key="firm_group:" + ",".join(sorted(r.case_id for r, _ in rows)),
                score=100 if same_place else 80,
                summary=f"关联企业疑拆分申报：{listed}；{limit}",
                evidence={
                    "related": [
                        {"uscc": r.uscc, "relation": rel, "case_id": r.case_id} for r, rel in rows
                    ],
                    "cap_fen": cap,
                    "total_fen": theirs + ours,
                },
                counterparts=[r.counterpart() for r, _ in rows],
                amount_fen=case.amount_fen,
                excess_fen=excess,
                suggested_fen=max(0, ours - excess) if case.amount_fen is not None else None,
            )
        ]
