"""Audit bundles: one case or a filtered set, exported as a zip that can be checked and
replayed later without the platform.

    manifest.json                      what was asked, by whom, when; every file's SHA-256
    report.html                        the readable report (Chinese), one section a case
    cases/<case id>/story.json         the story (models.audit.CaseStory), no histories
    histories/<workflow id>.json       each workflow's history, decoded (protobuf JSON)

The histories are decoded so that the bundle replays offline with no key; the bundle is
therefore as sensitive as the data it holds, and every export is in the audit trail with
the SHA-256 of its manifest (`zhida audit verify` prints it, to compare).
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import zipfile
import zlib
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from temporalio.client import WorkflowHistory

from core.workdays import SHANGHAI
from domain.notices.texts import stage_name
from models.audit import CaseStory, Manifest
from models.money import format_yuan

MANIFEST = "manifest.json"
REPORT = "report.html"
MAX_BUNDLE_CASES = 500


def build(
    stories: list[CaseStory], created_by: str, query: dict[str, Any], now: datetime
) -> tuple[bytes, Manifest]:
    """The bundle's bytes, and its manifest. Every story must carry its histories."""
    files: dict[str, bytes] = {}
    for story in stories:
        body = story.model_copy(update={"histories": None})
        files[f"cases/{story.case_id}/story.json"] = _json(body.model_dump(mode="json"))
        for workflow_id, history in (story.histories or {}).items():
            files[f"histories/{workflow_id}.json"] = _json(history)
    files[REPORT] = report(stories, created_by, now).encode("utf-8")
    manifest = Manifest(
        created_at=now,
        created_by=created_by,
        query=query,
        cases=[s.case_id for s in stories],
        files={path: hashlib.sha256(data).hexdigest() for path, data in sorted(files.items())},
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST, manifest_bytes(manifest))
        for path, data in sorted(files.items()):
            archive.writestr(path, data)
    return out.getvalue(), manifest


def manifest_bytes(manifest: Manifest) -> bytes:
    return _json(manifest.model_dump(mode="json"))


def manifest_sha256(manifest: Manifest) -> str:
    return hashlib.sha256(manifest_bytes(manifest)).hexdigest()


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8")


# ----- checking a bundle ----------------------------------------------------------------


class Verification(BaseModel):
    ok: bool
    manifest_sha256: str | None
    files: int
    problems: list[str]


_UNREADABLE = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError)


def verify(path: Path) -> Verification:
    """Every file listed is there with its hash, and nothing else is."""
    problems: list[str] = []
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        return Verification(ok=False, manifest_sha256=None, files=0, problems=[str(exc)])
    with archive:
        listed = archive.namelist()
        names = set(listed)
        # Two entries under one name: a reader takes one, the check might take the other.
        doubled = sorted({name for name in listed if listed.count(name) > 1})
        if doubled:
            return Verification(
                ok=False,
                manifest_sha256=None,
                files=0,
                problems=[f"entry twice in the zip: {name}" for name in doubled],
            )
        if MANIFEST not in names:
            return Verification(
                ok=False, manifest_sha256=None, files=0, problems=["no manifest.json"]
            )
        try:
            raw = archive.read(MANIFEST)
            manifest = Manifest.model_validate_json(raw)
        except (ValueError, *_UNREADABLE) as exc:
            return Verification(
                ok=False, manifest_sha256=None, files=0, problems=[f"manifest: {exc}"]
            )
        for name, expected in manifest.files.items():
            if name not in names:
                problems.append(f"missing: {name}")
                continue
            try:
                actual = hashlib.sha256(archive.read(name)).hexdigest()
            except _UNREADABLE as exc:
                problems.append(f"unreadable: {name} ({exc})")
                continue
            if actual != expected:
                problems.append(f"changed: {name} (sha256 {actual}, manifest says {expected})")
        for name in sorted(names - set(manifest.files) - {MANIFEST}):
            problems.append(f"not in the manifest: {name}")
    return Verification(
        ok=not problems,
        manifest_sha256=hashlib.sha256(raw).hexdigest(),
        files=len(manifest.files),
        problems=problems,
    )


def histories_in(path: Path) -> Iterable[WorkflowHistory]:
    """The bundle's histories, for an offline replay."""
    with zipfile.ZipFile(path) as archive:
        for name in sorted(archive.namelist()):
            if name.startswith("histories/") and name.endswith(".json"):
                workflow_id = name.removeprefix("histories/").removesuffix(".json")
                yield WorkflowHistory.from_json(workflow_id, archive.read(name).decode("utf-8"))


