"""Tether: runtime authorization for AI agents.

from tether import Guard, Denied, ApprovalRequired
"""

from tether.errors import (
    CatalogueError,
    Conflict,
    CredentialRefused,
    InvalidInput,
    NotFound,
    PolicyError,
    PolicyProblem,
    TetherError,
)
from tether.model import Decision, Effect, Reason
from tether.sdk import ApprovalRequired, Denied, Guard, TaskHandle, current_task

__all__ = [
    "ApprovalRequired",
    "CatalogueError",
    "Conflict",
    "CredentialRefused",
    "Decision",
    "Denied",
    "Effect",
    "Guard",
    "InvalidInput",
    "NotFound",
    "PolicyError",
    "PolicyProblem",
    "Reason",
    "TaskHandle",
    "TetherError",
    "current_task",
]
__version__ = "0.1.0"
