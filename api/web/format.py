"""What pages show and read: money in yuan from integer fen (and back, exactly), times in
Asia/Shanghai, and the platform's codes in Chinese."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from decimal import Decimal
from typing import Any

from core.workdays import SHANGHAI
from models.money import MAX_FEN


class FieldInvalid(Exception):
    """A form field the page refuses before anything is sent: the field and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# Yuan as people type it: digits, optionally grouped by thousands, at most two decimals.
# ASCII digits only, after NFKC: a Chinese input method's full-width ０-９，． read as the
# same amount; digits of other scripts are refused.
_YUAN = re.compile(r"(?P<whole>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.(?P<fraction>[0-9]*))?")


def parse_yuan(text: str, field: str, label: str, *, positive: bool = True) -> int:
    """An amount typed in yuan as integer fen, exactly: no float ever holds it. Refused,
    naming the field: anything but a plain non-negative number, more than two decimals,
    more than 10^15 fen, and (when `positive`) zero."""
    cleaned = unicodedata.normalize("NFKC", text).strip().replace("。", ".")
    match = _YUAN.fullmatch(cleaned)
    if match is None:
        if cleaned.startswith("-"):
            raise FieldInvalid(field, f"{label}不能为负数")
        raise FieldInvalid(field, f"{label}须为数字（元），如 12345.67")
    fraction = match["fraction"] or ""
    if len(fraction) > 2:
        raise FieldInvalid(field, f"{label}最多保留两位小数（精确到分）")
    whole = match["whole"].replace(",", "")
    if len(whole) > 16:
        raise FieldInvalid(field, f"{label}超出上限 {format_fen(MAX_FEN)}")
    fen = int(whole) * 100 + int(fraction.ljust(2, "0"))
    if fen > MAX_FEN:
        raise FieldInvalid(field, f"{label}超出上限 {format_fen(MAX_FEN)}")
    if positive and fen == 0:
        raise FieldInvalid(field, f"{label}须大于 0")
    return fen


def format_fen(fen: Any) -> str:
    """12345678 -> '123,456.78 元'; nothing for a missing amount."""
    if fen is None or isinstance(fen, bool) or not isinstance(fen, int):
        return "—"
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}{yuan:,}.{cents:02d} 元"


def format_wan(fen: Any) -> str:
    """An amount in 万元 with two decimals (rounded half up), for cards and charts."""
    if not isinstance(fen, int) or isinstance(fen, bool):
        return "—"
    wan = (Decimal(fen) / Decimal(1_000_000)).quantize(Decimal("0.01"))
    return f"{wan:,} 万元"


def wan_number(fen: int) -> float:
    """A chart's bar height in 万元 (drawing only; every figure shown is from fen)."""
    return float(Decimal(fen) / Decimal(1_000_000))


def format_time(value: Any) -> str:
    """An API timestamp (ISO 8601, UTC) as Shanghai wall time, to the minute."""
    if not value:
        return "—"
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        return moment.strftime("%Y-%m-%d %H:%M")
    return moment.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")


def format_number(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def format_pct(value: Any) -> str:
    return "—" if value is None else f"{format_number(value)}%"


def case_page(case_id: str) -> str:
    """A case's page from its id (`category/item/period/uscc[/attempt]`): the business key
    route, which shows the latest attempt."""
    parts = case_id.split("/")
    return "/ui/cases/" + "/".join(parts[:4]) if len(parts) >= 4 else "/ui/cases"


ROLES = {
    "enterprise": "企业",
    "department_caseworker": "部门经办人",
    "department_head": "部门负责人",
    "finance_caseworker": "财政经办人",
    "finance_head": "财政负责人",
    "auditor": "审计人员",
    "admin": "平台管理员",
    "ops": "运维人员",
}
CATEGORIES = {"application": "申报类", "recognition": "免申即享", "commitment": "承诺制"}
STAGES = {
    "check": "自动核验",
    "department_review": "部门审核",
    "finance_review": "财政审核",
    "correction": "退回补正",
    "awaiting_budget": "等待预算",
    "payment": "拨付中",
    "account_correction": "退票待更正账户",
    "payment_failed": "拨付失败",
    "paid": "已兑付",
    "rejected": "已驳回",
    "withdrawn": "已撤回",
    "cancelled": "已撤销",
    "confirmation": "待企业确认",
    "declined": "企业放弃",
    "expired": "逾期未确认",
    "joint_review": "联合审核",
    "project": "项目实施",
    "completion_review": "验收审核",
    "settlement_review": "清算审核",
    "recovery": "追回中",
    "settled": "已清算",
}
VERDICTS = {"eligible": "符合", "possibly_eligible": "可能符合", "not_eligible": "不符合"}
OUTCOMES = {"pass": "满足", "fail": "不满足", "unknown": "待核实"}
PHASES = {
    "identifying": "识别中",
    "department_verification": "待部门核定",
    "finance_verification": "待财政核定",
    "starting": "启动案件中",
    "disbursing": "兑付中",
    "done": "已完成",
    "failed": "失败",
}
ENTRY_STATUSES = {
    "listed": "在名单",
    "possible": "可能符合（另列）",
    "department_verified": "部门已核定",
    "individual_review": "转个案审核",
    "verified": "已核定",
    "dropped": "已剔除",
}
EVIDENCE = {
    "confirmed": "一致",
    "from_data": "取自数据",
    "mismatch": "不一致",
    "stale": "数据过期",
    "missing": "数据缺失",
    "unavailable": "无法获取",
}
FINDINGS = {
    "open": "待处理",
    "clearing": "待复核排除",
    "cleared": "已排除",
    "upheld": "已认定",
    "lapsed": "已失效",
}


def label(table: dict[str, str], code: Any) -> str:
    return table.get(str(code), str(code)) if code is not None else "—"


def format_value(value: object) -> str:
    """A rule's figure as a person reads it: lists joined with 、, yes or no, — for none."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, list | tuple | set | frozenset):
        return "、".join(format_value(v) for v in value) or "—"
    return str(value)
