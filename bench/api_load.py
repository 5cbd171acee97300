"""The API under load: caseworkers and firms reading and writing at once, from outside.

Loads a city into the database (bench/dashboard.py's: the sample's firms and items,
the full match, a year of case history), adds one application item open to firms
with a good credit rating and a user for each of a few thousand of them, then starts
the embedded stack (dev server, simulators, the worker) and the API as uvicorn with
`--api-processes` processes sharing its port, and sends it a mix of requests over
HTTP (aiohttp, from this process):

- reads, as firms: my policies, my cases, my notices, the gaps between me and an
  item, my case's state; as caseworkers: the inbox, a filtered case list, an item's
  matches, a case's state, and (rarely) the dashboards' overview and time to money;
- writes: a firm applies for the open item (a workflow starts), a caseworker approves
  an application waiting at department review (a workflow update).

Two runs: `--clients` closed-loop clients (each sends its next request when the
last is answered) for `--seconds`: the saturation rate; then an open-loop offered
rate (`--offered-rps`, arrivals spaced evenly), latency counted from each request's
scheduled time, so a stall is not hidden by requests not sent.

    python bench/api_load.py                                 # SQLite, 300,000 firms
    python bench/api_load.py --database-url postgresql://postgres@127.0.0.1:5432/zhida_load

Last line: clients=… rps_max=… offered_rps=… read_p50_ms=… read_p99_ms=…
write_p99_ms=… errors=…  (p50/p99 at the offered rate; errors are transport
failures and 5xx answers in either run)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa
from application_chaos import application_item
from dashboard import build_city
from sqlmodel import col, select
from stack import bench_stack, start_api

from core.db import make_engine, make_sessionmaker
from core.security import issue_token
from core.settings import Environment, Settings
from domain.money import budget
from domain.policy import library
from models.cases import CaseRecord
from models.matching import MatchResult
from models.policy import ItemCreate, PolicyItem
from models.reference import Actor, Role, User
from models.registry import BankAccount, Fact

ITEM = "LOAD-01"
PERIOD = "2026"
AMOUNT = 500_000
FIRM_PREFIX = "load-firm-"
# Caseworkers: the item's department (who approves), city and district finance.
STAFF = ("jxj_staff", "czj_staff", "wx_czj_staff")
APPROVER = "jxj_staff"
# An application waits this long before a caseworker takes it from the inbox: long
# enough for its automatic checks to have placed it at department review.
APPROVE_AFTER_S = 5.0


@dataclass
class City:
    firms: list[tuple[str, str]]  # (user name, credit code): each may apply once
    items: list[str]  # the sample's items, for matches and gaps
    own_items: list[str]  # those of the approver's department (城市经信局)


async def prepare(database_url: str, enterprises: int, cases: int, firms: int) -> City:
    await build_city(database_url, enterprises, cases)
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine).begin() as session:
            items = sorted(set(await session.scalars(select(MatchResult.item_code).distinct())))
            own = set(
                await session.scalars(
                    select(PolicyItem.code).where(col(PolicyItem.department_code) == "330500-JXJ")
                )
            )
            own_items = [item for item in items if item in own]
            existing = list(
                await session.execute(
                    select(User.name, User.enterprise_uscc).where(
                        col(User.name).startswith(FIRM_PREFIX)
                    )
                )
            )
            if existing:  # a city of an earlier run: its firms that have not applied
                applied = set(
                    await session.scalars(
                        select(CaseRecord.uscc).where(col(CaseRecord.item_code) == ITEM)
                    )
                )
                fresh = [(n, str(u)) for n, u in existing if u not in applied]
                return City(fresh, items, own_items)
            good = (
                select(Fact.uscc)
                .where(
                    col(Fact.kind) == "credit_rating",
                    sa.cast(col(Fact.value), sa.Text).in_(['"A"', '"B"']),
                )
                .where(col(Fact.uscc).in_(select(BankAccount.uscc)))
                .distinct()
                .order_by(col(Fact.uscc))
                .limit(firms)
            )
            chosen = list(await session.scalars(good))
            users = [(f"{FIRM_PREFIX}{n}", uscc) for n, uscc in enumerate(chosen)]
            session.add_all(
                User(name=name, display_name="企业", role=Role.ENTERPRISE, enterprise_uscc=uscc)
                for name, uscc in users
            )
            staff = Actor(
                name="jxj_staff", role=Role.DEPARTMENT_CASEWORKER, department_code="330500-JXJ"
            )
            await library.create_item(
                session,
                staff,
                ItemCreate.model_validate(application_item(firms, ITEM, "负载测试补助", AMOUNT)),
            )
            await library.submit_version(
                session, staff, ITEM, 1, head_review_days=3, finance_review_days=5
            )
            await library.publish_version(session, ITEM, 1)
            await budget.set_quota(session, ITEM, int(PERIOD), AMOUNT * firms, "czj_staff")
            return City(users, items, own_items)
    finally:
        await engine.dispose()


@dataclass
class Request:
    name: str
    write: bool
    method: str
    path: str
    user: str
    body: dict[str, Any] | None = None
    key: str | None = None  # Idempotency-Key
    on_answer: Callable[[int], None] | None = None


@dataclass
class Mix:
    """What caseworkers and firms do, by weight; writes move the open item's cases."""

    city: City
    rng: random.Random
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])  # keys of this run
    writes: bool = True  # False: reads only, the API's own ceiling
    unapplied: deque[tuple[str, str]] = field(default_factory=deque)
    applied: deque[tuple[float, str, str]] = field(default_factory=deque)  # (at, user, uscc)
    cases: list[tuple[str, str]] = field(default_factory=list)  # applied: (user, uscc)

    def __post_init__(self) -> None:
        self.unapplied.extend(self.city.firms)
        self.weights: list[tuple[Callable[[], Request | None], int]] = [
            (self.my_policies, 16),
            (self.my_cases, 10),
            (self.my_notices, 8),
            (self.gaps, 12),
            (self.firm_case, 6),
            (self.inbox, 12),
            (self.case_list, 6),
            (self.item_matches, 8),
            (self.staff_case, 6),
            (self.overview, 1),
            (self.time_to_money, 1),
            (self.apply, 7 if self.writes else 0),
            (self.approve, 7 if self.writes else 0),
        ]
        self._choices = [make for make, _ in self.weights]
        self._cumulative = list(itertools.accumulate(weight for _, weight in self.weights))

    def next(self) -> Request:
        while True:
            make = self.rng.choices(self._choices, cum_weights=self._cumulative)[0]
            request = make()
            if request is not None:
                return request

    def _firm(self) -> tuple[str, str]:
        return self.rng.choice(self.city.firms)

    def _staff(self) -> str:
        return self.rng.choice(STAFF)

    def my_policies(self) -> Request:
        return Request("my_policies", False, "GET", "/api/v1/my/policies", self._firm()[0])

    def my_cases(self) -> Request:
        return Request("my_cases", False, "GET", "/api/v1/my/cases", self._firm()[0])

    def my_notices(self) -> Request:
        return Request("my_notices", False, "GET", "/api/v1/me/notices", self._firm()[0])

    def gaps(self) -> Request:
        user, uscc = self._firm()
        item = self.rng.choice(self.city.items)
        path = f"/api/v1/items/{item}/eligibility/{uscc}/gaps"
        return Request("gaps", False, "GET", path, user)

    def _case_path(self, uscc: str) -> str:
        return f"/api/v1/cases/application/{ITEM}/{PERIOD}/{uscc}"

    def firm_case(self) -> Request | None:
        if not self.cases:
            return None
        user, uscc = self.rng.choice(self.cases)
        return Request("firm_case", False, "GET", self._case_path(uscc), user)

    def staff_case(self) -> Request | None:
        if not self.cases:
            return None
        _, uscc = self.rng.choice(self.cases)
        return Request("staff_case", False, "GET", self._case_path(uscc), APPROVER)

    def inbox(self) -> Request:
        return Request("inbox", False, "GET", "/api/v1/inbox", self._staff())

    def case_list(self) -> Request:
        item = self.rng.choice(self.city.items)
        path = f"/api/v1/cases?item={item}&limit=20"
        return Request("case_list", False, "GET", path, self._staff())

    def item_matches(self) -> Request:
        # The item's department watches who matches its items.
        path = f"/api/v1/items/{self.rng.choice(self.city.own_items)}/matches"
        return Request("item_matches", False, "GET", path, APPROVER)

    def overview(self) -> Request:
        return Request("overview", False, "GET", "/api/v1/dashboard/overview", "wx_czj_staff")

    def time_to_money(self) -> Request:
        path = "/api/v1/dashboard/time-to-money"
        return Request("time_to_money", False, "GET", path, "wx_czj_staff")

    def apply(self) -> Request | None:
        if not self.unapplied:
            return None
        user, uscc = self.unapplied.popleft()

        def answered(status: int) -> None:
            if 200 <= status < 300:
                self.applied.append((time.monotonic(), user, uscc))
                self.cases.append((user, uscc))

        body = {"item_code": ITEM, "period": PERIOD}
        key = f"apply:{self.run}:{uscc}"
        return Request("apply", True, "POST", "/api/v1/cases", user, body, key, answered)

    def approve(self) -> Request | None:
        if not self.applied or self.applied[0][0] > time.monotonic() - APPROVE_AFTER_S:
            return None
        _, _, uscc = self.applied.popleft()
        path = f"{self._case_path(uscc)}/decisions"
        key = f"approve:{self.run}:{uscc}"
        return Request("approve", True, "POST", path, APPROVER, {"action": "approve"}, key)


