"""Policy intake (政策归集): the documents government portals publish, as the policy feed
serves them, and what the harvest keeps of them.

The feed is paged with an opaque cursor: a page holds publications in the order the
portals published them, and the cursor after the last one asks only for what came
later. A publication is one portal's copy of one revision of a document; a document is
known by its issuer and number (文号), so the same document republished by two portals,
or served again, is one document with two sources and no new version.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from models.policy import Level
from models.types import UTCDateTime, utcnow

MAX_PAGE_SIZE = 100
# A document's dates lie in these years, as every date the platform takes.
EARLIEST_DAY = date(1900, 1, 1)
LATEST_DAY = date(2099, 12, 31)
FEED_ID = "policy-feed"  # the one feed the platform harvests (its cursor's key)

# ----- the feed's wire format -------------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class DocumentKey(_Wire):
    doc_number: str = PydanticField(min_length=1, max_length=64)
    issuer: str = PydanticField(min_length=1, max_length=128)


class Article(_Wire):
    number: str = PydanticField(max_length=32)
    text: str = PydanticField(min_length=1, max_length=20_000)


class Attachment(_Wire):
    name: str = PydanticField(min_length=1, max_length=256)
    url: str = PydanticField(min_length=1, max_length=1024)


class Publication(_Wire):
    """One portal's copy of one revision of a document."""

    portal: str = PydanticField(min_length=1, max_length=64)
    source_url: str = PydanticField(min_length=1, max_length=1024)
    published_at: datetime
    revision: int = PydanticField(ge=1, le=1000)
    doc_number: str = PydanticField(min_length=1, max_length=64)
    issuer: str = PydanticField(min_length=1, max_length=128)
    level: Level
    region_code: str = PydanticField(min_length=1, max_length=16)
    department: str = PydanticField(min_length=1, max_length=32)
    title: str = PydanticField(min_length=1, max_length=512)
    issued_on: date = PydanticField(ge=EARLIEST_DAY, le=LATEST_DAY)
    effective_from: date | None = PydanticField(default=None, ge=EARLIEST_DAY, le=LATEST_DAY)
    expires_on: date | None = PydanticField(default=None, ge=EARLIEST_DAY, le=LATEST_DAY)
    amends: DocumentKey | None = None
    repeals: list[DocumentKey] = PydanticField(default_factory=list, max_length=50)
    contact: str | None = PydanticField(default=None, max_length=256)
    articles: list[Article] = PydanticField(min_length=1, max_length=500)
    attachments: list[Attachment] = PydanticField(default_factory=list, max_length=100)

    @property
    def key(self) -> DocumentKey:
        return DocumentKey(doc_number=self.doc_number, issuer=self.issuer)

    def content(self) -> dict[str, Any]:
        """What makes one revision differ from another (not where or when it was seen)."""
        return self.model_dump(
            mode="json", exclude={"portal", "source_url", "published_at", "revision"}
        )


class FeedPage(_Wire):
    items: list[Publication]
    next_cursor: str = PydanticField(min_length=1, max_length=256)
    has_more: bool
    # Publications of the page that were not in the protocol's shape (the adapter reads
    # each on its own): why, each; the page's others are stored and the cursor moves on.
    rejected: list[str] = PydanticField(default_factory=list)


class RawFeedPage(_Wire):
    """A page as it arrives, its publications not yet read one by one."""

    items: list[dict[str, Any]]
    next_cursor: str = PydanticField(min_length=1, max_length=256)
    has_more: bool


# ----- what the harvest keeps ---------------------------------------------------------


class HarvestedDocument(SQLModel, table=True):
    """A published policy document, known by issuer and number, with its latest content."""

    __tablename__ = "harvested_document"
    __table_args__ = (sa.UniqueConstraint("issuer", "doc_number"),)

    id: int | None = Field(default=None, primary_key=True)
    issuer: str = Field(max_length=128)
    doc_number: str = Field(max_length=64, index=True)
    title: str = Field(max_length=512)
    level: Level = Field(sa_type=sa.String(16), index=True)
    region_code: str = Field(max_length=16, index=True)
    department: str = Field(max_length=32)
    issued_on: date
    effective_from: date | None = None
    expires_on: date | None = None
    versions: int = 1
    amends_id: int | None = Field(default=None, foreign_key="harvested_document.id")
    repealed_by_id: int | None = Field(default=None, foreign_key="harvested_document.id")
    first_seen_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    changed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class HarvestedVersion(SQLModel, table=True):
    """Every distinct content a document was published with, in the order first seen."""

    __tablename__ = "harvested_version"
    __table_args__ = (
        sa.UniqueConstraint("document_id", "version"),
        sa.UniqueConstraint("document_id", "content_sha256"),
    )

    id: int | None = Field(default=None, primary_key=True)
    document_id: int = Field(foreign_key="harvested_document.id", index=True)
    version: int
    revision: int  # the portal's own revision number
    content_sha256: str = Field(max_length=64)
    content: Any = Field(sa_type=sa.JSON)  # Publication.content()
    published_at: datetime = Field(sa_type=UTCDateTime)
    seen_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DocumentChange(SQLModel, table=True):
    """A document's word that it amends or repeals another (by issuer and 文号), kept
    whether or not that one has been harvested: portals do not always publish in order,
    and the change is applied when the changed document arrives."""

    __tablename__ = "document_change"
    __table_args__ = (sa.UniqueConstraint("cause_document_id", "kind", "issuer", "doc_number"),)

    id: int | None = Field(default=None, primary_key=True)
    cause_document_id: int = Field(foreign_key="harvested_document.id", index=True)
    kind: str = Field(max_length=16)  # AlertKind: amended or repealed
    issuer: str = Field(max_length=128)
    doc_number: str = Field(max_length=64, index=True)


