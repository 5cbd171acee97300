"""Import of public data platform exports (enterprises, facts, bank accounts).

A file is CSV or JSONL. JSONL lines carry a `record` key (enterprise, fact or account);
a CSV either has a `record` column or holds one kind, recognised by its header. Every
row is validated first; one bad row rejects the whole file with a per-row, per-field
report, and nothing is written. Writing is idempotent: an unchanged row changes
nothing, and facts are keyed by (firm, kind, period) so a newer period supersedes an
older one without erasing it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from domain.errors import FieldError, InvalidInput
from models.facts import period_end
from models.reference import Region
from models.registry import AccountRow, BankAccount, Enterprise, EnterpriseRow, Fact, FactRow
from models.types import utcnow

if TYPE_CHECKING:
    from core.progress import ProgressCallback

RecordKind = Literal["enterprise", "fact", "account"]
ROW_MODELS: dict[str, type[BaseModel]] = {
    "enterprise": EnterpriseRow,
    "fact": FactRow,
    "account": AccountRow,
}
CHUNK = 500


@dataclass
class ValidRows:
    enterprises: list[EnterpriseRow] = field(default_factory=list)
    facts: list[FactRow] = field(default_factory=list)
    accounts: list[AccountRow] = field(default_factory=list)
    lines: dict[int, int] = field(default_factory=dict)  # id(row) -> source line


class ImportReport(BaseModel):
    rows: int
    enterprises_created: int = 0
    enterprises_updated: int = 0
    facts_created: int = 0
    facts_updated: int = 0
    accounts_created: int = 0
    accounts_updated: int = 0
    unchanged: int = 0
    written_at: datetime | None = None  # the time stamped on every row written
    # The matching run that re-matches the firms this import changed, if started.
    match_run: str | None = None

    @property
    def changed(self) -> bool:
        return any(
            (
                self.enterprises_created,
                self.enterprises_updated,
                self.facts_created,
                self.facts_updated,
            )
        )


@dataclass
class _Written:
    """Counts rows written for the "writing" phase of a `ProgressCallback`."""

    progress: ProgressCallback | None
    total: int
    done: int = 0
    reported: int = 0

    def add(self, rows: int) -> None:
        self.done += rows
        if self.progress and (self.done - self.reported >= CHUNK or self.done >= self.total):
            self.progress("writing", self.done, self.total)
            self.reported = self.done


class ImportRejected(InvalidInput):
    code = "import_rejected"
    title = "Import rejected"


def _rows(content: bytes, fmt: str) -> Iterator[tuple[int, str | None, dict[str, Any]]]:
    text = content.decode("utf-8-sig")
    if fmt == "jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, None, {"__error__": f"not valid JSON: {exc.msg}"}
                continue
            if not isinstance(data, dict):
                yield number, None, {"__error__": "each line must be a JSON object"}
                continue
            yield number, data.pop("record", None), data
        return
    reader = csv.DictReader(io.StringIO(text))
    header = set(reader.fieldnames or [])
    implied = None
    if "record" not in header:
        for kind, model in ROW_MODELS.items():
            required = {n for n, f in model.model_fields.items() if f.is_required()}
            if required <= header <= set(model.model_fields):
                implied = kind
                break
    for number, raw in enumerate(reader, start=2):
        data = {k: v for k, v in raw.items() if k is not None and v not in (None, "")}
        record = data.pop("record", implied)
        yield number, record, data


def validate_content(
    content: bytes, fmt: str, progress: ProgressCallback | None = None
) -> tuple[ValidRows, list[FieldError], int]:
    valid = ValidRows()
    errors: list[FieldError] = []
    count = 0
    lines = content.count(b"\n") + (not content.endswith(b"\n"))  # rows, roughly
    for line, record, data in _rows(content, fmt):
        count += 1
        if progress and count % CHUNK == 0:
            progress("validating", count, max(lines, count))
        if "__error__" in data:
            errors.append(FieldError(f"line {line}", str(data["__error__"])))
            continue
        model = ROW_MODELS.get(record or "")
        if model is None:
            errors.append(FieldError(f"line {line}.record", "must be enterprise, fact or account"))
            continue
        try:
            row = model.model_validate(data)
        except ValidationError as exc:
            for e in exc.errors():
                where = ".".join(str(p) for p in e["loc"]) or "row"
                msg = str(e["msg"]).removeprefix("Value error, ")
                errors.append(FieldError(f"line {line}.{where}", msg))
            continue
        valid.lines[id(row)] = line
        if isinstance(row, EnterpriseRow):
            valid.enterprises.append(row)
        elif isinstance(row, FactRow):
            valid.facts.append(row)
        elif isinstance(row, AccountRow):
            valid.accounts.append(row)
    if count == 0:
        errors.append(FieldError("file", "contains no rows"))
    if progress:
        progress("validating", count, count)
    return valid, errors, count


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


async def _check_references(session: AsyncSession, rows: ValidRows) -> list[FieldError]:
    errors: list[FieldError] = []
    regions = set(await session.scalars(select(Region.code)))
    for e in rows.enterprises:
        if e.region_code not in regions:
            errors.append(
                FieldError(
                    f"line {rows.lines[id(e)]}.region_code", f"unknown region {e.region_code}"
                )
            )
    in_file = {e.uscc for e in rows.enterprises}
    referencing: list[FactRow | AccountRow] = [*rows.facts, *rows.accounts]
    referenced = sorted({r.uscc for r in referencing} - in_file)
    known: set[str] = set()
    for chunk in _chunks(referenced):
        known.update(
            await session.scalars(select(Enterprise.uscc).where(col(Enterprise.uscc).in_(chunk)))
        )
    for r in referencing:
        if r.uscc not in in_file and r.uscc not in known:
            errors.append(
                FieldError(
                    f"line {rows.lines[id(r)]}.uscc", f"enterprise {r.uscc} is not registered"
                )
            )
    return errors


async def import_content(
    session: AsyncSession, content: bytes, fmt: str, progress: ProgressCallback | None = None
) -> ImportReport:
    """Validate every row, then write them all, or reject the file whole. `progress`
    hears ("validating", rows, total) and ("writing", rows, total)."""
    if fmt not in {"csv", "jsonl"}:
        raise InvalidInput.field("format", "must be csv or jsonl")
    rows, errors, count = validate_content(content, fmt, progress)
    if not errors:
        errors = await _check_references(session, rows)
    if errors:
        raise ImportRejected(f"{len(errors)} error(s); nothing was imported", errors)
    report = ImportReport(rows=count)
    await write_rows(session, rows, report, progress)
    return report


async def write_rows(
    session: AsyncSession,
    rows: ValidRows,
    report: ImportReport,
    progress: ProgressCallback | None = None,
) -> None:
    """Upsert validated rows in bulk. Flushes; the caller's transaction commits."""
    now = utcnow()
    report.written_at = now
    written = _Written(
        progress,
        len({e.uscc for e in rows.enterprises})
        + len({(f.uscc, f.kind, f.period) for f in rows.facts})
        + len(rows.accounts),
    )
    await _write_enterprises(session, rows.enterprises, report, now, written)
    await _write_facts(session, rows.facts, report, now, written)
    await _write_accounts(session, rows.accounts, report, now, written)
    await session.flush()


