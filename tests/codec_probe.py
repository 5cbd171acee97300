"""A workflow and activity that carry an account number in their inputs and in their
failure messages: what tests/test_codec.py checks Temporal never stores in clear. Kept
apart from the test module so the sandbox imports nothing else."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

ACCOUNT = "6222020200112233445"  # what must never appear in clear
NAME = "湖州市示例科技有限公司"


@activity.defn(name="codec_probe_fail")
async def probe_fail(account: str) -> str:
    raise ValueError(f"bank refused account {account}")


@workflow.defn(name="CodecProbe", sandboxed=True)
class CodecProbe:
    @workflow.run
    async def run(self, firm: str, account: str) -> str:
        with contextlib.suppress(ActivityError):
            await workflow.execute_activity(
                "codec_probe_fail",
                account,
                start_to_close_timeout=timedelta(seconds=5),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        raise ApplicationError(f"{firm}: payment to {account} failed")
