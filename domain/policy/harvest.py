"""Storing what the policy feed published (政策归集), idempotently.

A page is stored in one transaction with the cursor after it (`store_page`), so a crash
before the commit leaves the cursor where it was and the page is fetched again; storing
it again changes nothing. A document is known by issuer and number: a publication of a
known document with the same content adds at most a source (another portal), one with
new content adds a version, and the items the extractor proposes from it
(domain/policy/intake.py); nothing is ever overwritten but the document's summary
columns, which follow its latest version.

An amendment is linked to the document it amends, a repeal marks the repealed document;
either raises an alert, with a notice, to the department of every library item drawn
from the changed document (matched by document number). Portals do not always publish
in order: a change to a document not harvested yet is kept (`DocumentChange`) and
applied when the document arrives. The item itself is not
touched: its department suspends or replaces it through the library's approval.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from domain.policy import intake
from models.policy import PolicyDocument, PolicyItem
from models.policy_feed import (
    AlertKind,
    DocumentChange,
    DocumentKey,
    FeedCursor,
    FeedPage,
    HarvestedDocument,
    HarvestedSource,
    HarvestedVersion,
    HarvestReport,
    Publication,
)
from models.types import utcnow


async def cursor_of(session: AsyncSession, feed: str) -> str | None:
    row = await session.get(FeedCursor, feed)
    return None if row is None else row.cursor


def content_hash(publication: Publication) -> str:
    """What tells one version from another: the content, but not where a portal keeps
    its copy of an attachment (a republishing portal hosts its own)."""
    content = publication.content()
    content["attachments"] = [a["name"] for a in content["attachments"]]
    text = json.dumps(content, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


async def store_page(
    session: AsyncSession, feed: str, after: str | None, page: FeedPage
) -> HarvestReport:
    """Store a page fetched with the cursor `after` and move the feed's cursor past it.
    If the stored cursor is no longer `after` (another harvest stored this page first),
    nothing is stored: the caller fetches again from where the feed now stands."""
    row = await session.get(FeedCursor, feed, with_for_update=True)
    if (None if row is None else row.cursor) != after:
        return HarvestReport(has_more=True)
    report = HarvestReport(
        publications=len(page.items), rejected=len(page.rejected), has_more=page.has_more
    )
    for publication in page.items:
        await _store(session, publication, report)
    if row is None:
        row = FeedCursor(feed=feed, cursor=page.next_cursor)
        session.add(row)
    row.cursor = page.next_cursor
    row.pages += 1
    row.items += len(page.items) + len(page.rejected)
    row.updated_at = utcnow()
    await session.flush()
    return report


async def _document(session: AsyncSession, key: DocumentKey) -> HarvestedDocument | None:
    found: HarvestedDocument | None = await session.scalar(
        select(HarvestedDocument).where(
            HarvestedDocument.issuer == key.issuer, HarvestedDocument.doc_number == key.doc_number
        )
    )
    return found


async def _store(session: AsyncSession, publication: Publication, report: HarvestReport) -> None:
    document = await _document(session, publication.key)
    digest = content_hash(publication)
    arrived = document is None
    if document is None:
        document = HarvestedDocument(
            issuer=publication.issuer,
            doc_number=publication.doc_number,
            versions=0,
            **publication.model_dump(include=set(SUMMARY)),
        )
        session.add(document)
        await session.flush()
        report.new_documents += 1
    assert document.id is not None
    known = await session.scalar(
        select(HarvestedVersion.id).where(
            HarvestedVersion.document_id == document.id,
            HarvestedVersion.content_sha256 == digest,
        )
    )
    if known is None:
        document.versions += 1
        version = HarvestedVersion(
            document_id=document.id,
            version=document.versions,
            revision=publication.revision,
            content_sha256=digest,
            content=publication.content(),
            published_at=publication.published_at,
        )
        session.add(version)
        for name in SUMMARY:  # the document reads as its latest version
            setattr(document, name, getattr(publication, name))
        document.changed_at = utcnow()
        await session.flush()
        report.new_versions += 1
        report.proposals += await intake.propose(session, document, version)
    source = await session.scalar(
        select(HarvestedSource).where(
            HarvestedSource.document_id == document.id,
            HarvestedSource.portal == publication.portal,
        )
    )
    if source is None:
        session.add(
            HarvestedSource(
                document_id=document.id,
                portal=publication.portal,
                source_url=publication.source_url,
                published_at=publication.published_at,
            )
        )
        report.new_sources += 1
    elif publication.published_at > source.published_at:
        source.source_url = publication.source_url
        source.published_at = publication.published_at
    await session.flush()
    changes = [(AlertKind.REPEALED, key) for key in publication.repeals]
    if publication.amends is not None:
        changes.append((AlertKind.AMENDED, publication.amends))
    for kind, key in changes:
        await _note_change(session, document, kind, key)
        changed = await _document(session, key)
        if changed is not None:
            report.alerts += await _apply(session, kind, changed, document)
    if arrived:  # an amendment or repeal of it harvested before it: applied now
        earlier = await session.scalars(
            select(DocumentChange).where(
                DocumentChange.issuer == document.issuer,
                DocumentChange.doc_number == document.doc_number,
            )
        )
        for change in list(earlier):
            cause = await session.get(HarvestedDocument, change.cause_document_id)
            assert cause is not None
            report.alerts += await _apply(session, AlertKind(change.kind), document, cause)
    await session.flush()


async def _note_change(
    session: AsyncSession, cause: HarvestedDocument, kind: AlertKind, key: DocumentKey
) -> None:
    assert cause.id is not None
    noted = await session.scalar(
        select(DocumentChange.id).where(
            DocumentChange.cause_document_id == cause.id,
            DocumentChange.kind == kind.value,
            DocumentChange.issuer == key.issuer,
            DocumentChange.doc_number == key.doc_number,
        )
    )
    if noted is None:
        session.add(
            DocumentChange(
                cause_document_id=cause.id,
                kind=kind.value,
                issuer=key.issuer,
                doc_number=key.doc_number,
            )
        )
        await session.flush()


async def _apply(
    session: AsyncSession,
    kind: AlertKind,
    changed: HarvestedDocument,
    cause: HarvestedDocument,
) -> int:
    """Link the change to the document it changes, and warn its items' departments."""
    if kind is AlertKind.AMENDED:
        cause.amends_id = changed.id
    else:
        changed.repealed_by_id = cause.id
    return await _alert(session, kind, changed, cause)


# What a harvested document's own columns hold of its latest version.
SUMMARY = (
    "title",
    "level",
    "region_code",
    "department",
    "issued_on",
    "effective_from",
    "expires_on",
)


@dataclass(frozen=True)
class _Item:
    code: str
    department_code: str


async def _items_from(session: AsyncSession, document: HarvestedDocument) -> list[_Item]:
    rows = await session.execute(
        sa.select(col(PolicyItem.code), col(PolicyItem.department_code))
        .join(PolicyDocument, col(PolicyDocument.id) == col(PolicyItem.document_id))
        .where(col(PolicyDocument.doc_number) == document.doc_number)
        .order_by(col(PolicyItem.code))
    )
    return [_Item(code, department) for code, department in rows]


async def _alert(
    session: AsyncSession,
    kind: AlertKind,
    changed: HarvestedDocument,
    cause: HarvestedDocument,
) -> int:
    """An alert to the department of every item drawn from `changed`; how many were new."""
    raised = 0
    for item in await _items_from(session, changed):
        raised += await intake.alert_item(
            session, kind, changed, cause, item.code, item.department_code
        )
    return raised