class HarvestedSource(SQLModel, table=True):
    """Where a document was published: one row per portal."""

    __tablename__ = "harvested_source"
    __table_args__ = (sa.UniqueConstraint("document_id", "portal"),)

    id: int | None = Field(default=None, primary_key=True)
    document_id: int = Field(foreign_key="harvested_document.id", index=True)
    portal: str = Field(max_length=64)
    source_url: str = Field(max_length=1024)
    published_at: datetime = Field(sa_type=UTCDateTime)


class FeedCursor(SQLModel, table=True):
    """How far a feed has been read (the policy feed, the data platform's changes):
    moved in the transaction that stores the page it follows."""

    __tablename__ = "feed_cursor"

    feed: str = Field(primary_key=True, max_length=64)
    cursor: str = Field(max_length=256)
    pages: int = 0
    items: int = 0  # publications, or firms whose figures changed
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AlertKind(enum.StrEnum):
    AMENDED = "amended"  # the item's document was amended: check the item still says it
    REPEALED = "repealed"  # the item's document was repealed: suspend or replace the item


class PolicyAlert(SQLModel, table=True):
    """A warning to an item's department that its source document changed. Nothing is
    changed for them: the department suspends or replaces the item through the library's
    approval, and marks the alert handled."""

    __tablename__ = "policy_alert"
    __table_args__ = (sa.UniqueConstraint("kind", "item_code", "cause_document_id"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: AlertKind = Field(sa_type=sa.String(16))
    item_code: str = Field(foreign_key="policy_item.code", max_length=40, index=True)
    department_code: str = Field(foreign_key="department.code", max_length=32, index=True)
    document_id: int = Field(foreign_key="harvested_document.id")  # the item's document
    cause_document_id: int = Field(foreign_key="harvested_document.id")  # the amending one
    message: str = Field(sa_type=sa.Text)
    raised_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    handled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    handled_by: str | None = Field(default=None, max_length=64)


class DraftProposal(SQLModel, table=True):
    """An item the extractor proposes from one article of one version of a document
    (domain/policy/extraction.py), with the sentence behind each condition and how sure
    it is. A department caseworker adopts it as a library draft, edits and submits it
    through the library's approval; it is never published as it stands."""

    __tablename__ = "draft_proposal"
    __table_args__ = (sa.UniqueConstraint("document_id", "version", "article"),)

    id: int | None = Field(default=None, primary_key=True)
    document_id: int = Field(foreign_key="harvested_document.id", index=True)
    version: int
    article: str = Field(max_length=64)
    title: str = Field(max_length=256)
    category: str = Field(max_length=16)
    period_scheme: str = Field(max_length=16)
    eligibility: Any = Field(sa_type=sa.JSON)  # the proposed rule (all of the below)
    evidence: Any = Field(sa_type=sa.JSON)  # [{rule, quote, confidence, manual}]
    amount_rule: Any = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    amount_quote: str | None = Field(default=None, sa_type=sa.Text)
    amount_confidence: float | None = None
    amount_note: str | None = Field(default=None, sa_type=sa.Text)  # pays, but no rule read
    adopted_item_code: str | None = Field(default=None, max_length=40)
    adopted_by: str | None = Field(default=None, max_length=64)
    adopted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class HarvestReport(BaseModel):
    """What one harvested page did."""

    publications: int = 0
    new_documents: int = 0
    new_versions: int = 0
    new_sources: int = 0
    proposals: int = 0
    alerts: int = 0
    rejected: int = 0  # publications not in the protocol's shape, skipped
    has_more: bool = False
