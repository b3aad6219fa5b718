"""What a guarded call raises when it may not run."""

from __future__ import annotations

from tether.errors import TetherError
from tether.model import Decision


class Denied(TetherError):
    """The call was not allowed; `decision` says why and names its record."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        super().__init__(
            f"{decision.tool} denied: {decision.reason} (decision {decision.decision_id})"
        )


class ApprovalRequired(Denied):
    """The call needs a person's approval first. A subclass of Denied, so code that only knows
    about denials still does not run the call."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision)
        roles = ", ".join(decision.approver_roles) or "an approver"
        self.args = (
            f"{decision.tool} needs approval by {roles}: {decision.reason} "
            f"(decision {decision.decision_id})",
        )
