"""Step-up approval: a person's yes, bound to the exact call (DESIGN.md section 1, "Approval").

`canonical` pins what "the exact call" is (RFC 8785), `workflow` runs requests and grants,
`webhooks` notifies and signs, `settings` reads a workspace's `approvals` settings.
"""

from tether.approvals.canonical import call_hash, canonical_json
from tether.approvals.settings import ApprovalSettings
from tether.approvals.webhooks import verify as verify_webhook
from tether.approvals.workflow import Approvals

__all__ = ["ApprovalSettings", "Approvals", "call_hash", "canonical_json", "verify_webhook"]
