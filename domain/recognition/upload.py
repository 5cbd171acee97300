"""Reading the list of firms a department uploads for a recognition batch (认定名单).

Each row is a firm's unified social credit code plus the figures the item's amount rule
reads. The file is CSV (UTF-8, with or without BOM, or GB18030/GBK as Excel saves it in
China) or XLSX (the first worksheet). Every row is validated first; one bad row rejects
the whole file with a per-row, per-field report, and nothing is accepted.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import PurePath

import openpyxl
from openpyxl.worksheet._read_only import ReadOnlyWorksheet

from domain.errors import FieldError, InvalidInput
from models.facts import FACT_KINDS, FactKind, FactType, FactValue, coerce_fact_value
from models.uscc import InvalidCreditCode, validate_uscc

MAX_UPLOAD_ROWS = 100_000
MAX_UPLOAD_BYTES = 32 * 1024 * 1024
# Errors listed one by one; the rest are counted, so a bad 100,000-row file stays small.
MAX_LISTED_ERRORS = 1_000

USCC_COLUMN = "uscc"
USCC_HEADERS = (USCC_COLUMN, "统一社会信用代码", "信用代码")
# The firm's name: departments keep it for their own reading; it is not checked.
NAME_HEADERS = ("name", "企业名称")

_XLSX_MAGIC = b"PK\x03\x04"
_XLS_MAGIC = b"\xd0\xcf\x11\xe0"  # OLE compound file: .xls, or an encrypted workbook
_SAVE_AS = "请另存为 .xlsx 或 .csv"
_TEXT_ENCODINGS = ("utf-8-sig", "gb18030")  # UTF-8 first; GB18030 reads GBK and GB2312


@dataclass(frozen=True)
class UploadedRow:
    line: int  # the row's line in the file (the header is line 1)
    uscc: str
    figures: dict[str, FactValue]  # fact kind -> value


@dataclass(frozen=True)
class _Columns:
    uscc: int
    figures: tuple[tuple[FactKind, int], ...]
    width: int


@dataclass
class _Errors:
    """Every error counted, the first MAX_LISTED_ERRORS listed."""

    listed: list[FieldError] = field(default_factory=list)
    count: int = 0

    def add(self, where: str, message: str) -> None:
        self.count += 1
        if len(self.listed) < MAX_LISTED_ERRORS:
            self.listed.append(FieldError(where, message))

    def raise_any(self) -> None:
        if not self.count:
            return
        errors = list(self.listed)
        if self.count > len(errors):
            errors.append(FieldError("file", f"... and {self.count - len(errors)} more errors"))
        raise InvalidInput(f"{self.count} error(s); nothing was accepted", errors)


def read_upload(
    content: bytes,
    filename: str | None,
    figure_kinds: Sequence[str],
    *,
    max_rows: int = MAX_UPLOAD_ROWS,
) -> list[UploadedRow]:
    """Validate every row of an uploaded list and return them all, or raise InvalidInput
    listing each problem (`file`, `line 12`, `line 12.uscc`, `line 12.<fact kind>`).

    `figure_kinds` are the fact kinds the item's amount rule reads: each must be a column,
    named by the kind or its Chinese label. Blank rows are skipped."""
    unknown = [name for name in figure_kinds if name not in FACT_KINDS]
    if unknown:
        raise ValueError(f"unknown fact kinds: {', '.join(unknown)}")
    kinds = [FACT_KINDS[name] for name in dict.fromkeys(figure_kinds)]
    if len(content) > MAX_UPLOAD_BYTES:
        raise InvalidInput.field(
            "file", f"is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB: split it"
        )
    table = (row for row in _table(content, filename) if any(c is not None for c in row[1]))
    header = next(table, None)
    if header is None:
        raise InvalidInput.field("file", "is empty")
    columns = _columns(header[1], kinds)
    rows: list[UploadedRow] = []
    errors = _Errors()
    first_line: dict[str, int] = {}
    count = 0
    for line, cells in table:
        count += 1
        if count > max_rows:
            raise InvalidInput.field(
                "file", f"has more than {max_rows:,} rows: split it into several uploads"
            )
        row = _row(line, cells, columns, errors, first_line)
        if row is not None:
            rows.append(row)
    if count == 0:
        raise InvalidInput.field("file", "has no data rows")
    errors.raise_any()
    return rows


def _table(content: bytes, filename: str | None) -> Iterator[tuple[int, list[object]]]:
    """(line, cells) for every row, the header included; an empty cell is None."""
    suffix = PurePath(filename or "").suffix.lower()
    # Many systems export an HTML table named .xls: refused too, not read as CSV.
    if content.startswith(_XLS_MAGIC) or suffix == ".xls":
        raise InvalidInput.field("file", f"is an old Excel workbook (.xls): {_SAVE_AS}")
    if content.startswith(_XLSX_MAGIC):
        return _xlsx_rows(content)
    if suffix == ".xlsx":
        raise InvalidInput.field("file", f"is not a valid .xlsx workbook: {_SAVE_AS}")
    return _csv_rows(content)


def _csv_rows(content: bytes) -> Iterator[tuple[int, list[object]]]:
    text = _decode(content)
    reader = csv.reader(io.StringIO(text, newline=""))
    line = 1
    try:
        for cells in reader:
            yield line, [c.strip() or None for c in cells]
            # A quoted cell may span lines: the next row starts after this one's last.
            line = reader.line_num + 1
    except csv.Error as exc:
        raise InvalidInput.field("file", f"is not readable CSV at line {line}: {exc}") from exc


def _decode(content: bytes) -> str:
    for encoding in _TEXT_ENCODINGS:
        try:
            return content.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise InvalidInput.field("file", f"is neither UTF-8 nor GBK text: {_SAVE_AS}")


def _xlsx_rows(content: bytes) -> Iterator[tuple[int, list[object]]]:
    try:
        workbook = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    # A malformed workbook fails in many ways inside openpyxl; all mean the same here.
    except Exception as exc:
        raise InvalidInput.field("file", f"is not a readable .xlsx workbook: {_SAVE_AS}") from exc
    try:
        sheet = workbook.worksheets[0] if workbook.worksheets else None
        if not isinstance(sheet, ReadOnlyWorksheet):
            raise InvalidInput.field("file", "has no worksheet")
        # The stored dimension can be wrong (too small, or 16384 columns wide from
        # formatting): without it each row is as wide as its own cells.
        sheet.reset_dimensions()
        try:
            for line, values in enumerate(sheet.values, start=1):
                yield line, [_xlsx_value(v) for v in values]
        except Exception as exc:
            raise InvalidInput.field("file", f"is not a readable .xlsx workbook: {exc}") from exc
    finally:
        workbook.close()


def _xlsx_value(value: object) -> object:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, float) and value.is_integer():
        return int(value)  # Excel stores every number as a float
    if isinstance(value, datetime):
        # A date cell reads as a datetime; a time of day makes it no date.
        return value.date() if value.time() == time() else value.isoformat(sep=" ")
    return value


def _header_text(cell: object) -> str:
    return "" if cell is None else str(cell).replace("\ufeff", "").strip()


def _columns(header: Sequence[object], kinds: Sequence[FactKind]) -> _Columns:
    known: dict[str, str | None] = {alias.lower(): USCC_COLUMN for alias in USCC_HEADERS}
    known.update({alias.lower(): None for alias in NAME_HEADERS})
    for kind in kinds:
        known[kind.name.lower()] = known[kind.label.lower()] = kind.name
    texts = [_header_text(cell) for cell in header]
    while texts and not texts[-1]:
        texts.pop()
    expected = ", ".join(
        f"{name} ({label})"
        for name, label in (
            (USCC_COLUMN, USCC_HEADERS[1]),
            (NAME_HEADERS[0], NAME_HEADERS[1]),
            *((k.name, k.label) for k in kinds),
        )
    )
    errors = _Errors()
    found: dict[str, int] = {}
    for index, text in enumerate(texts):
        if text.lower() not in known:
            if text:
                errors.add("file", f"unknown column {text}: expected {expected}")
            else:
                errors.add("file", f"column {index + 1} has no header")
            continue
        target = known[text.lower()]
        if target is None:
            continue
        if target in found:
            errors.add(
                "file",
                f"duplicated column {target} (columns {found[target] + 1} and {index + 1})",
            )
            continue
        found[target] = index
    if USCC_COLUMN not in found:
        errors.add("file", f"missing column {USCC_COLUMN} ({USCC_HEADERS[1]})")
    for kind in kinds:
        if kind.name not in found:
            errors.add("file", f"missing column {kind.name} ({kind.label})")
    errors.raise_any()
    return _Columns(
        uscc=found[USCC_COLUMN],
        figures=tuple((kind, found[kind.name]) for kind in kinds),
        width=len(texts),
    )


def _row(
    line: int,
    cells: list[object],
    columns: _Columns,
    errors: _Errors,
    first_line: dict[str, int],
) -> UploadedRow | None:
    """The row, or None after adding its errors."""
    before = errors.count
    if any(c is not None for c in cells[columns.width :]):
        errors.add(f"line {line}", f"has more cells than the header's {columns.width} columns")
    uscc = _uscc(line, _cell(cells, columns.uscc), errors, first_line)
    figures: dict[str, FactValue] = {}
    for kind, index in columns.figures:
        raw = _cell(cells, index)
        if raw is None:
            errors.add(f"line {line}.{kind.name}", "is required")
            continue
        if kind.type is not FactType.INT and isinstance(raw, int) and not isinstance(raw, bool):
            raw = str(raw)  # an XLSX number in a text column: 330502 is the code "330502"
        try:
            figures[kind.name] = coerce_fact_value(kind, raw)
        except ValueError as exc:
            errors.add(f"line {line}.{kind.name}", str(exc))
    if errors.count > before or uscc is None:
        return None
    return UploadedRow(line=line, uscc=uscc, figures=figures)


def _cell(cells: list[object], index: int) -> object:
    return cells[index] if index < len(cells) else None


def _uscc(line: int, raw: object, errors: _Errors, first_line: dict[str, int]) -> str | None:
    where = f"line {line}.uscc"
    if raw is None:
        errors.add(where, "is required")
        return None
    if isinstance(raw, float | date):
        errors.add(where, "is not text: format the column as text, a number loses digits")
        return None
    code = str(raw).strip().upper()
    try:
        validate_uscc(code)
    except InvalidCreditCode as exc:
        errors.add(where, str(exc))
        return None
    first = first_line.setdefault(code, line)
    if first != line:
        errors.add(where, f"{code} is already on line {first}")
        return None
    return code
