"""The fuzz run over the whole OpenAPI in short form: schemathesis with an admin, a
department and an enterprise token, a few cases per operation, the three at once. The
coverage phase (every boundary and negative value of every parameter, three quarters
of the requests) runs for the admin, whom no route refuses before reading its input;
the other two get the explicit examples, random fuzzing and stateful sequences.
The full size is `python bench/fuzz_api.py --examples 50`."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAST_LINE = re.compile(
    r"operations=(\d+) requests=(\d+) server_errors=(\d+) "
    r"schema_violations=(\d+) other_failures=(\d+) fuzzer_errors=(\d+)"
)


@pytest.mark.timeout(480)  # the subprocess's own limit, and a minute to start and stop
def test_no_server_error_and_no_schema_violation_under_fuzzing() -> None:
    completed = subprocess.run(
        [
            *[sys.executable, "bench/fuzz_api.py", "--examples", "5", "--seed", "7"],
            *["--parallel", "--coverage-for", "admin"],
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=420,  # 80 operations × 3 users: about 1.2 min alone on two cores, 2 min loaded
        check=False,
    )
    lines = completed.stdout.strip().splitlines()
    report = completed.stdout[-6000:] + "\n--- stderr ---\n" + completed.stderr[-3000:]
    found = LAST_LINE.fullmatch(lines[-1]) if lines else None
    assert found is not None, report
    operations, requests, server_errors, violations, others, _fuzzer = map(int, found.groups())
    # schemathesis' own generation errors (fuzzer_errors) are listed, not the API's fault.
    assert (server_errors, violations, others) == (0, 0, 0), report
    assert operations >= 40 and requests >= 1000, report
    assert completed.returncode == 0, report
