"""An item version's stored rules, read defensively.

Rules are validated when they are written, but the database may hold one that no
longer parses (written by an older release, or planted past every validator). The
rules are therefore read as text and parsed here, one version at a time: a run skips
and reports a version it cannot read (`ItemFailure`), and an endpoint answers 409
(`UnevaluableVersion`) rather than failing.

Which version of an item is the published one is asked here too (`published_version`),
and how a recognition version's cases run (`recognition_terms`).
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from domain.engine.amounts import parse_amount_rule
from domain.engine.arrays import CompiledItem, ItemFailure, failure_message
from domain.engine.rules import InvalidRule, RuleError, parse_rule
from domain.errors import Conflict, NotFound
from models.commitment_terms import CommitmentTerms
from models.policy import PolicyItem, PolicyItemVersion, VersionStatus
from models.recognition import RecognitionTerms


class UnevaluableVersion(Conflict):
    code = "unevaluable_rule"
    title = "Rule cannot be evaluated"

    def __init__(self, item_code: str, version: int, reason: str) -> None:
        super().__init__(
            f"version {version} of policy item {item_code}: this version's rule cannot be "
            f"evaluated: {reason}"
        )
        self.item_code = item_code
        self.version = version
        self.reason = reason


class NotPublished(NotFound):
    """An item that was never published: there is no version firms may see."""

    def __init__(self, item_code: str) -> None:
        super().__init__(f"policy item {item_code} has no published version")
        self.item_code = item_code


async def published_version(session: AsyncSession, item_code: str) -> int:
    """The number of an item's published version: the one firms see, and the one new
    cases and the match library use while it is in force. NotFound for an unknown item,
    NotPublished for one never published.

    A suspended or expired version stays the published one until another is published:
    whether it is in force is its status (`VersionStatus.PUBLISHED`) and its validity,
    which a caller that acts on it (admitting an application, suspending) checks."""
    item = await session.get(PolicyItem, item_code)
    if item is None:
        raise NotFound(f"policy item {item_code} not found")
    if item.published_version is None:
        raise NotPublished(item_code)
    return item.published_version


class NotInForce(Conflict):
    """The published version is suspended or expired: nothing may act on it now."""

    def __init__(self, row: PolicyItemVersion) -> None:
        super().__init__(f"version {row.version} of {row.item_code} is {row.status}")
        self.row = row


async def version_in_force(session: AsyncSession, item_code: str) -> PolicyItemVersion:
    """The published version, when it is in force (status published): what admitting a
    case or suspending the item acts on. NotFound, NotPublished or NotInForce otherwise;
    the caller says what each means to its own request."""
    version = await published_version(session, item_code)
    row = await session.scalar(
        sa.select(PolicyItemVersion).where(
            col(PolicyItemVersion.item_code) == item_code,
            col(PolicyItemVersion.version) == version,
        )
    )
    if row is None:
        raise NotFound(f"version {version} of policy item {item_code} not found")
    if row.status != VersionStatus.PUBLISHED:
        raise NotInForce(row)
    return row


def recognition_terms(version: PolicyItemVersion) -> RecognitionTerms:
    """How the version's recognition cases run: the terms it was published with, or
    the defaults for a version that stores none (one written before items had terms)."""
    if version.recognition_terms is None:
        return RecognitionTerms()
    return RecognitionTerms.model_validate(version.recognition_terms)


def commitment_terms(version: PolicyItemVersion) -> CommitmentTerms:
    """How the version's commitment cases run (a commitment version always has terms)."""
    if version.commitment_terms is None:
        raise UnevaluableVersion(version.item_code, version.version, "no commitment terms")
    return CommitmentTerms.model_validate(version.commitment_terms)


def compile_item(item_code: str, version: int, eligibility: Any, amount_rule: Any) -> CompiledItem:
    """Parse stored rules (JSON text or decoded); raises InvalidRule naming every
    problem of both rules when they cannot be used."""
    errors: list[RuleError] = []
    try:
        rule = parse_rule(_decoded(eligibility, "eligibility"), "eligibility")
    except InvalidRule as exc:
        errors += exc.errors
    try:
        amount = parse_amount_rule(_decoded(amount_rule, "amount_rule"), "amount_rule")
    except InvalidRule as exc:
        errors += exc.errors
    if errors:
        raise InvalidRule(errors)
    return CompiledItem(item_code, version, rule, amount)


def _decoded(stored: Any, root: str) -> Any:
    if not isinstance(stored, str | bytes):
        return stored
    try:
        return json.loads(stored)
    except (ValueError, RecursionError):
        raise InvalidRule([RuleError(root, "is not readable JSON")]) from None


def _rule_columns() -> tuple[Any, ...]:
    # As text: a JSON value that does not decode fails this version alone, not the query.
    return (
        col(PolicyItemVersion.item_code),
        col(PolicyItemVersion.version),
        sa.cast(col(PolicyItemVersion.eligibility), sa.Text),
        sa.cast(col(PolicyItemVersion.amount_rule), sa.Text),
    )


def _compiled(row: Any) -> CompiledItem | ItemFailure:
    code, version, eligibility, amount_rule = row
    try:
        return compile_item(code, version, eligibility, amount_rule)
    except Exception as exc:  # isolation boundary: one version, whatever is wrong with it
        return ItemFailure(code, version, failure_message(exc))


async def load_version(session: AsyncSession, item_code: str, version: int) -> CompiledItem:
    """One version's rules, or 404 if there is no such version, or 409 if they cannot
    be evaluated."""
    row = (
        await session.execute(
            sa.select(*_rule_columns()).where(
                col(PolicyItemVersion.item_code) == item_code,
                col(PolicyItemVersion.version) == version,
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"version {version} of policy item {item_code} not found")
    compiled = _compiled(row)
    if isinstance(compiled, ItemFailure):
        raise UnevaluableVersion(item_code, version, compiled.message)
    return compiled


async def load_published(
    session: AsyncSession, item_code: str | None = None
) -> tuple[list[CompiledItem], list[ItemFailure]]:
    """The version in force of every published item (or of one): those that compile,
    and those that do not."""
    query = (
        sa.select(*_rule_columns())
        .join(
            PolicyItem,
            sa.and_(
                col(PolicyItem.code) == col(PolicyItemVersion.item_code),
                col(PolicyItem.published_version) == col(PolicyItemVersion.version),
            ),
        )
        .where(col(PolicyItemVersion.status) == VersionStatus.PUBLISHED)
        .order_by(col(PolicyItemVersion.item_code))
    )
    if item_code is not None:
        query = query.where(col(PolicyItemVersion.item_code) == item_code)
    items: list[CompiledItem] = []
    failures: list[ItemFailure] = []
    for row in await session.execute(query):
        compiled = _compiled(row)
        if isinstance(compiled, ItemFailure):
            failures.append(compiled)
        else:
            items.append(compiled)
    return items, failures
