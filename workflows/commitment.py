"""Commitment cases (承诺类): commitment letter, joint review, prepayment, the project's
life, settlement, and recovery of what was prepaid beyond the final amount."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.cases import CaseActivities
    from activities.commitment import CommitmentActivities
    from activities.policy import PolicyLibraryActivities
    from core.temporal_errors import ErrorType
    from core.workdays import SHANGHAI
    from models import search_attributes as sa_keys
    from models.cases import (
        CaseStage,
        CaseState,
        DecisionRequest,
        ResubmitRequest,
        ReviewAction,
        StageDeadlineMissed,
        TimelineEntry,
        WithdrawRequest,
    )
    from models.commitment import (
        CommitmentCheck,
        CommitmentInput,
        CommitmentNotice,
        CommitmentNoticeKind,
        CommitmentView,
        CompletionAction,
        CompletionRuling,
        CompletionSubmission,
        EvidenceLine,
        EvidenceRequest,
        ExtensionAsk,
        ExtensionRuling,
        PlanGrant,
        PlanRequest,
        ProgressUpdate,
        RecoveryCheck,
        RecoveryClose,
        RecoveryDefault,
        RecoveryOpening,
        RecoveryView,
        Settlement,
        SettlementInput,
        WaiverRecord,
        WaiverRequest,
        check_figures,
    )
    from models.eligibility import Outcome, Verdict
    from models.policy import Category, Stage, StageLimit
    from models.policy_change import DeadlineRequest
    from models.reference import Actor, Role
    from models.review import ClearanceRequest, ProjectClaim, ReviewRequest
    from workflows.disbursement import CANCELLABLE, Disbursement, Withdrawn, failure_reason
    from workflows.options import ACK_AFTER_PROJECTION, DATABASE
    from workflows.refusals import check_review, invalid_input
    from workflows.review import SMART_REVIEW, CaseReview

Ruling = TypeVar("Ruling", CompletionRuling, DecisionRequest)
DEPARTMENT, FINANCE = "department", "finance"
DEPARTMENT_ROLES = (Role.DEPARTMENT_CASEWORKER, Role.DEPARTMENT_HEAD)
# Before the prepayment is instructed the firm may withdraw; after it, the commitment
# runs to its settlement (not completing it is how a firm gives up: full recovery).
WITHDRAWABLE = CANCELLABLE | {CaseStage.JOINT_REVIEW, CaseStage.CORRECTION}
APPROVAL_NOTICE = "commitment-approval-notice"  # workflow.patched id: never change it
RECOVERY_POLL = timedelta(days=7)  # receipts are read at least weekly, and at each date
REMINDER_HOUR = time(9, 0)


def _today() -> date:
    return workflow.now().astimezone(SHANGHAI).date()


def _day_after(day: date) -> datetime:
    """The first moment after `day` ends, in Shanghai."""
    return datetime.combine(day + timedelta(days=1), time(0), SHANGHAI)


@workflow.defn
class CommitmentWorkflow:
    """One firm's commitment to one item for one period, for the life of its project.

    Stages: check; joint_review (department and finance in parallel: both approve, either
    rejects or returns for correction); the disbursement tail pays the prepayment
    (instalment 1); project (reminders before the completion date, progress reports, one
    extension the department decides); completion_review (the department accepts the
    achieved figures, correcting them with a reason, beside the data's figures, or
    returns them); settlement_review (finance confirms the settlement); then the
    difference is paid as the last instalment, or recovered (recovery: repayment,
    offset, an instalment plan, waiver, default), and the case is settled. No completion
    by the completion date plus grace settles at nothing: full recovery.
    The completion date is a deadline in state: an extension moves it, and every timer
    after it (reminders, the deadline) follows.
    """

    @workflow.init
    def __init__(self, input: CommitmentInput) -> None:
        self._input = input
        self.case_id, self.item_code = input.case_id, input.item_code
        self.uscc, self.period = input.uscc, input.period
        self._smart = CaseReview(self)
        self._stage = CaseStage.CHECK
        self._check: CommitmentCheck | None = None
        self._committed: int | None = None  # the committed amount, once approved
        self.approved: int | None = None  # what the tail pays now (CaseHost)
        self._prepaid = 0
        self._final_paid = 0
        self._to_verify: list[str] = []
        self._due_at: datetime | None = None
        self._overdue = False
        self._corrections: list[str] = []
        self._timeline: list[TimelineEntry] = []
        self._moments: dict[str, datetime] = {"applied": workflow.now()}
        self._joint: dict[str, DecisionRequest] = {}
        self._decision: DecisionRequest | None = None
        self._resubmission: ResubmitRequest | None = None
        self._completion_date = input.project.completion_date
        self._extension: ExtensionAsk | None = None
        self._extension_ruling: ExtensionRuling | None = None
        self._extended = False
        self._reminded: set[str] = set()
        self._progress: list[ProgressUpdate] = []
        self._completion: CompletionSubmission | None = None
        self._completion_ruling: CompletionRuling | None = None
        self._achieved: dict[str, int] | None = None
        self._evidence: list[EvidenceLine] = []
        self._settlement: Settlement | None = None
        self._recovery: RecoveryView | None = None
        self._plan_grant: PlanGrant | None = None
        self._waiver: WaiverRequest | None = None
        self._recovery_check = False
        self._defaulted = False
        self._tail = Disbursement(self)
        self._received = 0
        self._settled = 0
        self._seen = 0  # of the requests the current wait counts (decisions, reports)

    @workflow.run
    async def run(self, input: CommitmentInput) -> CaseState:
        try:
            return await self._proceed(input)
        except Withdrawn:
            return await self._finish(await self._tail.close())

    async def _proceed(self, input: CommitmentInput) -> CaseState:
        try:
            check = await workflow.execute_activity_method(
                CommitmentActivities.check_commitment, input, **DATABASE
            )
        except ActivityError as exc:
            self.log("system", "rejected", f"无法受理：{failure_reason(exc)}")
            return await self._finish(CaseStage.REJECTED)
        self._check, self._committed = check, check.committed_fen
        workflow.upsert_search_attributes([sa_keys.REGION.value_set(check.region_code)])
        signature = input.signature
        self.log(
            signature.signer,
            "signed",
            f"承诺书 SHA-256 {signature.letter_sha256}，来源 {signature.origin}",
        )
        self.log("system", "checked", f"{check.verdict.value}; {check.amount_explanation}")
        if check.verdict is Verdict.NOT_ELIGIBLE:
            failed = [c.description for c in check.conditions if c.outcome is Outcome.FAIL]
            self.log("system", "rejected", "；".join(failed) or check.amount_explanation)
            return await self._finish(CaseStage.REJECTED)
        if check.committed_fen == 0:
            self.log("system", "rejected", f"按规则计算金额为零：{check.amount_explanation}")
            return await self._finish(CaseStage.REJECTED)
        self._to_verify = [
            f"需人工核实：{c.description}" for c in check.conditions if c.outcome is Outcome.UNKNOWN
        ]
        if check.failure:
            self._to_verify.insert(0, check.failure)
        if check.committed_fen is None:
            self._to_verify.append("承诺金额无法自动计算：审核通过时请核定金额")
        if workflow.patched(SMART_REVIEW):
            self._to_verify += await self._smart.run(self._review_request(CaseStage.JOINT_REVIEW))

        while True:
            action = await self._joint_review()
            if action is ReviewAction.APPROVE:
                break
            if action is ReviewAction.REJECT:
                return await self._finish(CaseStage.REJECTED)
            await self._await_correction()
        self._moments["approved"] = workflow.now()
        # Added after the first cases ran: the firm hears of the approval at once, not
        # only of the prepayment. A case started before replays without it.
        if workflow.patched(APPROVAL_NOTICE):
            await self._notify(
                CommitmentNoticeKind.APPROVED, "approved", amount_fen=self._committed or 0
            )

        assert self._committed is not None
        prepaid = check.terms.prepayment(self._committed)
        if prepaid > 0:
            await workflow.execute_activity_method(
                CommitmentActivities.record_prepayment, self._money(prepaid), **DATABASE
            )
            self.approved = prepaid
            await self._tail.disburse(self._year())
            self._prepaid = prepaid
            self._moments["prepaid"] = self._tail.paid_at or workflow.now()
            await self._notify(CommitmentNoticeKind.PREPAID, "prepaid", amount_fen=prepaid)

        completed = await self._project_life()
        if completed:
            await self._review_completion()
        settlement = await workflow.execute_activity_method(
            CommitmentActivities.settle, self._money(self._prepaid), **DATABASE
        )
        self._settlement = settlement
        self.log("system", "settled", settlement.explanation)
        await self._notify(
            CommitmentNoticeKind.SETTLED,
            "settled",
            amount_fen=settlement.final_fen,
            other_fen=self._prepaid,
            text=settlement.explanation,
        )
        if settlement.final_fen > self._prepaid:
            self.approved = settlement.final_fen - self._prepaid
            self._tail.instalment += 1
            await self._tail.disburse(self._year())
            self._final_paid = self.approved
            self._moments["final_paid"] = self._tail.paid_at or workflow.now()
        elif settlement.final_fen < self._prepaid:
            await self._recover(self._prepaid - settlement.final_fen, settlement.explanation)
        self._moments["settled"] = workflow.now()
        return await self._finish(CaseStage.SETTLED)

    # ----- joint review ---------------------------------------------------------------

    async def _joint_review(self) -> ReviewAction:
        """Department and finance review at once: both approve, or the first rejection
        or return ends the round."""
        self._joint = {}
        limit = self._limit(Stage.JOINT_REVIEW)
        self._due_at = await self._working_deadline(limit)
        await self.enter(CaseStage.JOINT_REVIEW)
        warned = False
        self._seen = 0
        while True:
            try:
                await self._tail.wait_for(
                    lambda: len(self._joint) > self._seen,
                    within=None if warned else max(self._due_at - workflow.now(), timedelta(0)),
                )
            except TimeoutError:
                warned = True
                await self._raise_overdue(
                    CaseStage.JOINT_REVIEW,
                    [self._unit(u) for u in (DEPARTMENT, FINANCE) if u not in self._joint],
                )
                continue
            self._seen = len(self._joint)
            decisions = list(self._joint.values())
            latest = decisions[-1]
            decision = latest.decision
            self.log(latest.actor.name, decision.action.value, decision.reason)
            await self._smart.uphold(decision, latest.actor.name)
            if decision.action is ReviewAction.APPROVE and decision.amount_fen is not None:
                self._committed = decision.amount_fen
            if decision.action is not ReviewAction.APPROVE:
                self._corrections = list(decision.corrections)
                return decision.action
            if len(self._joint) == 2:
                return ReviewAction.APPROVE
            await self._ack()

    async def _await_correction(self) -> None:
        self._resubmission = None
        await self.enter(CaseStage.CORRECTION)
        await self._tail.wait_for(lambda: self._resubmission is not None)
        assert self._resubmission is not None
        self._input.materials.update(self._resubmission.resubmission.materials)
        self.log(self._resubmission.actor.name, "resubmitted", self._resubmission.resubmission.note)
        self._corrections = []

    # ----- the project's life -----------------------------------------------------------

    def _deadline(self) -> datetime:
        """The end of the completion date plus grace: no completion by then is failure."""
        assert self._check is not None
        grace = timedelta(days=self._check.terms.completion_grace_days)
        return _day_after(self._completion_date + grace)

    def _next_reminder(self) -> tuple[str, int, datetime] | None:
        """The next reminder not sent yet for the current completion date."""
        assert self._check is not None
        for days in self._check.terms.reminder_days:  # largest first
            key = f"{self._completion_date.isoformat()}/{days}"
            at = datetime.combine(self._completion_date - timedelta(days=days), REMINDER_HOUR)
            at = at.replace(tzinfo=SHANGHAI)
            if key not in self._reminded and at > workflow.now():
                return key, days, at
        return None

    async def _project_life(self) -> bool:
        """Until completion is submitted (True) or the deadline passes (False)."""
        assert self._check is not None
        await self.enter(CaseStage.PROJECT)
        self._seen = 0  # progress reports logged
        while True:
            reminder = self._next_reminder()
            # While an extension asked for in time waits for the department, the
            # deadline waits too (the department is warned when its own limit passes).
            pending = self._extension is not None and not self._extended
            wakes = [] if pending else [self._deadline()]
            if reminder is not None:
                wakes.append(reminder[2])
            if pending and self._due_at is not None and not self._overdue:
                wakes.append(self._due_at)
            try:
                await self._tail.wait_for(
                    lambda: (
                        self._completion is not None
                        or len(self._progress) > self._seen
                        or (
                            self._extension is not None
                            and not self._extended
                            and self._due_at is None
                        )
                        or self._extension_ruling is not None
                    ),
                    within=max(min(wakes) - workflow.now(), timedelta(0)) if wakes else None,
                )
            except TimeoutError:
                if reminder is not None and workflow.now() >= reminder[2]:
                    key, days, _at = reminder
                    self._reminded.add(key)
                    self.log("system", "reminded", f"距完成日期 {days} 天")
                    await self._notify(
                        CommitmentNoticeKind.REMINDER,
                        f"reminder/{key}",
                        day=self._completion_date,
                        days=days,
                    )
                    continue
                if pending and self._due_at is not None and workflow.now() >= self._due_at:
                    await self._raise_overdue(CaseStage.PROJECT, [self._check.department_code])
                    continue
                if not pending and workflow.now() >= self._deadline():
                    self.log("system", "not_completed", "完成期限（含宽限期）内未提交完工材料")
                    return False
                continue
            if len(self._progress) > self._seen:
                for update in self._progress[self._seen :]:
                    self.log(update.actor.name, "progress", update.report.note)
                self._seen = len(self._progress)
            if self._completion is not None:
                return True
            if self._extension_ruling is not None:
                await self._rule_on_extension()
            elif self._extension is not None and self._due_at is None:
                request = self._extension.request
                self.log(
                    self._extension.actor.name,
                    "extension_requested",
                    f"申请延期至 {request.completion_date.isoformat()}：{request.reason}",
                )
                self._due_at = await self._working_deadline(self._limit(Stage.COMPLETION_REVIEW))
            await self._ack()

    async def _rule_on_extension(self) -> None:
        assert self._extension is not None and self._extension_ruling is not None
        ruling, asked = self._extension_ruling, self._extension.request
        approved = ruling.decision.approve
        if approved:
            old = self._completion_date
            self._completion_date = asked.completion_date
            detail = f"完成日期由 {old.isoformat()} 调整为 {asked.completion_date.isoformat()}"
        else:
            detail = "不同意延期"
        self.log(ruling.actor.name, "extension_decided", f"{detail}：{ruling.decision.reason}")
        self._extended, self._due_at, self._extension_ruling = True, None, None
        if self._overdue:
            self._overdue = False
            workflow.upsert_search_attributes([sa_keys.OVERDUE.value_set(False)])
        await self._notify(
            CommitmentNoticeKind.EXTENSION,
            "extension",
            day=self._completion_date,
            approved=approved,
            text=ruling.decision.reason,
        )

    async def _review_completion(self) -> None:
        """The department accepts the achieved figures (beside the data's), then finance
        confirms the settlement; either may send it back a step."""
        assert self._check is not None
        while True:
            assert self._completion is not None
            completion = self._completion.completion
            self.log(self._completion.actor.name, "completed", completion.note)
            self._input.materials.update(completion.materials)
            self._evidence = await workflow.execute_activity_method(
                CommitmentActivities.gather_evidence,
                EvidenceRequest(
                    uscc=self.uscc,
                    declared=completion.achieved,
                    facts=[t.fact for t in self._check.terms.targets],
                ),
                **DATABASE,
            )
            self._completion_ruling = None
            ruling = await self._await_review(
                CaseStage.COMPLETION_REVIEW, lambda: self._completion_ruling
            )
            review = ruling.review
            if review.action is CompletionAction.RETURN:
                self.log(ruling.actor.name, "returned", review.reason)
                self._corrections, self._completion = list(review.corrections), None
                await self.enter(CaseStage.CORRECTION)
                await self._tail.wait_for(lambda: self._completion is not None)
                self._corrections = []
                continue
            self._achieved = {**completion.achieved, **review.corrected}
            changes = "；".join(
                f"{fact} 由 {completion.achieved[fact]:,} 更正为 {value:,}"
                for fact, value in review.corrected.items()
                if completion.achieved.get(fact) != value
            )
            self.log(
                ruling.actor.name, "accepted", "；".join(filter(None, [changes, review.reason]))
            )
            self._settlement = await workflow.execute_activity_method(
                CommitmentActivities.settle, self._money(self._prepaid), **DATABASE
            )
            if workflow.patched(SMART_REVIEW):
                # Cases paid since the joint review are checked too; a finding holds the
                # settlement until two reviewers clear it.
                self._to_verify += await self._smart.run(
                    self._review_request(CaseStage.SETTLEMENT_REVIEW)
                )
            self._decision = None
            request = await self._await_review(CaseStage.SETTLEMENT_REVIEW, lambda: self._decision)
            self.log(request.actor.name, request.decision.action.value, request.decision.reason)
            if request.decision.action is ReviewAction.APPROVE:
                return
            # Finance sends the figures back to the department.
            self._achieved = None

    async def _await_review(self, stage: CaseStage, taken: Callable[[], Ruling | None]) -> Ruling:
        """Wait for a unit's ruling at a review stage against its working-day limit."""
        policy_stage = (
            Stage.COMPLETION_REVIEW if stage is CaseStage.COMPLETION_REVIEW else Stage.SETTLEMENT
        )
        limit = self._limit(policy_stage)
        self._due_at = await self._working_deadline(limit)
        await self.enter(stage)
        try:
            await self._tail.wait_for(
                lambda: taken() is not None, within=max(self._due_at - workflow.now(), timedelta(0))
            )
        except TimeoutError:
            await self._raise_overdue(stage, [limit.department_code])
            await self._tail.wait_for(lambda: taken() is not None)
        ruling = taken()
        assert ruling is not None
        return ruling

    # ----- recovery --------------------------------------------------------------------

    async def _recover(self, principal: int, reason: str) -> None:
        """Bring back `principal`: notice, receipts, interest, plan, waiver, default."""
        assert self._check is not None
        terms = self._check.terms
        self._recovery = await workflow.execute_activity_method(
            CommitmentActivities.open_recovery,
            RecoveryOpening(
                case_id=self.case_id,
                uscc=self.uscc,
                item_code=self.item_code,
                year=self._year(),
                principal_fen=principal,
                due_on=_today() + timedelta(days=terms.recovery_days),
                daily_interest_rate=terms.daily_interest_rate,
                reason=f"承诺未完全履行（{reason}）",
                purpose=self._check.title,
            ),
            **DATABASE,
        )
        self.log("system", "recovery_ordered", f"应退 {principal} 分，期限 {self._recovery.due_on}")
        await self.enter(CaseStage.RECOVERY)
        while True:
            view = await workflow.execute_activity_method(
                CommitmentActivities.collect_recovery,
                RecoveryCheck(case_id=self.case_id, as_of=_today()),
                **DATABASE,
            )
            credited_before = self._recovery.balance.credited_fen if self._recovery.balance else 0
            self._recovery = view
            assert view.balance is not None
            if view.balance.credited_fen != credited_before:
                self.log("budget_system", "repayment", view.balance.explanation)
            if view.balance.outstanding_fen == 0:
                how = view.balance.explanation
                await workflow.execute_activity_method(
                    CommitmentActivities.close_recovery,
                    RecoveryClose(
                        case_id=self.case_id, uscc=self.uscc, title=self._check.title, how=how
                    ),
                    **DATABASE,
                )
                self.log("system", "recovered", how)
                return
            if await self._act_on_recovery(view):
                continue
            default_at = self._default_at(view)
            if not self._defaulted and workflow.now() >= default_at:
                await self._default(view)
            wake = workflow.now() + RECOVERY_POLL
            for day in self._recovery_dates(view):
                if _day_after(day) > workflow.now():
                    wake = min(wake, _day_after(day))
            if not self._defaulted:
                wake = min(wake, default_at)
            self._recovery_check = False
            await self._ack()
            with contextlib.suppress(TimeoutError):
                await self._tail.wait_for(
                    lambda: (
                        self._recovery_check
                        or self._plan_grant is not None
                        or self._waiver is not None
                    ),
                    within=max(wake - workflow.now(), timedelta(0)),
                )

    def _recovery_dates(self, view: RecoveryView) -> list[date]:
        return [view.due_on, *(p.due_on for p in view.plan)]

    def _default_at(self, view: RecoveryView) -> datetime:
        assert self._check is not None and view.balance is not None
        late_from = view.balance.plan_broken_on or view.due_on
        if view.plan and view.balance.plan_broken_on is None:
            late_from = view.plan[-1].due_on
        return _day_after(late_from + timedelta(days=self._check.terms.recovery_grace_days))

    async def _act_on_recovery(self, view: RecoveryView) -> bool:
        """Record a plan or a waiver someone asked for; True if one was."""
        assert self._check is not None and view.balance is not None
        if self._plan_grant is not None:
            grant, self._plan_grant = self._plan_grant, None
            plan = await workflow.execute_activity_method(
                CommitmentActivities.grant_plan,
                PlanRequest(
                    case_id=self.case_id,
                    instalments=grant.grant.instalments,
                    first_due=view.due_on,
                    principal_fen=view.principal_fen,
                ),
                **DATABASE,
            )
            self.log(
                grant.actor.name, "instalments_granted", f"分 {len(plan)} 期：{grant.grant.reason}"
            )
            await self._notify(CommitmentNoticeKind.PLAN, "plan", plan=plan)
            return True
        if self._waiver is not None:
            waiver, self._waiver = self._waiver, None
            amount = min(
                waiver.waiver.amount_fen or view.balance.outstanding_fen,
                view.balance.outstanding_fen,
            )
            await workflow.execute_activity_method(
                CommitmentActivities.waive,
                WaiverRecord(
                    case_id=self.case_id,
                    amount_fen=amount,
                    on=_today(),
                    reference=f"waiver:{len(self._timeline)}:{waiver.actor.name}",
                ),
                **DATABASE,
            )
            self.log(waiver.actor.name, "waived", f"核销 {amount} 分：{waiver.waiver.reason}")
            return True
        return False

    async def _default(self, view: RecoveryView) -> None:
        assert self._check is not None and view.balance is not None
        self._defaulted = True
        outstanding = view.balance.outstanding_fen
        self.log("system", "defaulted", f"逾期未缴，尚欠 {outstanding} 分；记入信用记录")
        await workflow.execute_activity_method(
            CommitmentActivities.record_default,
            RecoveryDefault(
                case_id=self.case_id,
                uscc=self.uscc,
                item_code=self.item_code,
                title=self._check.title,
                on=_today(),
                outstanding_fen=outstanding,
                department_code=self._check.department_code,
                finance_department_code=self.finance_department(),
                due_at=_day_after(view.due_on),
            ),
            **DATABASE,
        )

    # ----- helpers ---------------------------------------------------------------------

    def _year(self) -> int:
        return self._input.budget_year or int(self.period[:4])

    def _money(self, prepaid: int) -> SettlementInput:
        assert self._check is not None and self._committed is not None
        return SettlementInput(
            case_id=self.case_id,
            item_code=self.item_code,
            year=self._year(),
            terms=self._check.terms,
            committed=self._input.project.committed,
            achieved=self._achieved,
            committed_fen=self._committed,
            prepaid_fen=prepaid,
        )

    async def _notify(self, kind: CommitmentNoticeKind, key: str, **facts: object) -> None:
        assert self._check is not None
        await workflow.execute_activity_method(
            CommitmentActivities.notify,
            CommitmentNotice.model_validate(
                {
                    "case_id": self.case_id,
                    "uscc": self.uscc,
                    "title": self._check.title,
                    "kind": kind,
                    "key": key,
                    **facts,
                }
            ),
            **DATABASE,
        )

    async def _working_deadline(self, limit: StageLimit) -> datetime:
        deadline: datetime = await workflow.execute_activity_method(
            PolicyLibraryActivities.working_deadline,
            DeadlineRequest(start=workflow.now(), working_days=limit.working_days),
            **DATABASE,
        )
        return deadline

    async def _raise_overdue(self, stage: CaseStage, units: list[str]) -> None:
        assert self._due_at is not None
        self._overdue = True
        workflow.upsert_search_attributes([sa_keys.OVERDUE.value_set(True)])
        self.log("system", "overdue", f"办理时限 {self._due_at.isoformat()}")
        for unit in units:
            await workflow.execute_activity_method(
                CaseActivities.raise_case_overdue,
                StageDeadlineMissed(
                    case_id=self.case_id,
                    item_code=self.item_code,
                    stage=stage,
                    department_code=unit,
                    due_at=self._due_at,
                ),
                **DATABASE,
            )
        await self._project()

    def _limit(self, stage: Stage) -> StageLimit:
        assert self._check is not None
        return next(s for s in self._check.stages if s.stage is stage)

    def _unit(self, who: str) -> str:
        assert self._check is not None
        return self._check.department_code if who == DEPARTMENT else self.finance_department()

    def _waiting_for(self) -> tuple[str | None, str | None, str | None]:
        """(role, unit, second unit) that must act now."""
        if self._check is None:
            return None, None, None
        stage = self._stage
        if stage is CaseStage.JOINT_REVIEW:
            pending = [u for u in (DEPARTMENT, FINANCE) if u not in self._joint]
            units = [self._unit(u) for u in pending] + [None, None]
            roles = "/".join(
                r.value
                for u in pending
                for r in (DEPARTMENT_ROLES if u == DEPARTMENT else (Role.FINANCE_CASEWORKER,))
            )
            return roles or None, units[0], units[1]
        if stage in (CaseStage.CORRECTION,):
            return Role.ENTERPRISE.value, None, None
        if stage is CaseStage.PROJECT:
            if self._extension is not None and not self._extended:
                return Role.DEPARTMENT_CASEWORKER.value, self._check.department_code, None
            return Role.ENTERPRISE.value, None, None
        if stage is CaseStage.COMPLETION_REVIEW:
            return Role.DEPARTMENT_CASEWORKER.value, self._check.department_code, None
        if stage is CaseStage.SETTLEMENT_REVIEW:
            return Role.FINANCE_CASEWORKER.value, self.finance_department(), None
        if stage is CaseStage.RECOVERY:
            return Role.ENTERPRISE.value, None, None
        role, unit = self._tail.waiting_for(stage) or (None, None)
        return role, unit, None

    async def _project(self) -> None:
        try:
            await workflow.execute_activity_method(
                CaseActivities.project_case, self.state(), **DATABASE
            )
        except ActivityError as exc:
            self.log("system", "projection_failed", failure_reason(exc))

    async def _ack(self) -> None:
        """The updates received so far are acted on: project, and let them answer. One that
        arrives while the projection is written has not been acted on yet: it waits for
        the next round (else it would answer a state without its effect, and the case
        would take another update before acting on it)."""
        received = self._received if workflow.patched(ACK_AFTER_PROJECTION) else None
        await self._project()
        # A case started before this rule answers as it always did (replay).
        self._settled = self._received if received is None else max(self._settled, received)

    async def _finish(self, stage: CaseStage) -> CaseState:
        await self.enter(stage)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.state()

    # ----- what the disbursement tail borrows (CaseHost) -------------------------------

    @property
    def stage(self) -> CaseStage:
        return self._stage

    async def enter(self, stage: CaseStage) -> None:
        self._stage, self._overdue = stage, False
        if stage not in (
            CaseStage.JOINT_REVIEW,
            CaseStage.COMPLETION_REVIEW,
            CaseStage.SETTLEMENT_REVIEW,
        ):
            self._due_at = None
        _role, unit, _also = self._waiting_for()
        workflow.upsert_search_attributes(
            [
                sa_keys.STAGE.value_set(stage.value),
                sa_keys.OVERDUE.value_set(False),
                sa_keys.DEPARTMENT.value_set(unit) if unit else sa_keys.DEPARTMENT.value_unset(),
            ]
        )
        await self._ack()

    def log(self, actor: str, action: str, detail: str = "") -> None:
        self._timeline.append(
            TimelineEntry(
                at=workflow.now(), stage=self._stage, actor=actor, action=action, detail=detail
            )
        )

    def finance_department(self) -> str:
        return self._limit(Stage.PREPAYMENT).department_code

    # ----- updates, signals, query ------------------------------------------------------

    def _refuse_while_busy(self) -> None:
        if self._received > self._settled:
            raise ApplicationError("the case is changing; try again", type=ErrorType.WRONG_STAGE)

    async def _settle(self) -> CaseState:
        self._received += 1
        wanted = self._received
        await workflow.wait_condition(lambda: self._settled >= wanted)
        return self.state()

    def _require(self, actor: Actor, roles: tuple[Role, ...], unit: str | None) -> None:
        if actor.role not in roles or (unit is not None and actor.department_code != unit):
            raise ApplicationError(
                f"stage {self._stage.value} is acted on by {unit or 'the firm'}",
                type=ErrorType.FORBIDDEN,
            )

    def _require_firm(self, actor: Actor) -> None:
        if actor.role is not Role.ENTERPRISE or actor.enterprise_uscc != self.uscc:
            raise ApplicationError("only the committed firm does this", type=ErrorType.FORBIDDEN)

    def _require_stage(self, *stages: CaseStage) -> None:
        if self._stage not in stages:
            raise ApplicationError(
                f"a case at stage {self._stage.value} takes no such request",
                type=ErrorType.WRONG_STAGE,
            )

    @workflow.update
    async def decide(self, request: DecisionRequest) -> CaseState:
        if self._stage is CaseStage.PAYMENT_FAILED:
            self._tail.retry_decision = request
        elif self._stage is CaseStage.JOINT_REVIEW:
            self._joint[self._joint_unit(request.actor)] = request
        else:
            self._decision = request
        return await self._settle()

    def _joint_unit(self, actor: Actor) -> str:
        if actor.role in DEPARTMENT_ROLES and actor.department_code == self._unit(DEPARTMENT):
            return DEPARTMENT
        return FINANCE

    @decide.validator
    def validate_decide(self, request: DecisionRequest) -> None:
        self._refuse_while_busy()
        actor, decision = request.actor, request.decision
        if self._stage is CaseStage.PAYMENT_FAILED:
            if self._tail.retry_decision is not None:
                raise ApplicationError("decided already", type=ErrorType.WRONG_STAGE)
            self._require(actor, (Role.FINANCE_CASEWORKER,), self.finance_department())
            self._tail.validate_retry(request)
            return
        if self._stage is CaseStage.JOINT_REVIEW:
            department, finance = self._unit(DEPARTMENT), self._unit(FINANCE)
            is_department = actor.role in DEPARTMENT_ROLES and actor.department_code == department
            is_finance = actor.role is Role.FINANCE_CASEWORKER and actor.department_code == finance
            if not (is_department or is_finance):
                raise ApplicationError(
                    f"joint review is decided by departments {department} and {finance}",
                    type=ErrorType.FORBIDDEN,
                )
            if self._joint_unit(actor) in self._joint:
                raise ApplicationError(
                    "your unit has decided this round already", type=ErrorType.WRONG_STAGE
                )
            check_review(decision, self._committed)
            self._smart.validate_decision(decision, self._committed)
            if decision.action is ReviewAction.RETURN and not decision.corrections:
                raise invalid_input("return needs the list of corrections", "corrections")
            return
        if self._stage is CaseStage.SETTLEMENT_REVIEW and self._decision is None:
            self._require(actor, (Role.FINANCE_CASEWORKER,), self.finance_department())
            if decision.action is ReviewAction.REJECT:
                raise invalid_input(
                    "a settlement is confirmed (approve) or sent back (return)", "action"
                )
            if decision.amount_fen is not None:
                raise invalid_input("the settlement rule sets the amount", "amount_fen")
            if decision.action is ReviewAction.RETURN and not decision.reason:
                raise invalid_input("return needs a reason", "reason")
            if decision.findings:
                raise invalid_input(
                    "a settlement upholds no finding: clear it, or send the settlement back",
                    "findings",
                )
            self._smart.validate_decision(decision, None)
            return
        raise ApplicationError(
            f"stage {self._stage.value} takes no review decision", type=ErrorType.WRONG_STAGE
        )

    @workflow.update
    async def clear_finding(self, request: ClearanceRequest) -> CaseState:
        await self._smart.clear(request)
        await self._project()
        return self.state()

    @clear_finding.validator
    def validate_clear_finding(self, request: ClearanceRequest) -> None:
        self._smart.validate_clear(request, self._may_review)

    def _may_review(self, actor: Actor) -> bool:
        """Staff of the item's department, or its finance caseworkers."""
        if self._check is None:
            return False
        return (
            actor.role in DEPARTMENT_ROLES and actor.department_code == self._unit(DEPARTMENT)
        ) or (
            actor.role is Role.FINANCE_CASEWORKER and actor.department_code == self._unit(FINANCE)
        )

    def _review_request(self, point: CaseStage) -> ReviewRequest:
        project = self._input.project
        amount = self._committed
        if point is CaseStage.SETTLEMENT_REVIEW and self._settlement is not None:
            amount = self._settlement.final_fen
        return ReviewRequest(
            case_id=self.case_id,
            category=Category.COMMITMENT.value,
            item_code=self.item_code,
            version=self._input.version,
            period=self.period,
            uscc=self.uscc,
            amount_fen=amount,
            project=ProjectClaim(
                name=project.name,
                location=project.location,
                investment_fen=project.investment_fen,
                eligible_cost_fen=project.eligible_cost_fen,
                invoices=project.invoices,
                equipment_serials=project.equipment_serials,
            ),
            declared=dict[str, int | str | bool](self._achieved or {}),
            point=point.value,
        )

    @workflow.update
    async def resubmit(self, request: ResubmitRequest) -> CaseState:
        self._resubmission = request
        return await self._settle()

    @resubmit.validator
    def validate_resubmit(self, request: ResubmitRequest) -> None:
        self._refuse_while_busy()
        self._require_firm(request.actor)
        if self._stage is not CaseStage.CORRECTION or self._resubmission is not None:
            raise ApplicationError(
                "the case is not waiting for a correction", type=ErrorType.WRONG_STAGE
            )
        if self._moments.get("approved") is not None:
            raise ApplicationError(
                "a returned completion is corrected by submitting it again (completion)",
                type=ErrorType.WRONG_STAGE,
            )

    @workflow.update
    async def report_progress(self, update: ProgressUpdate) -> CaseState:
        self._progress.append(update)
        return await self._settle()

    @report_progress.validator
    def validate_report_progress(self, update: ProgressUpdate) -> None:
        self._refuse_while_busy()
        self._require_firm(update.actor)
        self._require_stage(CaseStage.PROJECT)
        if len(self._progress) >= 200:
            raise ApplicationError("at most 200 progress reports", type=ErrorType.WRONG_STAGE)

    @workflow.update
    async def request_extension(self, ask: ExtensionAsk) -> CaseState:
        self._extension = ask
        return await self._settle()

    @request_extension.validator
    def validate_request_extension(self, ask: ExtensionAsk) -> None:
        self._refuse_while_busy()
        self._require_firm(ask.actor)
        self._require_stage(CaseStage.PROJECT)
        assert self._check is not None
        if self._extension is not None:
            raise ApplicationError("one extension may be asked for", type=ErrorType.WRONG_STAGE)
        latest = self._completion_date + timedelta(days=self._check.terms.max_extension_days)
        wanted = ask.request.completion_date
        if not self._completion_date < wanted <= latest:
            raise invalid_input(
                f"must be after {self._completion_date} and no later than {latest}",
                "completion_date",
            )

    @workflow.update
    async def decide_extension(self, ruling: ExtensionRuling) -> CaseState:
        self._extension_ruling = ruling
        return await self._settle()

    @decide_extension.validator
    def validate_decide_extension(self, ruling: ExtensionRuling) -> None:
        self._refuse_while_busy()
        self._require_stage(CaseStage.PROJECT)
        assert self._check is not None
        self._require(ruling.actor, DEPARTMENT_ROLES, self._check.department_code)
        if self._extension is None or self._extended or self._extension_ruling is not None:
            raise ApplicationError("no extension request is waiting", type=ErrorType.WRONG_STAGE)

    @workflow.update
    async def submit_completion(self, submission: CompletionSubmission) -> CaseState:
        self._completion = submission
        return await self._settle()

    @submit_completion.validator
    def validate_submit_completion(self, submission: CompletionSubmission) -> None:
        self._refuse_while_busy()
        self._require_firm(submission.actor)
        self._require_stage(CaseStage.PROJECT, CaseStage.CORRECTION)
        if self._stage is CaseStage.CORRECTION and self._moments.get("approved") is None:
            raise ApplicationError(
                "a returned application is corrected by resubmitting it",
                type=ErrorType.WRONG_STAGE,
            )
        if self._completion is not None:
            raise ApplicationError(
                "the completion is submitted already", type=ErrorType.WRONG_STAGE
            )
        assert self._check is not None
        try:
            check_figures(submission.completion.achieved, self._check.terms.targets, "achieved")
        except ValueError as exc:
            field, _, problem = str(exc).partition(": ")
            raise invalid_input(problem, field) from None

    @workflow.update
    async def review_completion(self, ruling: CompletionRuling) -> CaseState:
        self._completion_ruling = ruling
        return await self._settle()

    @review_completion.validator
    def validate_review_completion(self, ruling: CompletionRuling) -> None:
        self._refuse_while_busy()
        self._require_stage(CaseStage.COMPLETION_REVIEW)
        assert self._check is not None
        self._require(ruling.actor, DEPARTMENT_ROLES, self._check.department_code)
        if self._completion_ruling is not None:
            raise ApplicationError("reviewed already", type=ErrorType.WRONG_STAGE)
        review = ruling.review
        if review.action is CompletionAction.RETURN:
            if not review.corrections or not review.reason:
                raise invalid_input("return needs a reason and the corrections", "corrections")
            return
        if review.corrected:
            if not review.reason:
                raise invalid_input("corrected figures need a reason", "reason")
            assert self._completion is not None
            merged = {**self._completion.completion.achieved, **review.corrected}
            try:
                check_figures(merged, self._check.terms.targets, "corrected")
            except ValueError as exc:
                field, _, problem = str(exc).partition(": ")
                raise invalid_input(problem, field) from None

    @workflow.update
    async def grant_instalments(self, grant: PlanGrant) -> CaseState:
        self._plan_grant = grant
        return await self._settle()

    @grant_instalments.validator
    def validate_grant_instalments(self, grant: PlanGrant) -> None:
        self._refuse_while_busy()
        self._require_stage(CaseStage.RECOVERY)
        self._require(grant.actor, (Role.FINANCE_CASEWORKER,), self.finance_department())
        assert self._check is not None and self._recovery is not None
        if self._recovery.plan or self._plan_grant is not None:
            raise ApplicationError("an instalment plan exists already", type=ErrorType.WRONG_STAGE)
        if _today() > self._recovery.due_on:
            raise ApplicationError(
                "an instalment plan is granted before the deadline", type=ErrorType.WRONG_STAGE
            )
        most = self._check.terms.max_instalments
        if grant.grant.instalments > most:
            raise invalid_input(f"at most {most} instalments", "instalments")

    @workflow.update
    async def waive(self, request: WaiverRequest) -> CaseState:
        self._waiver = request
        return await self._settle()

    @waive.validator
    def validate_waive(self, request: WaiverRequest) -> None:
        self._refuse_while_busy()
        self._require_stage(CaseStage.RECOVERY)
        self._require(request.actor, (Role.FINANCE_HEAD,), self.finance_department())
        if self._waiver is not None:
            raise ApplicationError("a waiver is being recorded", type=ErrorType.WRONG_STAGE)

    @workflow.update
    async def confirm_account(self, actor: Actor) -> CaseState:
        self._tail.account_confirmation = actor
        return await self._settle()

    @confirm_account.validator
    def validate_confirm_account(self, actor: Actor) -> None:
        self._refuse_while_busy()
        self._tail.validate_confirm_account(actor)

    @workflow.update
    async def withdraw(self, request: WithdrawRequest) -> CaseState:
        self._tail.withdrawal = request
        return await self._settle()

    @withdraw.validator
    def validate_withdraw(self, request: WithdrawRequest) -> None:
        self._refuse_while_busy()
        finance = self.finance_department() if self._check else None
        withdrawable = WITHDRAWABLE if self._prepaid == 0 else frozenset()
        if self._stage is CaseStage.CORRECTION and self._moments.get("approved"):
            withdrawable = frozenset()
        self._tail.validate_withdraw(request, withdrawable, finance)

    @workflow.signal
    def budget_added(self) -> None:
        self._tail.budget_added = True

    @workflow.signal
    def check_recovery(self) -> None:
        """Read the budget system's receipts now (the API sends it when asked)."""
        self._recovery_check = True

    @workflow.query
    def state(self) -> CaseState:
        role, unit, also = self._waiting_for()
        check = self._check
        view = None
        if check is not None:
            grace = timedelta(days=check.terms.completion_grace_days)
            view = CommitmentView(
                project=self._input.project,
                signature=self._input.signature,
                committed_fen=self._committed,
                prepaid_fen=self._prepaid,
                completion_date=self._completion_date,
                completion_deadline=_day_after(self._completion_date + grace),
                extension=(
                    {
                        "requested": self._extension.request.model_dump(mode="json"),
                        "decided": self._extended,
                    }
                    if self._extension
                    else None
                ),
                progress=[
                    {"by": p.actor.name, **p.report.model_dump(mode="json")} for p in self._progress
                ],
                achieved=self._achieved
                or (self._completion.completion.achieved if self._completion else None),
                evidence={line.fact: line.model_dump(mode="json") for line in self._evidence},
                settlement=self._settlement,
                final_payment_fen=self._final_paid,
                recovery=self._recovery,
                joint_review={
                    unit_name: r.decision.action.value for unit_name, r in self._joint.items()
                },
            )
        return CaseState(
            case_id=self.case_id,
            item_code=self.item_code,
            version=self._input.version,
            period=self.period,
            uscc=self.uscc,
            stage=self._stage,
            waiting_for_role=role,
            waiting_for_department=unit,
            also_waiting_for_department=also,
            due_at=self._due_at,
            overdue=self._overdue,
            verdict=check.verdict if check else None,
            computed_amount_fen=check.committed_fen if check else None,
            approved_amount_fen=self._committed if self._moments.get("approved") else None,
            paid_amount_fen=self._prepaid + self._final_paid,
            instalment=self._tail.instalment,
            corrections=list(self._corrections),
            timeline=list(self._timeline),
            conditions=list(check.conditions) if check else [],
            to_verify=list(self._to_verify),
            failure_reason=self._tail.failure,
            moments=dict(self._moments),
            commitment=view,
            evidence=list(self._smart.evidence),
            findings=self._smart.findings,
        )
