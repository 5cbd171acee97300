"""Cases: admitting an application and checking it (`admission`), whom a case pays
and whether a payment has verified its account (`payee`), and the list projection that
inboxes, lists and dashboards read (`projection`). Callers use the package:
`from domain import cases`."""

from domain.cases.admission import (
    Admission,
    DuplicateCase,
    active_claim,
    admissible_period,
    admit_application,
    check_application,
    confirm_claim,
    current_case_id,
)
from domain.cases.payee import (
    default_payee,
    record_paid_account,
    record_returned_account,
    verified_account,
)
from domain.cases.projection import (
    CaseFilters,
    awaiting_budget,
    cases_of_enterprise,
    get_record,
    inbox,
    list_cases,
    project,
)

__all__ = [
    "Admission",
    "CaseFilters",
    "DuplicateCase",
    "active_claim",
    "admissible_period",
    "admit_application",
    "awaiting_budget",
    "cases_of_enterprise",
    "check_application",
    "confirm_claim",
    "current_case_id",
    "default_payee",
    "get_record",
    "inbox",
    "list_cases",
    "project",
    "record_paid_account",
    "record_returned_account",
    "verified_account",
]
