"""Task state: the memory of each task that decisions read. Public names: `TaskState`."""

from tether.session.task import TaskState

__all__ = ["TaskState"]