async def _write_enterprises(
    session: AsyncSession,
    items: list[EnterpriseRow],
    report: ImportReport,
    now: Any,
    written: _Written,
) -> None:
    by_code = {e.uscc: e for e in items}  # a later row for the same firm wins
    codes = sorted(by_code)
    for chunk in _chunks(codes):
        existing = {
            e.uscc: e
            for e in await session.scalars(
                select(Enterprise).where(col(Enterprise.uscc).in_(chunk))
            )
        }
        new = []
        for code in chunk:
            row = by_code[code]
            values = row.model_dump()
            current = existing.get(code)
            if current is None:
                new.append({**values, "created_at": now, "updated_at": now})
                report.enterprises_created += 1
            elif any(getattr(current, k) != v for k, v in values.items()):
                for k, v in values.items():
                    setattr(current, k, v)
                current.updated_at = now
                report.enterprises_updated += 1
            else:
                report.unchanged += 1
        if new:
            await session.execute(sa.insert(Enterprise), new)
        written.add(len(chunk))
    await session.flush()


async def _write_facts(
    session: AsyncSession, items: list[FactRow], report: ImportReport, now: Any, written: _Written
) -> None:
    by_key = {(f.uscc, f.kind, f.period): f for f in items}
    usccs = sorted({f.uscc for f in items})
    for chunk in _chunks(usccs):
        existing = {
            (f.uscc, f.kind, f.period): f
            for f in await session.scalars(select(Fact).where(col(Fact.uscc).in_(chunk)))
        }
        wanted = set(chunk)
        new = []
        rows_in_chunk = 0
        for key, row in by_key.items():
            if key[0] not in wanted:
                continue
            rows_in_chunk += 1
            value = row.model_dump(mode="json")["value"]
            current = existing.get(key)
            if current is None:
                new.append(
                    {
                        "uscc": row.uscc,
                        "kind": row.kind,
                        "period": row.period,
                        "period_end": period_end(row.period),
                        "value": value,
                        "source": row.source,
                        "fetched_at": row.fetched_at,
                        "imported_at": now,
                    }
                )
                report.facts_created += 1
            elif current.value != value or current.source != row.source:
                current.value = value
                current.source = row.source
                current.fetched_at = row.fetched_at
                current.imported_at = now
                report.facts_updated += 1
            else:
                report.unchanged += 1
        if new:
            await session.execute(sa.insert(Fact), new)
        written.add(rows_in_chunk)
    await session.flush()


async def _write_accounts(
    session: AsyncSession,
    items: list[AccountRow],
    report: ImportReport,
    now: Any,
    written: _Written,
) -> None:
    for row in items:
        current = await session.scalar(
            select(BankAccount).where(
                BankAccount.uscc == row.uscc, BankAccount.account_number == row.account_number
            )
        )
        if row.is_default:
            await session.execute(
                sa.update(BankAccount)
                .where(
                    col(BankAccount.uscc) == row.uscc,
                    col(BankAccount.account_number) != row.account_number,
                    col(BankAccount.is_default).is_(True),
                )
                .values(is_default=False)
            )
        if current is None:
            session.add(BankAccount(**row.model_dump(), created_at=now))
            report.accounts_created += 1
        elif (current.bank_name, current.account_name, current.is_default) != (
            row.bank_name,
            row.account_name,
            row.is_default,
        ):
            current.bank_name, current.account_name = row.bank_name, row.account_name
            current.is_default = row.is_default
            report.accounts_updated += 1
        else:
            report.unchanged += 1
        written.add(1)
    await session.flush()
