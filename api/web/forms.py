"""Forms of the pages as the API's request bodies: what a person typed, checked before
anything is sent (an amount with more than two decimals never reaches the API), then
forwarded with the `Idempotency-Key` drawn into the form, so a double submit is applied
once. Post/Redirect/Get: the outcome is told on the page the form came from."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from api.web.client import ApiError, FieldMessage
from api.web.format import FieldInvalid, parse_yuan
from api.web.render import error_page
from api.web.session import Flash, idempotency_key, same_origin, set_flash, signed_in

# The API's field names as the form calls them, and what people read.
FORM_FIELDS = {"amount_fen": "amount_yuan", "expected_total_fen": "expected_total_yuan"}
FIELD_LABELS = {
    "action": "审核决定",
    "amount_yuan": "批准金额（元）",
    "reason": "理由",
    "corrections": "补正事项",
    "findings": "查重发现",
    "exceptions": "例外企业",
    "include": "纳入企业",
    "comment": "核定意见",
    "expected_total_yuan": "核定总额（元）",
    "account": "收款账户",
    "Idempotency-Key": "表单编号",
}
_SEPARATORS = re.compile(r"[,，\t]\s*|\s+")
MAX_LINES = 5000


def text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def lines(form: FormData, name: str) -> list[str]:
    found = [line.strip() for line in text(form, name).splitlines() if line.strip()]
    if len(found) > MAX_LINES:
        raise FieldInvalid(name, f"最多 {MAX_LINES} 行")
    return found


def decision(form: FormData) -> dict[str, Any]:
    """A review decision: approve (an amount in yuan, exact to the fen, or the computed
    one), reject, or return for correction (one item per line); findings upheld."""
    action = text(form, "action")
    if action not in ("approve", "reject", "return"):
        raise FieldInvalid("action", "请选择审核决定：通过、驳回或退回补正")
    body: dict[str, Any] = {"action": action, "reason": text(form, "reason")}
    if action == "approve":
        amount = text(form, "amount_yuan")
        if amount:
            body["amount_fen"] = parse_yuan(amount, "amount_yuan", "批准金额")
    if action == "return":
        corrections = lines(form, "corrections")
        if not corrections:
            raise FieldInvalid("corrections", "退回补正须列出需补正的事项，每行一项")
        body["corrections"] = corrections
    findings = []
    for value in form.getlist("findings"):
        if not isinstance(value, str) or not value.isdigit() or len(value) > 10:
            raise FieldInvalid("findings", "查重发现编号无效")
        findings.append(int(value))
    if findings and action != "return":
        body["findings"] = findings
    return body


def confirmation(form: FormData) -> dict[str, Any]:
    """A firm confirms its account on file, or gives a corrected one (all three fields)."""
    account = {k: text(form, k) for k in ("bank_name", "account_name", "account_number")}
    if not any(account.values()):
        return {}
    if not all(account.values()):
        raise FieldInvalid("account", "更正账户须填写开户银行、户名和账号三项")
    return {"account": account}


_DISPOSITIONS = {
    "个案审核": "individual_review",
    "individual_review": "individual_review",
    "review": "individual_review",
    "剔除": "drop",
    "drop": "drop",
}


def department_verification(form: FormData) -> dict[str, Any]:
    """Every listed firm but the exceptions (`代码 个案审核|剔除 理由` a line), plus the
    firms listed apart that the department includes (`代码 理由` a line)."""
    exceptions = []
    for number, line in enumerate(lines(form, "exceptions"), start=1):
        parts = _SEPARATORS.split(line, maxsplit=2)
        if len(parts) < 3 or parts[1] not in _DISPOSITIONS:
            raise FieldInvalid(
                "exceptions", f"第 {number} 行应为：统一社会信用代码 个案审核|剔除 理由"
            )
        exceptions.append(
            {"uscc": parts[0], "disposition": _DISPOSITIONS[parts[1]], "reason": parts[2]}
        )
    include = []
    for number, line in enumerate(lines(form, "include"), start=1):
        parts = _SEPARATORS.split(line, maxsplit=1)
        if len(parts) < 2:
            raise FieldInvalid("include", f"第 {number} 行应为：统一社会信用代码 理由")
        include.append({"uscc": parts[0], "reason": parts[1]})
    return {"exceptions": exceptions, "include": include, "comment": text(form, "comment")}


def finance_verification(form: FormData) -> dict[str, Any]:
    action = text(form, "action")
    if action not in ("approve", "reject"):
        raise FieldInvalid("action", "请选择核定结果：通过或退回")
    body: dict[str, Any] = {"action": action, "reason": text(form, "reason")}
    total = text(form, "expected_total_yuan")
    if action == "approve":
        if not total:
            raise FieldInvalid("expected_total_yuan", "通过须填写核定的名单总额（元）")
        body["expected_total_fen"] = parse_yuan(
            total, "expected_total_yuan", "核定总额", positive=False
        )
    return body


def _form_field(api_field: str) -> str:
    # The API names `body.amount_fen`, `corrections.0`, `exceptions[2].reason`...
    head = re.split(r"[.\[]", api_field.removeprefix("body."), maxsplit=1)[0]
    return FORM_FIELDS.get(head, head)


async def forward(
    request: Request,
    back: str,
    api_path: str,
    build: Callable[[FormData], dict[str, Any] | None],
    done: str,
) -> Response:
    """Check the POST's origin, read its form, build the API's body (refusing, with the
    field named, what cannot be sent), send it with the form's idempotency key, and go
    back to `back` with the outcome."""
    if not same_origin(request):
        return error_page(
            request, 403, "请求来源无法确认（跨站请求），已拒绝。请从本平台页面提交。"
        )
    api, _ = await signed_in(request)
    form = await request.form()
    typed = {k: v for k, v in form.items() if isinstance(v, str) and k != "idempotency_key"}
    response = RedirectResponse(back, status_code=303)
    settings = request.app.state.settings
    key = idempotency_key(form.get("idempotency_key"))
    if key is None:
        set_flash(response, settings, Flash("error", "表单已失效，请在刷新后的页面重新提交。"))
        return response
    try:
        body = build(form)
    except FieldInvalid as invalid:
        message = invalid.message
        errors = [FieldMessage(invalid.field, message)]
        set_flash(response, settings, Flash("error", f"未提交：{message}", errors, typed))
        return response
    try:
        await api.post(api_path, body, key)
    except ApiError as refused:
        if refused.status == 401:
            raise
        errors = [FieldMessage(_form_field(e.field), e.message) for e in refused.errors]
        what = {403: "无权办理", 409: "状态已变化", 503: "服务暂不可用，请稍后重试"}.get(
            refused.status, "未通过校验"
        )
        message = f"未提交（{what}）：{refused.detail}" if refused.detail else f"未提交（{what}）"
        set_flash(response, settings, Flash("error", message, errors, typed))
        return response
    set_flash(response, settings, Flash("success", done))
    return response
