"""The Python SDK. Public names: `Guard`, `TaskHandle`, `Denied`, `ApprovalRequired`,
`current_task`."""

from tether.sdk.errors import ApprovalRequired, Denied
from tether.sdk.guard import Guard, TaskHandle, current_task

__all__ = ["ApprovalRequired", "Denied", "Guard", "TaskHandle", "current_task"]
