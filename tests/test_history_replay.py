"""Every stored history replays on the current workflows: a case that was running
when the code changed carries on after the deploy (see tests/histories/README.md)."""

import pytest
from temporalio.client import WorkflowHistory

from tests.history_store import HISTORIES, replayer

STORED = {path.stem: path.read_text() for path in sorted(HISTORIES.glob("*.json"))}


def test_the_histories_cover_the_case_paths_and_every_workflow() -> None:
    names = set(STORED)
    assert {
        "application-paid",
        "application-corrected-paid",
        "application-payment-returned-repaid",
        "application-review-entry-returned-repaid",  # a review's deadline in its projection
        "application-payment-failed-retried",
        "application-awaiting-budget-paid",
        "application-budget-retried-daily",
        "application-overdue-paid",
        "application-rejected",
        "application-withdrawn",
        "policy-change-published",
        "matching-run",
        "library-expiry",
        "policy-harvest",
        "facts-sync",
        "commitment-full-settlement",  # stored before the approval notice was patched in
        "commitment-approval-notice",
        "commitment-recovered",
    } <= names
    assert any(".payment-" in name for name in names)


@pytest.mark.parametrize("name", STORED)
async def test_stored_history_replays_on_the_current_code(name: str) -> None:
    history = WorkflowHistory.from_json(f"replay/{name}", STORED[name])
    result = await replayer().replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{name}: {result.replay_failure}"
