"""Property-based fuzz run over the whole OpenAPI (issue 7's proof).

Starts a real stack in a temporary directory on free ports (Temporal dev server,
budget-system and messaging-channel simulators, the worker, the API under uvicorn),
migrates a SQLite database, loads a small sample data set and runs one full matching
run, files a few applications, then runs schemathesis against `/openapi.json` once per
token: an admin, a department caseworker (jxj_staff) and an enterprise (qiye), one
after the other or (`--parallel`) at once.

Schemathesis runs as its CLI (`st run`) in a subprocess, not through its Python API:
the CLI drives every phase of its engine (explicit examples, the coverage phase's
boundary and negative values, random fuzzing, stateful sequences) the way CI users
run it, where the Python API leaves the phases to a pytest plugin or to us; and its
threads and `requests` calls stay out of this process's event loop. Its NDJSON event
report (`--report ndjson`) holds every request, response and check result, from which
the counts below are taken; the JUnit report only has a text per failing operation.
Real item codes, credit codes, periods and ids are offered through schemathesis' fuzz
dictionaries (`[parameters]` bound with a probability), so half of the generated values
hit existing rows and the rest stay random.

    python bench/fuzz_api.py --examples 20 --seed 7

Last line: operations=N requests=N server_errors=0 schema_violations=0 other_failures=0
fuzzer_errors=N.
Exit status 1 if any response was >= 500 or any response broke the schema (status code,
content type, headers or body not as the OpenAPI document says). Other failed checks
(an invalid request accepted: negative_data_rejection) and requests that got no answer
are counted in other_failures and listed, without failing the run; errors of
schemathesis itself (e.g. a RecursionError while generating from the recursive rule
schema) are counted in fuzzer_errors.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlmodel import col, select
from stack import ROOT, BenchStack, bench_stack, start_api

from core.db import make_engine, make_sessionmaker
from core.migrate import upgrade_async
from core.security import issue_token
from core.workdays import SHANGHAI
from models.matching import MatchRequest, MatchRun, MatchScope
from models.notices import Notice
from models.policy import PolicyItem
from models.registry import Enterprise
from seed.sample import load_sample
from workflows.starts import start_match_run

USERS = ("admin", "jxj_staff", "qiye")
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "response_headers_conformance",
)
# Checks whose failure means a response the OpenAPI document does not describe.
SCHEMA_CHECKS = frozenset(
    {
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    }
)
SERVER_ERROR_CHECK = "not_a_server_error"
HOOKS = Path(__file__).resolve().parent / "fuzz_hooks.py"
# The operations whose body carries an eligibility rule and an amount rule.
RULE_BODIES = ["POST /api/v1/items", "PUT /api/v1/items/{code}/draft"]


@dataclass(frozen=True)
class Failure:
    check: str
    method: str
    path: str
    status: int | None
    reason: str
    request: str  # the request that caused it: method, URL and body, shortened

    def line(self) -> str:
        status = self.status if self.status is not None else "-"
        head = f"{self.check}: {self.method} {self.path} -> {status}: {self.reason}"
        return f"{head}\n    {self.request}"


@dataclass
class Outcome:
    user: str
    operations: int = 0
    requests: int = 0
    server_errors: int = 0
    failures: dict[tuple[str, str, str, int | None, str], Failure] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def schema_violations(self) -> list[Failure]:
        return [f for f in self.failures.values() if f.check in SCHEMA_CHECKS]

    def others(self) -> list[Failure]:
        return [
            f
            for f in self.failures.values()
            if f.check not in SCHEMA_CHECKS and f.check != SERVER_ERROR_CHECK
        ]


@dataclass(frozen=True)
class Case:
    item_code: str
    period: str
    uscc: str


@dataclass
class Targets:
    """Existing rows the fuzzer is offered besides random values."""

    items: list[str]
    firms: list[str]
    periods: list[str]
    years: list[int]
    notices: list[int]
    runs: list[int]


async def prepare(stack: BenchStack, enterprises: int) -> Targets:
    """Migrate, load the sample, run one full match (so matches and notices exist)."""
    settings = stack.settings
    await upgrade_async(settings.database_url)
    engine = make_engine(settings.database_url)
    today = datetime.now(SHANGHAI).date()
    begun = time.monotonic()
    try:
        async with make_sessionmaker(engine).begin() as session:
            await load_sample(session, enterprises, today)
        print(f"database migrated and sample loaded in {time.monotonic() - begun:.1f}s")
        begun = time.monotonic()
        stack.worker.start()
        request = MatchRequest(scope=MatchScope.FULL, receipt_polls_s=[0.5])
        run = await start_match_run(stack.env.client, settings.task_queue, request, "fuzz")
        await asyncio.wait_for(run.result(), 120)
        print(f"worker started and full match run done in {time.monotonic() - begun:.1f}s")
        async with make_sessionmaker(engine).begin() as session:
            items = list(
                await session.scalars(select(PolicyItem.code).order_by(col(PolicyItem.code)))
            )
            firms = await session.scalars(
                select(Enterprise.uscc).order_by(col(Enterprise.uscc)).limit(10)
            )
            notices = await session.scalars(select(Notice.id).order_by(col(Notice.id)).limit(20))
            runs = await session.scalars(select(MatchRun.id))
            return Targets(
                items=items,
                firms=list(firms),
                periods=[str(today.year), str(today.year - 1), f"{today.year}-Q1", "once"],
                years=[today.year, today.year - 1, today.year + 1],
                notices=[n for n in notices if n is not None],
                runs=[r for r in runs if r is not None],
            )
    finally:
        await engine.dispose()


async def apply_some(base: str, token: str, today: date, cases: int = 3) -> list[Case]:
    """The firm applies to a few application items it matches, so that the case routes
    find real cases (and staff find them in review)."""
    headers = {"Authorization": f"Bearer {token}"}
    year, month = today.year, today.month
    periods = [str(year), f"{year}-Q{(month - 1) // 3 + 1}", f"{year}-{month:02d}", "once"]
    applied: list[Case] = []
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        me = (await client.get("/api/v1/me")).json()
        policies = (await client.get("/api/v1/my/policies", params={"limit": 200})).json()
        for policy in policies["items"]:
            if policy["category"] != "application" or len(applied) >= cases:
                continue
            for period in periods:  # the first that is a period of the item's scheme
                body = {"item_code": policy["item_code"], "period": period, "materials": {}}
                answer = await client.post("/api/v1/cases", json=body)
                if answer.is_success:
                    applied.append(Case(policy["item_code"], period, me["enterprise_uscc"]))
                    break
    return applied


def config_file(work: Path, targets: Targets, cases: list[Case], rule_coverage: bool) -> Path:
    """schemathesis.toml: fuzz dictionaries of real values, bound to the parameters (on
    the case routes, those of the cases filed); without `rule_coverage`, no coverage
    phase for the bodies that carry a rule."""
    dictionaries: dict[str, list[str] | list[int]] = {
        "items": targets.items,
        "firms": sorted({*targets.firms, *(c.uscc for c in cases)}),
        "periods": targets.periods,
        "years": targets.years,
        "versions": [1, 2],
        "notices": targets.notices or [1],
        "runs": targets.runs or [1],
        "case_items": sorted({c.item_code for c in cases}) or targets.items,
        "case_periods": sorted({c.period for c in cases}) or targets.periods,
        "case_firms": sorted({c.uscc for c in cases}) or targets.firms,
        "case_categories": ["application"],
    }
    bindings = {
        "path.code": "items",
        "path.item_code": "items",
        "query.item": "items",
        "body.item_code": "items",
        "path.uscc": "firms",
        "path.period": "periods",
        "body.period": "periods",
        "path.year": "years",
        "path.version": "versions",
        "query.version": "versions",
        "path.notice_id": "notices",
        "path.run_id": "runs",
    }
    lines = [f"hooks = {json.dumps(str(HOOKS))}", ""]
    # An undeclared method is a 405 problem: two of them show it on every path, the
    # other six would add a sixth to the run's requests and show nothing more.
    lines += ["[phases.coverage]", 'unexpected-methods = ["delete", "patch"]', ""]
    for name, values in dictionaries.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines.append("[parameters]")
    for key, name in bindings.items():
        lines.append(f'"{key}" = {{ dictionary = "{name}", probability = 0.5 }}')
    lines += ["", "[[operations]]", 'include-path-regex = "^/api/v1/cases/[{]category[}]/"']
    for key, name in (
        ("category", "case_categories"),
        ("item_code", "case_items"),
        ("period", "case_periods"),
        ("uscc", "case_firms"),
    ):
        lines.append(f'parameters."path.{key}" = {{ dictionary = "{name}", probability = 0.8 }}')
    if not rule_coverage:
        # The coverage phase walks every combination of the recursive rule schema:
        # about 6,500 requests per operation and token. Fuzzing still sends rules.
        lines += ["", "[[operations]]", f"include-name = {json.dumps(RULE_BODIES)}"]
        lines += ["phases.coverage.enabled = false"]
    path = work / "schemathesis.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def fuzz(
    base: str,
    user: str,
    token: str,
    config: Path,
    work: Path,
    examples: int,
    seed: int,
    coverage: bool = True,
) -> Outcome:
    report = work / f"{user}.ndjson"
    st = Path(sys.executable).parent / "st"
    # The coverage phase (every boundary and negative value of every parameter) is
    # three quarters of a token's requests; without it, a token still gets the
    # explicit examples, random fuzzing and stateful sequences.
    phases = [] if coverage else ["--phases", "examples,fuzzing,stateful"]
    args = [
        *[str(st), "--config-file", str(config), "run", f"{base}/openapi.json"],
        *["--header", f"Authorization: Bearer {token}"],
        *["--checks", ",".join(CHECKS), "--continue-on-failure"],
        *["--max-examples", str(examples), "--seed", str(seed), *phases],
        *["--workers", "1", "--request-timeout", "15", "--generation-database", "none"],
        *["--report", "ndjson", "--report-ndjson-path", str(report)],
        # Unsanitised: the report must show the request as sent (the token is this
        # stack's own); the sanitiser also hides `Idempotency-Key`, taking it for a secret.
        *["--no-color", "--output-truncate", "true", "--output-sanitize", "false"],
    ]
    out = (work / f"{user}.st.log").open("wb")
    proc = await asyncio.create_subprocess_exec(*args, cwd=work, stdout=out, stderr=out)
    await proc.wait()
    out.close()
    outcome = read_report(user, report)
    if proc.returncode not in (0, 1):  # 1: failures found; anything else: it did not run
        outcome.errors.append(f"st exited {proc.returncode}, see {work / f'{user}.st.log'}")
    return outcome


def events(report: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    if not report.exists():
        return
    with report.open(encoding="utf-8") as lines:
        for line in lines:
            event: dict[str, Any] = json.loads(line)
            yield next(iter(event.items()))


def read_report(user: str, report: Path) -> Outcome:
    """Count requests, server errors and failed checks in schemathesis' NDJSON events."""
    outcome = Outcome(user)
    labels: set[str] = set()
    for name, event in events(report):
        if name == "NonFatalError":
            outcome.errors.append(f"{event.get('label')}: {str(event.get('value'))[:300]}")
        elif name == "FatalError":
            outcome.errors.append(f"fatal: {str(event.get('exception'))[:300]}")
        if name != "ScenarioFinished":
            continue
        recorder = event.get("recorder", {})
        cases: dict[str, Any] = recorder.get("cases", {})
        interactions: dict[str, Any] = recorder.get("interactions", {})
        for case_id, interaction in interactions.items():
            outcome.requests += 1
            response = interaction.get("response") or {}
            if response.get("status_code", 0) >= 500:
                outcome.server_errors += 1
                add_failure(outcome, SERVER_ERROR_CHECK, interaction, cases.get(case_id), None)
        for case_id, checks in recorder.get("checks", {}).items():
            for check in checks:
                info = check.get("failure_info")
                if str(check.get("status")).lower() != "failure" or not info:
                    continue
                if check["name"] == SERVER_ERROR_CHECK:
                    continue  # counted from the responses, with the problem they carry
                interaction = interactions.get(case_id, {})
                add_failure(outcome, check["name"], interaction, cases.get(case_id), info)
        labels.add(recorder.get("label", ""))
    outcome.operations = len({label for label in labels if " /" in label})
    return outcome


