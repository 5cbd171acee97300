"""What warnings and notices say, and the Chinese names of stages: every text a unit or
a firm reads in its notices is written here, whoever sends it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import NamedTuple

from core.workdays import SHANGHAI
from models.eligibility import Verdict
from models.money import format_yuan


class Text(NamedTuple):
    title: str
    body: str


# Stages of cases (`CaseStage`) and of policy changes (`ChangeStage`), as units call them.
STAGE_NAMES: Mapping[str, str] = {
    "department_review": "部门审核",
    "department_head_review": "部门负责人审核",
    "finance_review": "财政审核",
}


def stage_name(stage: str) -> str:
    return STAGE_NAMES.get(stage, stage)


def _minute(at: datetime) -> str:
    return at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")


# ----- warnings to units (预警) ------------------------------------------------------

OVERDUE_TITLE = "办理超时预警"


CASE_KINDS = {"application": "申报件", "recognition": "免申即享认定件"}


def case_overdue(item_code: str, stage: str, due_at: datetime, subject: str = "") -> Text:
    """`subject`: the case's (or recognition batch's) workflow id, which names its kind."""
    if subject.startswith("recognition-batch/"):
        what = f"认定批次 {subject.removeprefix('recognition-batch/')} 的名单核定"
    else:
        what = f"{CASE_KINDS.get(subject.split('/', 1)[0], '申报件')}的{stage_name(stage)}"
    return Text(
        OVERDUE_TITLE,
        f"{item_code} {what}已超过办理时限（{_minute(due_at)}），请尽快处理。",
    )


def change_overdue(item_code: str, version: int, stage: str, due_at: datetime) -> Text:
    return Text(
        OVERDUE_TITLE,
        f"政策条目 {item_code} 第{version}版的审核（{stage_name(stage)}）"
        f"已超过办理时限（{_minute(due_at)}），请尽快处理。",
    )


def payment_failed_warning(item_code: str, reason: str) -> Text:
    return Text(
        "支付失败预警",
        f"{item_code} 申报件支付未能发出（{reason}），请排除原因后重新支付，或撤销该件。",
    )


def awaiting_budget_warning(item_code: str, reason: str) -> Text:
    return Text(
        "预算指标不足预警",
        f"{item_code} 申报件已审核通过，但预算指标不足或未下达"
        f"（{reason}），请追加或下达指标，或撤销该件。",
    )


def match_failed_warning(item_code: str, version: int, reason: str) -> Text:
    return Text(
        "政策匹配异常预警",
        f"政策条目 {item_code} 第{version}版的条件或金额规则无法计算，"
        f"匹配已跳过该条目（政策匹配库保留上次结果）。原因：{reason}。"
        "请核查并修订该条目。",
    )


# ----- notices to firms ---------------------------------------------------------------


def payment_failed(item_code: str, reason: str) -> Text:
    return Text(
        "资金支付未能发出",
        f"您的{item_code}资金支付未能发出（{reason}）。"
        "如为收款账户问题，请更正账户后确认；财政部门将重新支付。",
    )


def payment_returned(purpose: str, reason: str) -> Text:
    return Text(
        "资金退票，请核对收款账户",
        f"您的{purpose}资金被银行退回（{reason}），请核对并更正收款账户后确认。",
    )


def case_returned(title: str, period: str, corrections: list[str]) -> Text:
    return Text(
        "申报材料需补正",
        f"您申报的“{title}”（{period}）需补正：{'；'.join(corrections)}。"
        "请在直达平台补正后重新提交。",
    )


def case_rejected(title: str, period: str, reason: str, applied: bool = True) -> Text:
    if not applied:  # a recognition case: the firm applied for nothing
        return Text(
            "免申即享未通过审核",
            f"“{title}”（{period}）经个案审核未予兑付。原因：{reason}",
        )
    return Text("申报未通过", f"您申报的“{title}”（{period}）未通过审核。原因：{reason}")


def case_paid(title: str, period: str, amount_fen: int, applied: bool = True) -> Text:
    what = f"您申报的“{title}”" if applied else f"贵企业免申即享的“{title}”"
    return Text(
        "补助资金已拨付",
        f"{what}（{period}）补助资金{format_yuan(amount_fen)}已拨付至贵企业收款账户。",
    )


def case_cancelled(item_code: str, reason: str) -> Text:
    return Text("申报事项已撤销", f"您申报的{item_code}事项已由财政部门撤销，原因：{reason}。")


def policy_pushed(title: str, verdict: Verdict, amount_fen: int | None) -> Text:
    """A matched policy pushed to a firm (政策快享): in-app and through the channel."""
    amount = f"，预计可获{format_yuan(amount_fen)}" if amount_fen else ""
    if verdict is Verdict.ELIGIBLE:
        body = f"根据公共数据，贵企业符合“{title}”条件{amount}。请登录直达平台查看并办理。"
    else:
        body = f"贵企业可能符合“{title}”条件{amount}，尚有条件需核实。请登录直达平台查看详情。"
    return Text(f"政策快享：{title}", body)


# ----- recognition (免申即享) ----------------------------------------------------------


def recognition_identified(
    title: str, period: str, amount_fen: int, confirm_by: datetime | None
) -> Text:
    """The firm was identified from data; it confirms its account by `confirm_by`, or,
    when None, it is paid into its verified account without doing anything."""
    amount = format_yuan(amount_fen)
    if confirm_by is None:
        return Text(
            "免申即享：资金即将拨付",
            f"经数据比对，贵企业符合“{title}”（{period}）条件，经核定可享受 {amount}，"
            "无需申报。资金将直接拨付至贵企业已验证的收款账户，请留意到账。",
        )
    return Text(
        "免申即享：请确认收款账户",
        f"经数据比对，贵企业符合“{title}”（{period}）条件，经核定可享受 {amount}，"
        f"无需申报。请于 {_minute(confirm_by)} 前登录平台确认或更正收款账户"
        "（也可放弃），逾期未确认的视为放弃。",
    )


def recognition_reminder(title: str, period: str, amount_fen: int, confirm_by: datetime) -> Text:
    return Text(
        "免申即享：收款账户待确认（提醒）",
        f"贵企业可享受的“{title}”（{period}）{format_yuan(amount_fen)} 尚待确认收款账户，"
        f"请于 {_minute(confirm_by)} 前确认，逾期视为放弃。",
    )


def recognition_expired(title: str, period: str) -> Text:
    return Text(
        "免申即享：确认期限已过",
        f"贵企业未在期限内确认“{title}”（{period}）的收款账户，本次兑付已关闭。"
        "如有疑问请联系主管部门。",
    )


# ----- commitment cases (承诺类) ----------------------------------------------------------


def commitment_approved(title: str, committed_fen: int) -> Text:
    return Text(
        "承诺事项已通过联审",
        f"贵企业申请的“{title}”已通过主管部门和财政部门联合审核，核定承诺奖补金额 "
        f"{format_yuan(committed_fen)}，事中预付资金将按规定拨付。",
    )


def commitment_prepaid(title: str, amount_fen: int, completion: str) -> Text:
    return Text(
        "承诺制预付资金已拨付",
        f"“{title}”的事中预付资金 {format_yuan(amount_fen)} 已拨付。请按承诺于 {completion} "
        "前完成项目并提交完工材料；期间可报送项目进展。",
    )


def commitment_reminder(title: str, completion: str, days: int) -> Text:
    return Text(
        "承诺项目即将到期提醒",
        f"贵企业承诺的“{title}”项目应于 {completion} 完成（还有 {days} 天）。"
        "请按时提交完工材料和实际完成指标；确需延期的，请在到期前提出延期申请（限一次）。",
    )


def commitment_extension(title: str, approved: bool, completion: str, reason: str) -> Text:
    verdict = f"已同意，完成日期调整为 {completion}" if approved else "未获同意"
    return Text("承诺项目延期申请结果", f"“{title}”项目的延期申请{verdict}。理由：{reason}")


def commitment_settled(title: str, explanation: str, final_fen: int, prepaid_fen: int) -> Text:
    if final_fen > prepaid_fen:
        tail = f"将拨付尾款 {format_yuan(final_fen - prepaid_fen)}。"
    elif final_fen < prepaid_fen:
        tail = f"已预付 {format_yuan(prepaid_fen)}，需退回 {format_yuan(prepaid_fen - final_fen)}，"
        tail += "追回通知另行发送。"
    else:
        tail = "与已预付金额相同，无需再拨付或退回。"
    return Text("承诺项目结算结果", f"“{title}”项目结算：{explanation}。{tail}")


def recovery_notice(
    title: str, amount_fen: int, reason: str, due_on: str, payment_code: str | None, rate: str
) -> Text:
    code = f"（缴款码 {payment_code}）" if payment_code else ""
    return Text(
        "财政资金追回通知",
        f"因{reason}，贵企业须退回“{title}”已预付资金 {format_yuan(amount_fen)}。"
        f"请于 {due_on} 前通过预算管理一体化系统缴回{code}。逾期自次日起按日 {rate} "
        "计收资金占用费（单利）；逾期未缴的，将从贵企业此后应得的财政奖补资金中抵扣，"
        "并记入企业信用记录。",
    )


def recovery_plan(title: str, plan: list[tuple[str, int]]) -> Text:
    lines = "；".join(f"{due} 前缴 {format_yuan(amount)}" for due, amount in plan)
    return Text(
        "追回款分期缴纳已获批准",
        f"“{title}”应退资金已获准分 {len(plan)} 期缴纳：{lines}。任一期逾期未缴，"
        "剩余款项立即全部到期并计收资金占用费。",
    )


def recovery_offset(title: str, amount_fen: int, paying: str) -> Text:
    return Text(
        "应退资金已从拨付款中抵扣",
        f"贵企业逾期未退回的“{title}”资金，已从本次拨付的 {paying} 中抵扣 "
        f"{format_yuan(amount_fen)}。",
    )


def recovery_defaulted(title: str, outstanding_fen: int) -> Text:
    return Text(
        "追回款逾期未缴：已记入信用记录",
        f"贵企业应退回的“{title}”资金逾期未缴，尚欠 {format_yuan(outstanding_fen)}。"
        "已记入企业信用记录（承诺事项违约），并将从此后应得的财政奖补资金中抵扣。",
    )


def recovery_default_warning(item_code: str, uscc: str, outstanding_fen: int) -> Text:
    return Text(
        "追回款逾期未缴预警",
        f"事项 {item_code} 企业 {uscc} 的追回款逾期（含宽限期）未缴，尚欠 "
        f"{format_yuan(outstanding_fen)}，已记入信用记录，请部门负责人与财政跟进。",
    )


def recovery_closed(title: str, how: str) -> Text:
    return Text("追回事项已办结", f"“{title}”的追回事项已办结：{how}。")
