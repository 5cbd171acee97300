"""The OpenAPI document declares every error an operation can return, so that a client
generated from it is never surprised: each as `application/problem+json` with the one
`Problem` schema. The statuses follow from what the operation is (see `error_statuses`),
and the same facts drive the checks at run time: a bearer token (401, 403), path
parameters (404), writes (409, 413), a request body (415), parameters or a body (422),
and the database or Temporal behind every route (503)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI

from api.errors import PROBLEM, REQUEST_ID_HEADER, RETRY_AFTER_S, Problem
from api.middleware import describe_size
from api.rule_docs import add_rule_schemas

WRITES = frozenset({"post", "put", "patch", "delete"})
_METHODS = WRITES | {"get", "head", "options", "trace"}
_REF = "#/components/schemas/"

DESCRIPTIONS: Mapping[int, str] = {
    401: "缺少或无效的 bearer token",
    403: "当前用户无权执行此操作",
    404: "路径所指的对象不存在，或对当前用户不可见",
    409: "与对象的当前状态冲突（如阶段不符、重复提交、请求仍在处理）",
    415: "请求体的 Content-Type 不是本接口接受的类型",
    422: "输入无效：errors 列出每个出错的字段",
    503: "数据库或流程引擎（Temporal）暂时不可用；按 Retry-After 秒数后重试",
}


def error_statuses(method: str, operation: Mapping[str, Any]) -> list[int]:
    """The error statuses an operation can answer with, from what the document says of it."""
    parameters = operation.get("parameters", [])
    has_body = "requestBody" in operation
    statuses = [503]
    if operation.get("security"):
        statuses += [401, 403]
    if any(p.get("in") == "path" for p in parameters):
        statuses.append(404)
    if method in WRITES:
        statuses += [409, 413]
    if has_body:
        statuses.append(415)
    if parameters or has_body:
        statuses.append(422)
    return sorted(statuses)


def _problem_response(status: int, description: str) -> dict[str, Any]:
    headers: dict[str, Any] = {
        REQUEST_ID_HEADER: {
            "description": "本次请求的关联编号（同 correlation_id）",
            "schema": {"type": "string"},
        }
    }
    if status == 503:
        headers["Retry-After"] = {
            "description": "建议的重试等待秒数",
            "schema": {"type": "integer", "minimum": 1, "example": RETRY_AFTER_S},
        }
    if status == 401:
        headers["WWW-Authenticate"] = {"schema": {"type": "string", "example": "Bearer"}}
    return {
        "description": description,
        "headers": headers,
        "content": {PROBLEM: {"schema": {"$ref": f"{_REF}Problem"}}},
    }


def _problem_schemas() -> dict[str, Any]:
    schema = Problem.model_json_schema(ref_template=_REF + "{model}", mode="serialization")
    definitions: dict[str, Any] = schema.pop("$defs", {})
    return {**definitions, "Problem": schema}


def declare_problems(
    document: dict[str, Any], *, body_limit: int, body_limits: Mapping[str, int]
) -> None:
    """Adds the error responses to every operation of the document, in place. An
    operation's own declaration of a status wins, except FastAPI's default 422."""
    components = document.setdefault("components", {}).setdefault("schemas", {})
    components.update(_problem_schemas())
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for status in error_statuses(method, operation):
                if status == 413:
                    limit = describe_size(body_limits.get(path, body_limit))
                    description = f"请求体超过上限 {limit}"
                else:
                    description = DESCRIPTIONS[status]
                if status == 422 or str(status) not in responses:
                    responses[str(status)] = _problem_response(status, description)
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)


def install_openapi(
    app: FastAPI, *, body_limit: int, body_limits: Mapping[str, int] | None = None
) -> None:
    """Generate the document as FastAPI does, then declare the errors of every operation.
    `body_limits` maps a path to its own body limit, where it is not `body_limit`."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        document = generate()
        if fresh:
            declare_problems(document, body_limit=body_limit, body_limits=body_limits or {})
            add_rule_schemas(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