# ----- the readable report ----------------------------------------------------------------


def _at(value: datetime | None) -> str:
    return value.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S") if value else "—"


def _fen(value: int | None) -> str:
    return format_yuan(value) if value is not None else "—"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "<p class=none>（无）</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _case_section(story: CaseStory) -> str:
    state = story.state
    facts = [
        ["案件编号", story.case_id],
        ["类别", story.category],
        ["当前阶段", stage_name(state.stage.value) if state else story.state_source],
        ["政策条目 / 版本", f"{state.item_code} 第{state.version}版" if state else "—"],
        ["期间", state.period if state else "—"],
        ["企业（统一社会信用代码）", state.uscc if state else "—"],
        ["核定金额", _fen(state.approved_amount_fen) if state else "—"],
        ["已拨付金额", _fen(state.paid_amount_fen) if state else "—"],
        ["状态来源", story.state_source],
    ]
    parts = [
        f"<section><h2>{html.escape(story.case_id)}</h2>",
        _table(["项目", "内容"], facts),
        "<h3>办理经过（时间线）</h3>",
        _table(
            ["时间", "阶段", "操作人", "操作", "说明"],
            [
                [_at(t.at), stage_name(t.stage.value), t.actor, t.action, t.detail]
                for t in (state.timeline if state else [])
            ],
        ),
        "<h3>条件核验（据以作出决定的证据与规则结果）</h3>",
        _table(
            ["条件", "结果", "依据数据", "要求", "实际"],
            [
                [c.description, c.outcome.value, c.fact or "—", str(c.expected), str(c.actual)]
                for c in (state.conditions if state else [])
            ],
        ),
        "<h3>资金台账</h3>",
        _table(
            ["时间", "类型", "期次", "金额", "凭证号", "银行流水号"],
            [
                [
                    _at(line.at),
                    line.kind,
                    str(line.instalment),
                    _fen(line.amount_fen),
                    line.voucher_no or "—",
                    line.bank_serial or "—",
                ]
                for line in story.ledger
            ],
        ),
        "<h3>预算管理一体化系统记录</h3>",
        _table(
            ["幂等键", "状态", "金额", "凭证号", "受理时间", "到账时间"],
            [
                [
                    r.idempotency_key,
                    r.state.value,
                    _fen(r.amount_fen),
                    r.voucher_no,
                    _at(r.accepted_at),
                    _at(r.paid_at),
                ]
                for r in story.budget_system
            ],
        ),
        "<h3>请求记录（操作人、时间、来源）</h3>",
        _table(
            ["时间", "操作人", "角色", "请求", "结果", "来源地址", "关联编号"],
            [
                [
                    _at(e.at),
                    e.actor,
                    e.role or "—",
                    f"{e.method} {e.path}",
                    str(e.status),
                    e.client or "—",
                    e.correlation_id,
                ]
                for e in story.requests
            ],
        ),
        "<h3>流程（Temporal 工作流）</h3>",
        _table(
            ["工作流编号", "类型", "状态", "开始", "结束", "事件数"],
            [
                [
                    w.workflow_id,
                    w.workflow_type,
                    w.status,
                    _at(w.started_at),
                    _at(w.closed_at),
                    str(w.events),
                ]
                for w in story.workflows
            ],
        ),
        "</section>",
    ]
    return "\n".join(parts)


def report(stories: list[CaseStory], created_by: str, now: datetime) -> str:
    sections = "\n".join(_case_section(s) for s in stories)
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<title>惠企资金兑付审计报告</title>
<style>
body {{ font-family: "Noto Sans CJK SC", "Microsoft YaHei", sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin: .5em 0 1em; }}
th, td {{ border: 1px solid #999; padding: .25em .5em; font-size: 90%; text-align: left; }}
th {{ background: #eee; }} section {{ page-break-after: always; }} .none {{ color: #777; }}
</style></head><body>
<h1>惠企资金兑付审计报告</h1>
<p>导出人：{html.escape(created_by)}　导出时间：{_at(now)}（北京时间）　案件数：{len(stories)}</p>
<p>本报告随审计包一并导出；审计包内 manifest.json 列明每个文件的 SHA-256，
可用 <code>zhida audit verify 审计包.zip</code> 校验完整性，
用 <code>zhida audit replay --bundle 审计包.zip</code> 离线重放流程历史。</p>
{sections}
</body></html>
"""
