"""Task state: the memory of each task that decisions read.

Public names: `TaskState`, its events `Decided` and `Observed`, `observe`, and `TaskStates` (the
open tasks a decision point serves, in memory or shared through the store).
"""

from tether.session.shared import TaskStates, sealing_key
from tether.session.task import Decided, Observed, TaskState, observe

__all__ = ["Decided", "Observed", "TaskState", "TaskStates", "observe", "sealing_key"]
