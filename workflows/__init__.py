"""zhida's workflows; `ALL_WORKFLOWS` is the one list workers and replayers register."""

from workflows.application import ApplicationWorkflow
from workflows.library_expiry import LibraryExpiryWorkflow
from workflows.matching import MatchWorkflow
from workflows.payment import PaymentWorkflow
from workflows.policy_change import PolicyChangeWorkflow

ALL_WORKFLOWS: list[type] = [
    PolicyChangeWorkflow,
    LibraryExpiryWorkflow,
    ApplicationWorkflow,
    PaymentWorkflow,
    MatchWorkflow,
]
