"""The Python SDK. Public names: `Guard`, `TaskHandle`, `Denied`, `ApprovalRequired`,
`current_task`; `Guard.remote(url)` gives a `RemoteGuard` (remote.py)."""

from tether.sdk.errors import ApprovalRequired, Denied
from tether.sdk.guard import Guard, TaskHandle
from tether.sdk.handle import current_task

__all__ = ["ApprovalRequired", "Denied", "Guard", "TaskHandle", "current_task"]
