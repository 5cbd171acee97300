"""Every workflow: the one list workers and replayers register (as models/all.py lists
every table). Kept out of the package's `__init__`, which each sandboxed workflow run
would otherwise execute, importing all the others with it."""

from workflows.application import ApplicationWorkflow
from workflows.commitment import CommitmentWorkflow
from workflows.facts_sync import FactSyncWorkflow
from workflows.harvest import PolicyHarvestWorkflow
from workflows.library_expiry import LibraryExpiryWorkflow
from workflows.matching import MatchWorkflow
from workflows.payment import PaymentWorkflow
from workflows.policy_change import PolicyChangeWorkflow
from workflows.recognition import RecognitionCaseWorkflow
from workflows.recognition_batch import RecognitionBatchWorkflow

ALL_WORKFLOWS: list[type] = [
    PolicyChangeWorkflow,
    LibraryExpiryWorkflow,
    ApplicationWorkflow,
    CommitmentWorkflow,
    PaymentWorkflow,
    MatchWorkflow,
    RecognitionBatchWorkflow,
    RecognitionCaseWorkflow,
    PolicyHarvestWorkflow,
    FactSyncWorkflow,
]