def add_failure(
    outcome: Outcome,
    check: str,
    interaction: dict[str, Any],
    case: dict[str, Any] | None,
    info: dict[str, Any] | None,
) -> None:
    request = interaction.get("request") or {}
    response = interaction.get("response") or {}
    method = request.get("method", "?")
    value = (case or {}).get("value", {})
    path = value.get("path") or urlsplit(request.get("uri", "")).path
    status = response.get("status_code")
    failure = (info or {}).get("failure", {})
    if failure:
        detail = str(failure.get("message") or "").strip().splitlines()
        reason = str(failure.get("title")) + (f" ({detail[0][:160]})" if detail else "")
    else:
        reason = describe(response)
    key = (check, method, path, status, reason)
    if key not in outcome.failures:
        outcome.failures[key] = Failure(check, method, path, status, reason, show(request))


def decode(value: Any) -> str:
    if isinstance(value, dict) and "$base64" in value:
        return base64.b64decode(value["$base64"]).decode("utf-8", "replace")
    return "" if value is None else str(value)


def describe(response: dict[str, Any]) -> str:
    """A response's problem in short: detail and correlation id (its traceback's key)."""
    text = decode(response.get("content"))
    try:
        problem = json.loads(text)
    except ValueError:
        return text[:200]
    if not isinstance(problem, dict):
        return text[:200]
    return f"{problem.get('detail') or problem.get('title')} (id {problem.get('correlation_id')})"


