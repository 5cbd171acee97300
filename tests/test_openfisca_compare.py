"""The comparison with OpenFisca-core in short form: both engines give every firm the
same verdict on every item, for the sample library's items and for plain thresholds.
The full size is `python bench/openfisca_compare.py` (300,000 firms × 1,000 items)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAST_LINE = re.compile(r"firms=(\d+) rules=(\d+) openfisca_s=\S+ ours_s=\S+ .* identical=(\w+)")


@pytest.mark.parametrize("rules", ["sample", "thresholds"])
def test_openfisca_and_our_engine_give_identical_verdicts(rules: str) -> None:
    completed = subprocess.run(
        [
            *[sys.executable, "bench/openfisca_compare.py", "--rules", rules],
            *["--enterprises", "3000", "--items", "200", "--runs", "1"],
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    report = completed.stdout[-3000:] + "\n--- stderr ---\n" + completed.stderr[-3000:]
    lines = completed.stdout.strip().splitlines()
    found = LAST_LINE.fullmatch(lines[-1]) if lines else None
    assert found is not None, report
    assert found.groups() == ("3000", "200", "true"), report
