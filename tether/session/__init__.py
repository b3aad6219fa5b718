"""Task state: the memory of each task that decisions read.

Public names: `TaskState`, its events `Decided`, `Observed` and `Bequeathed`, `observe`, and
`TaskStates` (the open tasks a decision point serves, in memory or shared through the store).
"""

from tether.session.shared import TaskStates, sealing_key
from tether.session.task import Bequeathed, Decided, Observed, TaskState, observe

__all__ = ["Bequeathed", "Decided", "Observed", "TaskState", "TaskStates", "observe", "sealing_key"]
