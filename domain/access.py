"""Who may do what (invariant 5). The same checks serve the API and workflow validators."""

from __future__ import annotations

from domain.errors import Forbidden
from models.reference import Actor, Role

DEPARTMENT_STAFF = frozenset({Role.DEPARTMENT_CASEWORKER, Role.DEPARTMENT_HEAD})
STAFF = DEPARTMENT_STAFF | {Role.FINANCE_CASEWORKER}
READERS = STAFF | {Role.AUDITOR, Role.ADMIN}


def require_role(actor: Actor, *roles: Role) -> None:
    if actor.role not in roles:
        allowed = ", ".join(r.value for r in roles)
        raise Forbidden(f"role {actor.role.value} may not do this; needs one of: {allowed}")


def require_department_staff(actor: Actor, department_code: str) -> None:
    if actor.role not in DEPARTMENT_STAFF or actor.department_code != department_code:
        raise Forbidden(f"only staff of department {department_code} may change its items")


def require_staff_or_reader(actor: Actor) -> None:
    if actor.role not in READERS:
        raise Forbidden("enterprises see only their own data")


def require_enterprise_access(actor: Actor, uscc: str) -> None:
    if actor.role is Role.ENTERPRISE and actor.enterprise_uscc != uscc:
        raise Forbidden("an enterprise sees only its own data")
