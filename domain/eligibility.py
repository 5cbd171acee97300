"""The eligibility assessment: one firm, one item version, one day.

Every "may this firm receive this item, and how much?" about a single firm is answered
by `assess`: the automatic check of an application, the eligibility report and the gap
report; recognition identification, commitment settlement and the duplicate-benefit
review are to ask it too, so that no two of them can disagree. (The match library asks
the same question of every firm at once through the array engine,
`domain.engine.arrays`, which the tests hold to the same verdicts and amounts.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession

from domain.engine.amounts import compute_amount
from domain.engine.rules import KnownFact, evaluate
from domain.policy.versions import load_version, published_version
from domain.registry.enterprises import known_facts
from models.eligibility import ConditionResult, Verdict


@dataclass(frozen=True)
class Assessment:
    """What an item version's rules say of one firm's facts on one day."""

    item_code: str
    version: int
    uscc: str
    on: date
    verdict: Verdict
    # One result per leaf condition of the rule, in rule order, each with its reason.
    conditions: list[ConditionResult]
    # None when the firm is ruled out, or when the amount rule lacks a fact it needs.
    amount_fen: int | None
    # How the amount rule arrived at its figure, or why it could not; stated even when
    # the firm is ruled out.
    amount_explanation: str

    @property
    def ruled_out(self) -> bool:
        """Not eligible (eligible and possibly eligible firms are not ruled out)."""
        return self.verdict is Verdict.NOT_ELIGIBLE


async def assess(
    session: AsyncSession,
    item_code: str,
    uscc: str,
    on: date,
    version: int | None = None,
    committed: Mapping[str, int] | None = None,
) -> Assessment:
    """Assess one firm under one version of an item, on the day `on`.

    `version` is the version to assess (a case is assessed under the version it applied
    to); by default it is the item's published version (`published_version`), whether
    or not in force today: a caller that needs it in force checks its status.

    The firm's known facts are evaluated against the version's eligibility rule as of
    `on` (a fact too old by then reads as unknown, reason `stale`), and its amount rule
    gives the amount. A stored fact that fails its kind's type or range reads as unknown
    (reason `invalid`), never as an error. The firm's registry entry is not read: a
    caller that needs it (or its existence) reads it.

    `committed` are a commitment's committed figures: the amount rule reads them in
    place of the firm's recorded facts of those kinds (the conditions never do).

    Raises NotFound for an unknown item or version, NotPublished when no version is
    given and the item was never published, and UnevaluableVersion (409) when the
    version's stored rules cannot be read."""
    if version is None:
        version = await published_version(session, item_code)
    compiled = await load_version(session, item_code, version)
    facts = await known_facts(session, uscc)
    evaluation = evaluate(compiled.rule, facts, on)
    promised = {name: KnownFact(value, on) for name, value in (committed or {}).items()}
    amount = compute_amount(compiled.amount_rule, {**facts, **promised})
    ruled_out = evaluation.verdict is Verdict.NOT_ELIGIBLE
    return Assessment(
        item_code=item_code,
        version=compiled.version,
        uscc=uscc,
        on=on,
        verdict=evaluation.verdict,
        conditions=evaluation.conditions,
        amount_fen=None if ruled_out else amount.amount_fen,
        amount_explanation=amount.explanation,
    )
