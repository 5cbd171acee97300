"""Fixtures, by concern, in tests/fixtures/: a real database per backend with a
rolled-back transaction per test, the app over ASGI, Temporal test servers, the
simulators, the live stack, and small factories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Every payload is encrypted (core/codec.py). The tests use the key ring the stored
# histories were encrypted with, whatever the environment sets; processes the tests
# start (workers, `zhida run`) inherit it.
TEST_KEY_FILE = Path(__file__).parent / "histories" / "test-codec-keys"
os.environ.pop("ZHIDA_CODEC_KEYS", None)
os.environ["ZHIDA_CODEC_KEY_FILE"] = str(TEST_KEY_FILE)

pytest_plugins = [
    "tests.fixtures.database",
    "tests.fixtures.api",
    "tests.fixtures.temporal",
    "tests.fixtures.simulators",
    "tests.fixtures.stack",
]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.fixtures.database import POSTGRES_SKIPPED, postgres_line  # a plugin by now

    if POSTGRES_SKIPPED:
        terminalreporter.write_line(postgres_line(), yellow=True)
