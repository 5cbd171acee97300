"""Auditors end to end on the live stack (dev server, worker with the real activities,
both databases, the budget-system simulator): find a paid case by what an auditor knows,
read it as one story with its decoded histories, replay it on the current code, export
it as a bundle that verifies and replays offline, and cross-check the money; every
sensitive read and export is in the trail."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from temporalio.api.history.v1 import History
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from cli.main import app as cli
from core.workdays import SHANGHAI
from domain.audit import bundle, histories
from models.registry import mask_account
from tests.fixtures.api import auth
from tests.fixtures.stack import Stack
from tests.test_application_e2e import AMOUNT, _setup, apply_and_wait, case_handle, final_id
from workflows.all import ALL_WORKFLOWS

ACCOUNT = "6222020200998877665"


async def _paid_case(stack: Stack, env: WorkflowEnvironment) -> tuple[str, str, str]:
    """A case applied for, approved by both units and paid; (item, uscc, case id)."""
    code, uscc = await _setup(stack, account=ACCOUNT)
    await apply_and_wait(stack, env, code, uscc)
    base = f"/api/v1/cases/application/{code}/2026/{uscc}"
    for unit in ("jxj_staff", "czj_staff"):
        decided = await stack.api.post(
            f"{base}/decisions",
            json={"action": "approve", "reason": "材料齐全"},
            headers=auth(stack.settings, unit) | {"User-Agent": "caseworker-browser/1.0"},
        )
        assert decided.status_code == 200, decided.text
    final = await case_handle(env, final_id(code, uscc)).result()
    assert final.stage.value == "paid"
    return code, uscc, final.case_id


async def test_an_auditor_finds_reads_replays_exports_and_cross_checks_a_paid_case(
    stack: Stack, dev_server: WorkflowEnvironment, tmp_path: Path
) -> None:
    api, settings = stack.api, stack.settings
    code, uscc, case_id = await _paid_case(stack, dev_server)
    auditor = auth(settings, "auditor")
    today = datetime.now(SHANGHAI).date().isoformat()

    # Find: by item department, amount range, paid today, not returned, not recovered.
    found = await api.get(
        "/api/v1/cases",
        params={
            "item": code,
            "item_department": "330500-JXJ",
            "min_amount_fen": AMOUNT,
            "max_amount_fen": AMOUNT,
            "paid_from": today,
            "paid_to": today,
            "returned": "false",
            "recovered": "false",
        },
        headers=auditor,
    )
    assert found.status_code == 200, found.text
    assert [c["case_id"] for c in found.json()["items"]] == [case_id]
    nothing_params: tuple[dict[str, str | int], ...] = (
        {"item": code, "returned": "true"},
        {"item": code, "recovered": "true"},
        {"item": code, "min_amount_fen": AMOUNT + 1},
        {"item": code, "paid_to": "2020-01-01"},
        {"item": code, "item_department": "330500-KJJ"},
    )
    for params in nothing_params:
        none = await api.get("/api/v1/cases", params=params, headers=auditor)
        assert none.json()["total"] == 0, params
    bad = await api.get(
        "/api/v1/cases", params={"paid_from": today, "paid_to": "2020-01-01"}, headers=auditor
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "paid_to"
    for url, numbers in (
        ("/api/v1/cases", {"paid_to": "0"}),
        ("/api/v1/cases", {"paid_to": "9999-12-31"}),  # would overflow on its way to UTC
        ("/api/v1/audit/bundle", {"paid_from": "0001-01-01"}),
        ("/api/v1/audit/trail", {"since": "0001-01-01T00:00:00+14:00"}),
        ("/api/v1/audit/trail", {"until": "9999-12-31T23:59:59-14:00"}),
        ("/api/v1/audit/trail", {"until": "0.5"}),
        ("/api/v1/audit/policy-changes", {"since": "1700000000"}),
    ):
        number = await api.get(url, params=numbers, headers=auditor)
        assert number.status_code == 422, (url, number.text)
        assert number.json()["errors"][0]["field"] == next(iter(numbers))
    changes = await api.get("/api/v1/audit/policy-changes", params={"item": code}, headers=auditor)
    assert changes.status_code == 200
    assert {c["action"] for c in changes.json()["items"]} >= {"created", "submitted"}

    # Read: one story.
    path = f"/api/v1/audit/cases/application/{code}/2026/{uscc}"
    told = await api.get(path, headers=auditor)
    assert told.status_code == 200, told.text
    story = told.json()
    assert story["state_source"] == "result"
    assert story["state"]["stage"] == "paid"
    actions = [(t["actor"], t["action"]) for t in story["state"]["timeline"]]
    assert ("jxj_staff", "approve") in actions and ("czj_staff", "approve") in actions
    assert story["state"]["conditions"], "the rule outcomes it was decided on"
    assert story["policy_version"]["version"] == 1
    assert story["policy_version"]["item_code"] == code
    kinds = [line["kind"] for line in story["ledger"]]
    instructed = next(line for line in story["ledger"] if line["kind"] == "instruct")
    assert instructed["details"]["payee_account"] == mask_account(ACCOUNT)  # full: logged route
    assert kinds[:1] == ["reserve"] and "instruct" in kinds and "receipt" in kinds
    [record] = story["budget_system"]
    assert (record["state"], record["amount_fen"]) == ("paid", AMOUNT)
    assert story["budget_system_error"] is None
    requests = [(r["actor"], r["method"], r["status"]) for r in story["requests"]]
    assert ("qiye", "POST", 201) in requests
    assert ("jxj_staff", "POST", 200) in requests and ("czj_staff", "POST", 200) in requests
    decision = next(r for r in story["requests"] if r["actor"] == "jxj_staff")
    assert decision["user_agent"] == "caseworker-browser/1.0"
    assert decision["client"] and decision["correlation_id"]
    types = {w["workflow_type"]: w["status"] for w in story["workflows"]}
    assert types == {"ApplicationWorkflow": "completed", "PaymentWorkflow": "completed"}
    # The decoded histories hold what Temporal keeps only as ciphertext (the reason a
    # caseworker gave; the firm's public credit code is in the workflow id, by design).
    raw = await dev_server.client.get_workflow_handle(case_id).fetch_history()
    stored = History(events=raw.events).SerializeToString()
    assert "材料齐全".encode() not in stored
    assert "binary/encrypted" not in json.dumps(story["histories"])
    texts = list(_payload_texts(story["histories"][case_id]))
    assert any("材料齐全" in t for t in texts)
    # The full account: auditors only, and the read is logged.
    accounts = await api.get(f"/api/v1/audit/enterprises/{uscc}/accounts", headers=auditor)
    assert [a["account_number"] for a in accounts.json()] == [ACCOUNT]

    # Replay, through the API.
    replayed = await api.get(f"{path}/replay", headers=auditor)
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["replayed"] == replayed.json()["identical"] == 2

    # Export one case; the bundle verifies, and replays offline with no key.
    exported = await api.get(f"{path}/bundle", headers=auditor)
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"] == "application/zip"
    digest = exported.headers["x-manifest-sha256"]
    zipped = tmp_path / "case.zip"
    zipped.write_bytes(exported.content)
    checked = bundle.verify(zipped)
    assert (checked.ok, checked.manifest_sha256) == (True, digest)
    report_html = zipfile.ZipFile(zipped).read("report.html").decode()
    assert "惠企资金兑付审计报告" in report_html and case_id in report_html
    offline = await histories.replay(
        list(bundle.histories_in(zipped)), ALL_WORKFLOWS, pydantic_data_converter
    )
    assert (offline.replayed, offline.identical) == (2, 2)
    runner = CliRunner()
    verified = await asyncio.to_thread(runner.invoke, cli, ["audit", "verify", str(zipped)])
    assert verified.exit_code == 0 and f"manifest_sha256={digest}" in verified.output
    cli_replay = await asyncio.to_thread(
        runner.invoke, cli, ["audit", "replay", "--bundle", str(zipped)]
    )
    assert cli_replay.exit_code == 0, cli_replay.output
    assert "replayed=2 identical=2 different=0" in cli_replay.output

    # A changed file, an added file: verify says which, and fails.
    tampered = tmp_path / "tampered.zip"
    _rewrite(zipped, tampered, change=f"cases/{case_id}/story.json", add="extra.txt")
    broken = bundle.verify(tampered)
    assert not broken.ok
    assert any(p.startswith(f"changed: cases/{case_id}/story.json") for p in broken.problems)
    assert "not in the manifest: extra.txt" in broken.problems
    failed = await asyncio.to_thread(runner.invoke, cli, ["audit", "verify", str(tampered)])
    assert failed.exit_code == 1
    # A changed copy placed before the original under the same name: readers take the
    # first, so two entries of one name fail, whatever their hashes.
    doubled = tmp_path / "doubled.zip"
    story_name = f"cases/{case_id}/story.json"
    with (
        zipfile.ZipFile(zipped) as original,
        zipfile.ZipFile(doubled, "w") as copy,
        pytest.warns(UserWarning, match="Duplicate name"),  # what we are after
    ):
        copy.writestr(story_name, b"{}")
        for name in original.namelist():
            copy.writestr(name, original.read(name))
    assert bundle.verify(doubled).problems == [f"entry twice in the zip: {story_name}"]
    # Flipped bytes inside a compressed entry: a problem named, not a crash.
    corrupt = tmp_path / "corrupt.zip"
    data = bytearray(zipped.read_bytes())
    offset = data.find(b"report.html") + 200
    data[offset : offset + 2] = bytes([data[offset] ^ 0xFF, data[offset + 1] ^ 0xFF])
    corrupt.write_bytes(bytes(data))
    assert not bundle.verify(corrupt).ok

    # A filtered set.
    filtered = await api.get("/api/v1/audit/bundle", params={"item": code}, headers=auditor)
    assert filtered.status_code == 200
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(filtered.content)).read("manifest.json"))
    assert manifest["cases"] == [case_id] and manifest["query"] == {"item_code": code}
    nothing = await api.get(
        "/api/v1/audit/bundle", params={"item": "NO-SUCH-ITEM"}, headers=auditor
    )
    assert nothing.status_code == 422

    # Cross-check: the ledger's instruction, its payment workflow, the budget system's record.
    checked_money = await api.get(
        "/api/v1/audit/crosscheck", params={"item": code}, headers=auditor
    )
    assert checked_money.status_code == 200
    assert checked_money.json() == {"instructions": 1, "payment_workflows": 1, "differences": []}

    # The trail shows the reads of decoded histories and the exports, with the digest.
    trail = await api.get("/api/v1/audit/trail", params={"subject": case_id}, headers=auditor)
    kinds_seen = [(e["kind"], e["actor"]) for e in trail.json()["items"]]
    assert ("sensitive_read", "auditor") in kinds_seen
    read = await api.get("/api/v1/audit/trail", params={"subject": uscc}, headers=auditor)
    [account_read] = read.json()["items"]
    assert (account_read["kind"], account_read["details"]["what"]) == (
        "sensitive_read",
        "full bank account numbers",
    )
    assert ("replay", "auditor") in kinds_seen
    exports = [e for e in trail.json()["items"] if e["kind"] == "export"]
    assert exports and exports[-1]["details"]["manifest_sha256"] == digest
    # Others may not read the trail or the story.
    for user in ("jxj_staff", "czj_staff", "qiye", "ops"):
        refused = await api.get(path, headers=auth(settings, user))
        assert refused.status_code == 403, user
    missing = await api.get(f"/api/v1/audit/cases/application/{code}/2025/{uscc}", headers=auditor)
    assert missing.status_code == 404


def _payload_texts(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        if "metadata" in value and isinstance(value.get("data"), str):
            yield base64.b64decode(value["data"]).decode("utf-8", "replace")
        for inner in value.values():
            yield from _payload_texts(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _payload_texts(inner)


def _rewrite(source: Path, target: Path, *, change: str, add: str) -> None:
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for name in original.namelist():
            data = original.read(name)
            copy.writestr(name, data + b" " if name == change else data)
        copy.writestr(add, b"x")


async def test_the_trail_logs_every_write_with_its_outcome_and_origin(stack: Stack) -> None:
    """A refused write is in the trail too, with who, the status and the origin."""
    api, settings = stack.api, stack.settings
    code, uscc = await _setup(stack)
    tag = uuid.uuid4().hex
    refused = await api.post(
        f"/api/v1/cases/application/{code}/2026/{uscc}/decisions",
        json={"action": "approve"},
        headers=auth(settings, "kjj_staff") | {"X-Request-ID": tag},
    )
    assert refused.status_code == 403
    trail = await api.get(
        "/api/v1/audit/trail", params={"actor": "kjj_staff"}, headers=auth(settings, "auditor")
    )
    [event] = [e for e in trail.json()["items"] if e["correlation_id"] == tag]
    assert (event["kind"], event["status"], event["method"]) == ("write", 403, "POST")
    assert event["subject"] == f"application/{code}/2026/{uscc}"
    naive = await api.get(
        "/api/v1/audit/trail",
        params={"since": "2026-01-01T00:00:00"},
        headers=auth(settings, "auditor"),
    )
    assert naive.status_code == 422 and naive.json()["errors"][0]["field"] == "since"
    reversed_range = await api.get(
        "/api/v1/audit/trail",
        params={"since": "2026-02-01T00:00:00+08:00", "until": "2026-01-01T00:00:00+08:00"},
        headers=auth(settings, "auditor"),
    )
    assert reversed_range.status_code == 422
    # Refused before any access check (a body of the wrong type): the sender is known.
    tag = uuid.uuid4().hex
    wrong_type = await api.post(
        "/api/v1/cases",
        content=b"x",
        headers=auth(settings, "jxj_staff") | {"Content-Type": "text/plain", "X-Request-ID": tag},
    )
    assert wrong_type.status_code == 415
    trail = await api.get(
        "/api/v1/audit/trail", params={"actor": "jxj_staff"}, headers=auth(settings, "auditor")
    )
    assert [e["status"] for e in trail.json()["items"] if e["correlation_id"] == tag] == [415]
