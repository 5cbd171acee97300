"""Admitting a commitment: the letter a firm signs, the project it commits to, its claim
on the item's period, and the automatic check (eligibility today, committed amount)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from domain.access import require_role
from domain.cases.admission import admissible_period, claim_period, confirm_claim, open_version
from domain.eligibility import assess
from domain.errors import InvalidInput, NotFound
from domain.policy.library import get_item, get_version
from domain.policy.versions import UnevaluableVersion, commitment_terms
from domain.registry.enterprises import get_enterprise, latest_facts_query
from models.commitment import (
    CommitmentCheck,
    CommitmentInput,
    CommitmentRequest,
    EvidenceLine,
    EvidenceRequest,
    LetterPublic,
    Signature,
    check_figures,
)
from models.eligibility import Verdict
from models.facts import FACT_KINDS
from models.policy import Category, StageLimit
from models.reference import Actor, Role


class Signer(Protocol):
    """Signs the SHA-256 of a letter for a firm's user (adapters/esignature.py)."""

    async def sign(self, letter_sha256: str, signer: str, uscc: str, origin: str) -> Signature: ...


@dataclass(frozen=True)
class CommitmentAdmission:
    commitment: CommitmentInput
    existing: bool


async def letter_of(session: AsyncSession, item_code: str, today: date) -> LetterPublic:
    """The commitment letter of the version in force, with the hash a firm signs; a
    404 for an item that takes no commitments today (the item is the path's resource)."""
    try:
        version = await open_version(session, item_code, Category.COMMITMENT, today)
        terms = commitment_terms(version)
    except (InvalidInput, UnevaluableVersion) as exc:
        raise NotFound(f"{item_code} has no commitment letter in force: {exc.detail}") from None
    return LetterPublic(
        item_code=version.item_code,
        version=version.version,
        text=terms.letter,
        sha256=terms.letter_sha256,
        targets=terms.targets,
        prepaid_pct=terms.prepaid_pct,
        prepaid_cap_fen=terms.prepaid_cap_fen,
    )


async def admit_commitment(
    session: AsyncSession,
    actor: Actor,
    request: CommitmentRequest,
    today: date,
    origin: str,
    signer: Signer,
) -> CommitmentAdmission:
    """Check the firm's project and signature against the version in force, and claim
    the period (flushed, not committed). A firm with an open or settled commitment for
    the period gets that case back."""
    require_role(actor, Role.ENTERPRISE)
    assert actor.enterprise_uscc is not None
    version = await open_version(session, request.item_code, Category.COMMITMENT, today)
    terms = commitment_terms(version)
    if request.letter.letter_sha256 != terms.letter_sha256:
        raise InvalidInput.field(
            "letter.letter_sha256",
            f"not the letter of {version.item_code} version {version.version}: fetch it "
            "again and sign what it says",
        )
    try:
        check_figures(request.project.committed, terms.targets, "project.committed")
    except ValueError as exc:
        field, _, problem = str(exc).partition(": ")
        raise InvalidInput.field(field, problem) from None
    completion = request.project.completion_date
    latest = today + timedelta(days=terms.max_project_days)
    if not today < completion <= latest:
        raise InvalidInput.field(
            "project.completion_date", f"must be after {today} and no later than {latest}"
        )
    period = admissible_period(request.period, version, today)
    claim, existing = await claim_period(
        session, version.item_code, actor.enterprise_uscc, period.text, Category.COMMITMENT
    )
    signature = await signer.sign(terms.letter_sha256, actor.name, actor.enterprise_uscc, origin)
    commitment = CommitmentInput(
        case_id=claim.case_id,
        item_code=claim.item_code,
        version=version.version,
        period=claim.period,
        uscc=claim.uscc,
        applicant=actor.name,
        project=request.project,
        signature=signature,
        materials=request.materials,
        attempt=claim.attempt,
        budget_year=today.year if period.start is None else None,
    )
    return CommitmentAdmission(commitment, existing)


async def check_commitment(
    session: AsyncSession, commitment: CommitmentInput, today: date
) -> CommitmentCheck:
    """Hold the claim, then assess: eligibility on the firm's facts today, the committed
    amount on its committed figures. A rule that cannot be evaluated goes to people."""
    await confirm_claim(session, commitment, Category.COMMITMENT)
    version = await get_version(session, commitment.item_code, commitment.version)
    item = await get_item(session, commitment.item_code)
    enterprise = await get_enterprise(session, commitment.uscc)
    unchecked = CommitmentCheck(
        verdict=Verdict.POSSIBLY_ELIGIBLE,
        conditions=[],
        committed_fen=None,
        amount_explanation="无法自动计算承诺金额",
        stages=[StageLimit.model_validate(s) for s in version.stages],
        region_code=enterprise.region_code,
        department_code=item.department_code,
        title=version.title,
        terms=commitment_terms(version),
    )
    try:
        assessment = await assess(
            session,
            commitment.item_code,
            commitment.uscc,
            today,
            commitment.version,
            committed=commitment.project.committed,
        )
    except UnevaluableVersion as exc:
        failure = exc.reason
    except (ValueError, ArithmeticError) as exc:
        failure = str(exc)
    else:
        return unchecked.model_copy(
            update={
                "verdict": assessment.verdict,
                "conditions": assessment.conditions,
                "committed_fen": assessment.amount_fen,
                "amount_explanation": assessment.amount_explanation,
            }
        )
    return unchecked.model_copy(update={"failure": f"自动核验失败，请人工审核：{failure[:300]}"})


async def evidence(session: AsyncSession, request: EvidenceRequest) -> list[EvidenceLine]:
    """The latest recorded figure of each fact beside what the firm declared (智审)."""
    rows = await session.scalars(latest_facts_query([request.uscc]))
    recorded = {r.kind: r for r in rows if r.kind in request.facts}
    lines = []
    for fact in request.facts:
        row = recorded.get(fact)
        value = row.value if row is not None and isinstance(row.value, int) else None
        declared = request.declared.get(fact)
        if value is None:
            note = "数据平台无该项记录，需人工核实"
        elif declared is None:
            note = "企业未申报"
        elif declared > value:
            note = f"企业申报高于数据记录 {declared - value:,}"
        else:
            note = "与数据记录一致或低于记录"
        lines.append(
            EvidenceLine(
                fact=fact,
                label=FACT_KINDS[fact].label,
                declared=declared,
                recorded=value,
                period_end=row.period_end if row is not None else None,
                source=row.source if row is not None else None,
                note=note,
            )
        )
    return lines
