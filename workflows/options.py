"""Activity options, defined once and passed as `**config`: how long each kind of
activity may run, how it retries, and which failures no retry cures (named from
`ErrorType`). These values travel in the commands that schedule activities, but replay
compares only an activity's type and id, never its options, so changing one here leaves
running workflows replaying unharmed (tests/test_history_replay.py). An activity that
heartbeats has a `heartbeat_timeout`, well above how often it heartbeats, so that a dead
worker is noticed before the start-to-close timeout runs out.

Workflow modules import this inside `workflow.unsafe.imports_passed_through()`.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from core.temporal_errors import ErrorType

# A case's reads and writes of our database. A business error (already non-retryable
# when an activity raises it as one, activities/errors.py) ends the attempt at once.
DATABASE = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(
        maximum_interval=timedelta(seconds=30),
        non_retryable_error_types=[
            ErrorType.CONFLICT,
            ErrorType.DUPLICATE_CASE,
            ErrorType.NOT_FOUND,
            ErrorType.INVALID_INPUT,
            ErrorType.QUOTA_EXHAUSTED,
            ErrorType.QUOTA_NOT_SET,
        ],
    ),
)
# The failures of a reservation that mean "wait for finance", not "something broke".
NO_BUDGET = (ErrorType.QUOTA_EXHAUSTED, ErrorType.QUOTA_NOT_SET)

# The policy library's reads and writes during a policy change.
POLICY_LIBRARY = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(
        maximum_interval=timedelta(seconds=30),
        non_retryable_error_types=[ErrorType.CONFLICT, ErrorType.NOT_FOUND],
    ),
)

# One pass over many rows of our database: library upkeep, planning pushes.
DATABASE_BATCH = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(minutes=5),
    retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1)),
)

# A matching run (load, evaluate, store). Transport failures retry; a data error fails
# the run at once: the run records and skips bad items and facts itself, so what is
# left no retry cures. The run heartbeats every 10 s from a task of its own
# (activities/matching.py); building the rows of a large item runs on the same event
# loop between writes, so the timeout leaves it minutes, and still finds a dead worker
# long before the 30-minute limit.
MATCHING = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(minutes=30),
    heartbeat_timeout=timedelta(minutes=5),
    retry_policy=RetryPolicy(
        maximum_interval=timedelta(minutes=1),
        non_retryable_error_types=[ErrorType.MATCH_DATA_ERROR],
    ),
)

# Sending a batch of pushes through the message channel; a retried send reuses each
# push's key, so an unreachable channel is simply asked again.
MESSAGE_CHANNEL = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(minutes=5),
    retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1)),
)
# Asking the message channel for receipts, batch after batch: heartbeats after each
# answer, so a long pass over many pushes is not mistaken for a dead worker.
MESSAGE_RECEIPTS = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(minutes=5),
    heartbeat_timeout=timedelta(minutes=2),
    retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1)),
)

# Instructing a payment. Only failures before the instruction exists end the payment
# (see PaymentActivities.send_instruction).
BUDGET_SYSTEM = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        maximum_interval=timedelta(minutes=1),
        non_retryable_error_types=[
            ErrorType.BUDGET_SYSTEM_REFUSED,
            ErrorType.INVALID_INSTRUCTION,
        ],
    ),
)
# Polling the budget system for the receipt is this activity's retry schedule: every
# failure means "not settled yet" or "unreachable", and both are worth asking again.
SETTLEMENT_POLL = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=1.5,
        maximum_interval=timedelta(minutes=5),
    ),
)
# Writing a payment's outcome to the ledger: retried until it is written.
LEDGER = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
)

# Freezing a recognition batch's snapshot: up to 100,000 firms assessed and written in
# one transaction. It heartbeats from a task of its own (activities/recognition.py).
RECOGNITION_SNAPSHOT = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(minutes=30),
    heartbeat_timeout=timedelta(minutes=2),
    retry_policy=RetryPolicy(
        maximum_interval=timedelta(minutes=1),
        non_retryable_error_types=[
            ErrorType.CONFLICT,
            ErrorType.NOT_FOUND,
            ErrorType.INVALID_INPUT,
        ],
    ),
)

# Reading the policy feed and storing a page. A feed that is down is asked again with
# backoff for about ten minutes, then the harvest fails and the next scheduled one starts
# from the same cursor; a feed that refuses the cursor fails it at once.
POLICY_FEED = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(minutes=2),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=2),
        maximum_interval=timedelta(minutes=2),
        maximum_attempts=10,
        non_retryable_error_types=[ErrorType.POLICY_FEED_REFUSED],
    ),
)

# Reading the data platform's change feed and storing a page: as the policy feed.
DATA_PLATFORM_FEED = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(minutes=2),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=2),
        maximum_interval=timedelta(minutes=2),
        maximum_attempts=10,
        non_retryable_error_types=[ErrorType.DATA_PLATFORM_REFUSED],
    ),
)

# workflow.patched ids: never change one.
# A case answers an update only once it has acted on it (an update that arrives while the
# projection is written waits for the next round): the three case workflows.
ACK_AFTER_PROJECTION = "ack-after-projection"
# A review's deadline is computed by the activity that projects the case entering it
# (`CaseActivities.enter_review`), not by an activity of its own before it.
REVIEW_ENTRY = "review-entry-one-step"

# The smart review: the public data platform and our database. A platform that does not
# answer fails the attempt, up to activities/review.py's PLATFORM_ATTEMPTS, after which the
# activity goes on with the facts marked unavailable: the review waits, then a person checks.
REVIEW = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(seconds=60),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        maximum_interval=timedelta(seconds=30),
        non_retryable_error_types=[ErrorType.NOT_FOUND, ErrorType.INVALID_INPUT],
    ),
)
