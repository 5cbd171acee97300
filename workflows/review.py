"""The smart review a case runs (workflows/application.py, workflows/commitment.py):
evidence from data and duplicate-funding findings, and the findings' holds.

A finding never decides a case. While one is open it holds the case at review: an
approval is refused until every open finding is cleared or upheld. Clearing takes a
reason and two people (the first proposes, a different reviewer confirms); upholding
is a decision that cites the finding: a rejection, or an approval reduced to at most
what the finding leaves due. Every step is in the case's timeline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from core.temporal_errors import ErrorType

with workflow.unsafe.imports_passed_through():
    from activities.review import ReviewActivities
    from models.cases import CaseDecision, ReviewAction
    from models.reference import Actor
    from models.review import (
        HOLDING,
        ClearanceRequest,
        Evidence,
        FindingDecision,
        FindingStatus,
        FindingView,
        ReviewRequest,
    )
    from workflows.disbursement import failure_reason
    from workflows.options import REVIEW
    from workflows.refusals import invalid_input

# workflow.patched id: cases run the smart review (never change it).
SMART_REVIEW = "smart-review"


class ReviewHost(Protocol):
    case_id: str

    def log(self, actor: str, action: str, detail: str = "") -> None: ...


class CaseReview:
    """One case's evidence and findings, and what may be done about them."""

    def __init__(self, host: ReviewHost) -> None:
        self._host = host
        self.evidence: list[Evidence] = []
        self._findings: dict[int, FindingView] = {}

    @property
    def findings(self) -> list[FindingView]:
        return [self._findings[k] for k in sorted(self._findings)]

    def holding(self) -> list[int]:
        return sorted(k for k, f in self._findings.items() if f.status in HOLDING)

    async def run(self, request: ReviewRequest) -> list[str]:
        """Fetch the evidence and check for duplicates; the findings hold the case.
        Returns what a reviewer must verify by hand."""
        try:
            outcome = await workflow.execute_activity_method(
                ReviewActivities.review_case, request, **REVIEW
            )
        except ActivityError as exc:  # a business error no retry cures: never strand the case
            reason = failure_reason(exc)
            self._host.log("system", "review_failed", reason)
            return [f"需人工核实：智能审核未能完成（{reason}），未核验数据、未查重"]
        self.evidence = outcome.evidence
        for finding in outcome.findings:
            self._findings[finding.id] = finding
        held = [self._findings[k] for k in self.holding()]
        detail = "；".join(f"[{f.dimension_label}] {f.summary}" for f in held)
        self._host.log(
            "system",
            "reviewed",
            f"查重发现 {len(held)} 项待处理：{detail}" if held else "查重未发现重复享受",
        )
        return outcome.to_verify

    # ----- clearing (four eyes) ------------------------------------------------------

    def validate_clear(
        self, request: ClearanceRequest, may_review: Callable[[Actor], bool]
    ) -> None:
        finding = self._findings.get(request.finding_id)
        if finding is None:
            raise invalid_input(
                f"finding {request.finding_id} is not a finding of this case", "finding_id"
            )
        if finding.status not in HOLDING:
            raise ApplicationError(
                f"finding {finding.id} is already {finding.status.value}",
                type=ErrorType.WRONG_STAGE,
            )
        if not may_review(request.actor):
            raise ApplicationError(
                "only a reviewer of this case clears its findings", type=ErrorType.FORBIDDEN
            )
        if finding.status is FindingStatus.CLEARING and finding.proposed_by == request.actor.name:
            raise ApplicationError(
                "clearing a finding needs a second person: another reviewer must confirm",
                type=ErrorType.FORBIDDEN,
            )

    async def clear(self, request: ClearanceRequest) -> None:
        # The case's own view changes first: a second request validated while this one
        # is written sees the proposal (and who made it).
        finding = self._findings[request.finding_id]
        actor, reason = request.actor.name, request.clearance.reason
        if finding.status is FindingStatus.CLEARING:
            status = FindingStatus.CLEARED
            change = {
                "status": status,
                "decided_by": actor,
                "decided_reason": reason,
                "decided_at": workflow.now(),
            }
            self._host.log(
                actor,
                "finding_cleared",
                f"查重发现 #{finding.id}：{finding.proposed_by} 提出、{actor} 复核排除：{reason}",
            )
        else:
            status = FindingStatus.CLEARING
            change = {"status": status, "proposed_by": actor, "proposed_reason": reason}
            self._host.log(actor, "finding_clear_proposed", f"查重发现 #{finding.id}：{reason}")
        self._findings[finding.id] = finding.model_copy(update=change)
        await self._record(
            FindingDecision(
                case_id=self._host.case_id,
                finding_ids=[finding.id],
                status=status,
                actor=actor,
                reason=reason,
            )
        )

    # ----- upholding (a decision citing findings) -------------------------------------

    def validate_decision(self, decision: CaseDecision, ceiling: int | None) -> None:
        """An approval leaves no finding holding the case unless it cites it, and then
        reduces to at most what the cited findings leave due (below `ceiling`, the amount
        the case stands at, where a finding cannot say); a rejection may cite."""
        holding = set(self.holding())
        cited = set(decision.findings)
        unknown = sorted(cited - holding)
        if unknown:
            raise invalid_input(f"finding {unknown[0]} does not hold this case", "findings")
        if decision.action is ReviewAction.RETURN:
            if cited:
                raise invalid_input(
                    "a return cites no finding: uphold it when deciding", "findings"
                )
            return
        if decision.action is ReviewAction.REJECT:
            return
        left = sorted(holding - cited)
        if left:
            raise ApplicationError(
                f"finding {left[0]} holds the case: clear it (two reviewers) or uphold it "
                "by citing it in the decision",
                type=ErrorType.WRONG_STAGE,
            )
        if cited:
            if decision.amount_fen is None:
                raise invalid_input(
                    "upholding a finding reduces the amount: give amount_fen", "amount_fen"
                )
            dues = [self._findings[k].suggested_fen for k in cited]
            known = [d for d in dues if d is not None]
            if known and decision.amount_fen > min(known):
                raise invalid_input(
                    f"amount_fen may not exceed {min(known)}, what the upheld findings leave due",
                    "amount_fen",
                )
            if None in dues and ceiling is not None and decision.amount_fen >= ceiling:
                # What a reused invoice was worth is for the reviewer to say; upholding it
                # still pays less than the case would have had.
                raise invalid_input(
                    f"upholding a finding reduces the amount below {ceiling}", "amount_fen"
                )
            if not decision.reason:
                raise invalid_input("upholding a finding needs a reason", "reason")

    async def uphold(self, decision: CaseDecision, actor: str) -> None:
        if not decision.findings:
            return
        await self._record(
            FindingDecision(
                case_id=self._host.case_id,
                finding_ids=sorted(decision.findings),
                status=FindingStatus.UPHELD,
                actor=actor,
                reason=decision.reason,
            )
        )
        for key in decision.findings:
            self._findings[key] = self._findings[key].model_copy(
                update={
                    "status": FindingStatus.UPHELD,
                    "decided_by": actor,
                    "decided_reason": decision.reason,
                    "decided_at": workflow.now(),
                }
            )
        cited = "、".join(f"#{k}" for k in sorted(decision.findings))
        self._host.log(actor, "finding_upheld", f"查重发现 {cited} 成立：{decision.reason}")

    async def _record(self, decision: FindingDecision) -> None:
        await workflow.execute_activity_method(ReviewActivities.decide_findings, decision, **REVIEW)
