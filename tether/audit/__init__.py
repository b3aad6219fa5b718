"""The decision log as evidence (DESIGN.md section 1, "Audit record"): hash chains per writer,
signed checkpoints, and verification."""

from tether.audit.chain import Chain, canonical, record_hash
from tether.audit.checkpoints import Checkpointer, write_checkpoint
from tether.audit.log import AuditLog
from tether.audit.verify import Report, verify

__all__ = [
    "AuditLog",
    "Chain",
    "Checkpointer",
    "Report",
    "canonical",
    "record_hash",
    "verify",
    "write_checkpoint",
]