@dataclass
class Tally:
    read_ms: list[float] = field(default_factory=list)
    write_ms: list[float] = field(default_factory=list)
    by_name: dict[str, list[float]] = field(default_factory=dict)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: int = 0
    done: int = 0
    seconds: float = 0.0  # from the first request sent to the last answer


class Client:
    def __init__(self, base: str, settings: Settings, http: aiohttp.ClientSession) -> None:
        self.base, self.settings, self.http = base, settings, http
        self._tokens: dict[str, str] = {}

    def _headers(self, request: Request) -> dict[str, str]:
        token = self._tokens.get(request.user)
        if token is None:
            token = self._tokens[request.user] = issue_token(self.settings, request.user)
        headers = {"Authorization": f"Bearer {token}"}
        if request.key:
            headers["Idempotency-Key"] = request.key
        return headers

    async def send(self, request: Request, tally: Tally, since: float | None = None) -> None:
        """Send; count its latency from `since` (its scheduled time) or from now."""
        start = time.perf_counter() if since is None else since
        status = 0
        try:
            async with self.http.request(
                request.method,
                self.base + request.path,
                json=request.body,
                headers=self._headers(request),
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            tally.errors += 1
        elapsed = (time.perf_counter() - start) * 1000
        if status >= 500:
            tally.errors += 1
        tally.statuses[(request.name, status)] += 1
        if request.on_answer is not None:
            request.on_answer(status)
        (tally.write_ms if request.write else tally.read_ms).append(elapsed)
        tally.by_name.setdefault(request.name, []).append(elapsed)
        tally.done += 1


async def closed_loop(client: Client, mix: Mix, clients: int, seconds: float) -> Tally:
    tally = Tally()
    start = time.perf_counter()
    end = start + seconds

    async def one() -> None:
        while time.perf_counter() < end:
            await client.send(mix.next(), tally)

    await asyncio.gather(*(one() for _ in range(clients)))
    tally.seconds = time.perf_counter() - start  # to the last answer, past `end`
    return tally


async def open_loop(client: Client, mix: Mix, rps: float, seconds: float) -> Tally:
    tally = Tally()
    start = time.perf_counter()
    pending: set[asyncio.Task[None]] = set()
    for n in range(int(rps * seconds)):
        at = start + n / rps
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(client.send(mix.next(), tally, since=at))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    tally.seconds = time.perf_counter() - start
    return tally


_GROUPS = (
    ("api", "api.main:create_app"),
    ("worker", "workers.main"),
    ("temporal", "temporal server"),
    ("simulators", "cli.main simulate"),
    ("postgres", "postgres: "),
    ("load generator", "api_load.py"),
)


def cpu_seconds() -> defaultdict[str, float]:
    """CPU time used so far by the stack's processes, by part (from /proc; Linux). The
    API's uvicorn workers are its children, whose command line does not name the app."""
    tick = os.sysconf("SC_CLK_TCK")
    processes: dict[int, tuple[int, str, float]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        processes[int(proc.name)] = (int(fields[1]), command, cpu)
    group_of: dict[int, str] = {}
    for pid, (_, command, _) in processes.items():
        for group, marker in _GROUPS:
            if marker in command:
                group_of[pid] = group
                break
    used: defaultdict[str, float] = defaultdict(float)
    for pid, (parent, _, seconds) in processes.items():
        part = group_of.get(pid) or group_of.get(parent)
        if part is not None:
            used[part] += seconds
    return used


def _cpu_line(
    before: defaultdict[str, float], after: defaultdict[str, float], seconds: float, done: int
) -> str:
    parts = [f"{group} {(after[group] - before[group]) / seconds:.2f}" for group, _ in _GROUPS]
    api_ms = (after["api"] - before["api"]) / max(done, 1) * 1000
    return f"  cores busy: {', '.join(parts)}; API CPU per request {api_ms:.1f} ms"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _report(title: str, tally: Tally) -> None:
    print(f"{title}: {tally.done} requests, {tally.errors} errors")
    for name, times in sorted(tally.by_name.items()):
        print(
            f"  {name:<14} n={len(times):>6} p50={statistics.median(times):7.1f} ms "
            f"p99={_pct(times, 0.99):7.1f} ms"
        )
    odd = {k: v for k, v in tally.statuses.items() if k[1] >= 400 or k[1] == 0}
    if odd:
        print(f"  answers other than 2xx/3xx: {dict(sorted(odd.items()))}")


async def run(args: argparse.Namespace) -> None:
    url = args.database_url or (
        f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp(prefix='zhida-load-')) / 'city.db'}"
    )
    url = Settings(environment=Environment.TEST, database_url=url).database_url
    city = await prepare(url, args.enterprises, args.cases, args.firms)
    print(f"city ready: {len(city.firms)} firm users, {len(city.items)} items", file=sys.stderr)
    async with bench_stack("load", ["--receipt-delay-s", "0"], database_url=url) as stack:
        stack.worker.start()
        base = await start_api(stack, processes=args.api_processes)
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            client = Client(base, stack.settings, http)
            mix = Mix(city, random.Random(7), writes=not args.reads_only)
            await closed_loop(client, mix, 4, 5)  # warm: connections, caches, pages
            before = cpu_seconds()
            saturated = await closed_loop(client, mix, args.clients, args.seconds)
            rps_max = saturated.done / saturated.seconds
            _report(f"closed loop, {args.clients} clients, {rps_max:.0f} requests/s", saturated)
            print(_cpu_line(before, cpu_seconds(), saturated.seconds, saturated.done))
            await asyncio.sleep(APPROVE_AFTER_S)
            before = cpu_seconds()
            offered = await open_loop(client, mix, args.offered_rps, args.seconds)
            _report(f"open loop, {args.offered_rps} requests/s offered", offered)
            print(_cpu_line(before, cpu_seconds(), offered.seconds, offered.done))
    print(
        f"clients={args.clients} rps_max={rps_max:.0f} offered_rps={args.offered_rps:g} "
        f"read_p50_ms={statistics.median(offered.read_ms):.1f} "
        f"read_p99_ms={_pct(offered.read_ms, 0.99):.1f} "
        f"write_p99_ms={_pct(offered.write_ms, 0.99):.1f} "
        f"errors={saturated.errors + offered.errors}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--enterprises", type=int, default=300_000)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--firms", type=int, default=5_000, help="firm users who may apply")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--offered-rps", type=float, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--api-processes", type=int, default=2)
    parser.add_argument(
        "--reads-only", action="store_true", help="no writes: the API's ceiling on its own"
    )
    parser.add_argument(
        "--database-url",
        help="default: a new SQLite file; a database that holds a city already is reused",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
