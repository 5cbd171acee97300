"""Every firm's facts as one stored row (`models.registry.FactsSnapshot`): the columns
of a `FactTable` and each firm's region, written by the worker's match runs
(`FactTableCache`) and read back by any process starting cold, which then reads only
the firms changed since (`FactsChange`). Reading 300,000 firms' facts took 6–9 s here
and 18–30 s on a slower machine (millions of rows fetched, then parsed); the row
reads back in a quarter of a second.

The bytes are numpy's own `.npz` (a zip of arrays, read without pickle), compressed
with zlib at its fastest (53 MB become 13 MB at 300,000 firms, in 0.3 s): one array per
column's values (in the narrowest integer type that holds them), presence and period
ends, and one of JSON for what is not an array (credit codes, dictionaries, invalid
facts, region names).

`LAYOUT` names this code's reading of the facts: `FORMAT`, the fact kinds as
`models.facts` defines them, the text of the modules that turn stored facts into
columns, and the database's migrations. A snapshot written under another layout
(another release that touched any of them, a migration that may have rewritten facts
behind the listeners' backs) is not read: the facts are read whole instead, and a new
one written. So a deploy that changes how facts read costs one whole read, never a
copy read the old way. Raise `FORMAT` whenever the stored bytes' own format changes."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import zipfile
import zlib
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core.settings import PROJECT_ROOT
from domain.engine.arrays import FactColumn, FactTable
from domain.engine.rules import KnownFact
from models.facts import FACT_KINDS

FORMAT = 1
# What turns stored facts into columns (reading, validating, choosing the latest).
_READERS = (
    "models.facts",
    "domain.engine.arrays",
    "domain.engine.rules",
    "domain.registry.enterprises",
    "domain.registry.facts_snapshot",
)


def _layout() -> str:
    digest = hashlib.sha256(repr((FORMAT, sorted(FACT_KINDS.items()))).encode())
    for name in _READERS:
        spec = importlib.util.find_spec(name)  # its file, without importing it
        assert spec is not None and spec.origin is not None, name
        digest.update(Path(spec.origin).read_bytes())
    migrations = sorted(p.name for p in (PROJECT_ROOT / "alembic" / "versions").glob("*.py"))
    digest.update(" ".join(migrations).encode())
    return digest.hexdigest()[:32]


LAYOUT = _layout()

_NARROW = (np.int8, np.int16, np.int32)


class Unfit(ValueError):
    """A table that cannot be stored as a snapshot (never expected: it is then read
    whole by the next cold process, as before snapshots)."""


def dump(table: FactTable, regions: dict[str, str]) -> bytes:
    """The table and each of its firms' region as snapshot bytes."""
    if set(table.columns) != set(FACT_KINDS) or len(regions) != len(table):
        raise Unfit("the table's columns or firms are not the registry's")
    region_names: dict[str, int] = {}
    try:
        region_codes = [region_names.setdefault(regions[u], len(region_names)) for u in table.uscc]
    except KeyError as missing:
        raise Unfit(f"no region for firm {missing}") from None
    arrays: dict[str, npt.NDArray[Any]] = {
        "regions": _narrowed(np.asarray(region_codes, dtype=np.int64))
    }
    columns: dict[str, Any] = {}
    for name, column in table.columns.items():
        arrays[f"{name}.values"] = _narrowed(column.values)
        arrays[f"{name}.present"] = column.present
        if column.period_end is not None:
            arrays[f"{name}.period_end"] = column.period_end
        columns[name] = {
            "dictionary": column.dictionary,
            "invalid": [_invalid(row, known) for row, known in column.invalid.items()],
        }
    meta = {"layout": LAYOUT, "uscc": table.uscc, "regions": list(region_names), "columns": columns}
    # ASCII: an invalid fact's text may hold a lone surrogate, which UTF-8 cannot encode.
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    return zlib.compress(buffer.getvalue(), 1)


def load(data: bytes) -> tuple[FactTable, dict[str, str]]:
    """What `dump` stored: the table and each firm's region. Bytes that are not a
    snapshot of this layout raise `Unfit`."""
    try:
        return _read(data)
    except (zlib.error, zipfile.BadZipFile, OSError, ValueError, LookupError, TypeError) as exc:
        raise Unfit(f"not a snapshot this code reads: {exc}") from exc


def _read(data: bytes) -> tuple[FactTable, dict[str, str]]:
    with np.load(io.BytesIO(zlib.decompress(data)), allow_pickle=False) as stored:
        meta = json.loads(stored["meta"].tobytes())
        if meta["layout"] != LAYOUT:
            raise Unfit("a snapshot of another layout")
        uscc: list[str] = meta["uscc"]
        columns = {}
        for name, kind in FACT_KINDS.items():
            described = meta["columns"][name]
            period_end = stored[f"{name}.period_end"] if not kind.profile else None
            columns[name] = FactColumn(
                kind,
                stored[f"{name}.values"].astype(np.int64),
                stored[f"{name}.present"],
                period_end,
                described["dictionary"],
                dict(_known(entry) for entry in described["invalid"]),
            )
        names = np.asarray(meta["regions"], dtype=object)
        regions = dict(zip(uscc, names[stored["regions"]].tolist(), strict=True))
    return FactTable(uscc, columns), regions


def _narrowed(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Integers in the narrowest type that holds them all (most columns hold codes,
    ratings or -1 for none: a byte each rather than eight)."""
    if not len(values):
        return values
    low, high = int(values.min()), int(values.max())
    for narrow in _NARROW:
        limits = np.iinfo(narrow)
        if limits.min <= low and high <= limits.max:
            return values.astype(narrow)
    return values


def _invalid(row: int, known: KnownFact) -> list[Any]:
    if not isinstance(known.value, str):  # `rules.invalid_fact` shows the raw as text
        raise Unfit(f"an invalid fact shown as {type(known.value).__name__}")
    end = None if known.period_end is None else known.period_end.toordinal()
    return [row, known.value, end, known.invalid]


def _known(entry: list[Any]) -> tuple[int, KnownFact]:
    row, value, end, reason = entry
    return row, KnownFact(value, None if end is None else date.fromordinal(end), reason)