def show(request: dict[str, Any]) -> str:
    text = f"{request.get('method')} {request.get('uri')}"
    body = decode(request.get("body"))
    if body:
        text += f" body={str(body)[:300]}"
    keys = (request.get("headers") or {}).get("Idempotency-Key")
    for key in keys if isinstance(keys, list) else [keys] if keys is not None else []:
        text += f" Idempotency-Key={str(key)[:60]!r}"
    return text


def print_outcome(outcome: Outcome) -> None:
    violations = outcome.schema_violations()
    others = outcome.others()
    print(
        f"[{outcome.user}] operations={outcome.operations} requests={outcome.requests} "
        f"server_errors={outcome.server_errors} schema_violations={len(violations)} "
        f"other_failures={len(others)} fuzzer_errors={len(outcome.errors)}"
    )
    for failure in outcome.failures.values():
        print(f"  {failure.line()}")
    for error in outcome.errors:
        print(f"  error: {error}")


async def main(
    examples: int,
    seed: int,
    enterprises: int,
    users: list[str],
    rule_coverage: bool,
    parallel: bool,
    coverage_for: set[str],
) -> int:
    started = time.monotonic()
    outcomes: list[Outcome] = []
    async with bench_stack("fuzz", ["--receipt-delay-s", "0"], message_simulator=True) as stack:
        print(f"temporal and simulators up in {time.monotonic() - started:.1f}s")
        targets = await prepare(stack, enterprises)
        base = await start_api(stack)
        tokens = {user: issue_token(stack.settings, user) for user in {*users, "qiye"}}
        cases = await apply_some(base, tokens["qiye"], datetime.now(SHANGHAI).date())
        print(f"cases filed by qiye: {', '.join(f'{c.item_code} {c.period}' for c in cases)}")
        config = config_file(stack.work, targets, cases, rule_coverage)
        print(f"stack ready in {time.monotonic() - started:.1f}s; work dir {stack.work}")
        print(
            f"seed {seed}, {examples} examples per operation;"
            f" coverage phase for {', '.join(sorted(coverage_for))}"
        )

        async def run(user: str) -> tuple[Outcome, float]:
            begun = time.monotonic()
            outcome = await fuzz(
                base,
                user,
                tokens[user],
                config,
                stack.work,
                examples,
                seed,
                coverage=user in coverage_for,
            )
            return outcome, time.monotonic() - begun

        if parallel:
            runs = await asyncio.gather(*(run(user) for user in users))
        else:
            runs = [await run(user) for user in users]
        for outcome, seconds in runs:
            outcomes.append(outcome)
            print_outcome(outcome)
            print(f"  ({seconds:.1f}s)")
        sys.stdout.flush()
    operations = max((o.operations for o in outcomes), default=0)
    requests = sum(o.requests for o in outcomes)
    server_errors = sum(o.server_errors for o in outcomes)
    violations = sum(len(o.schema_violations()) for o in outcomes)
    others = sum(len(o.others()) for o in outcomes)
    # schemathesis' own errors (e.g. a RecursionError while it generates from the
    # recursive rule schema): listed above, counted apart, not failures of the API.
    fuzzer_errors = sum(len(o.errors) for o in outcomes)
    failed = bool(server_errors or violations)
    if failed:
        print(f"reports (NDJSON, st output) and logs kept in {stack.work}")
    else:
        shutil.rmtree(stack.work, ignore_errors=True)  # some 10 MB of reports per token
    print(f"total time {time.monotonic() - started:.1f}s")
    print(
        f"operations={operations} requests={requests} server_errors={server_errors} "
        f"schema_violations={violations} other_failures={others} fuzzer_errors={fuzzer_errors}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=20, help="fuzzed cases per operation")
    parser.add_argument("--seed", type=int, default=int(uuid.uuid4().int % 2**31))
    parser.add_argument("--enterprises", type=int, default=200, help="sample firms")
    parser.add_argument("--users", default=",".join(USERS), help="whose tokens, in order")
    parser.add_argument(
        "--rule-coverage",
        action="store_true",
        help="the coverage phase on the rule-bearing bodies too: about 6,500 requests per"
        " operation and token, nearly all refused for their dates before any rule is read",
    )
    parser.add_argument("--parallel", action="store_true", help="all tokens' runs at once")
    parser.add_argument(
        "--coverage-for",
        help="whose runs include the coverage phase, comma-separated (default: every token's)",
    )
    args = parser.parse_args()
    os.chdir(ROOT)
    users = args.users.split(",")
    coverage_for = set(args.coverage_for.split(",")) if args.coverage_for else set(users)
    code = main(
        args.examples,
        args.seed,
        args.enterprises,
        users,
        args.rule_coverage,
        args.parallel,
        coverage_for,
    )
    sys.exit(asyncio.run(code))
