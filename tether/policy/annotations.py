"""The annotations that give Cedar policies product meaning.

- `@id("...")`     the policy's name in decisions, reasons and the audit log (unique per bundle);
- `@reason("...")` the sentence shown to the agent and to an approver when the policy decides;
- `@approval("<role>")` on `forbid ... unless { context.approved }`: a deny determined only by such
  policies becomes `approval_required`, to be approved by a person with that role;
- `@mode("shadow")` evaluated and logged, never enforced (`@mode("enforce")` is the default).
Other annotations are allowed (e.g. `@owner`), but a near-miss of these four is an error, since a
misspelt `@aproval` would silently turn a step-up into a hard deny.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from cedarpy import pst

from tether.policy.analysis import walk

KNOWN = ("id", "reason", "approval", "mode")
MODES = ("enforce", "shadow")
MAX_ID_LENGTH = 128


@dataclass(frozen=True)
class Annotations:
    id: str | None
    reason: str | None
    approval: str | None
    shadow: bool


def read_annotations(template: pst.Template) -> tuple[Annotations, list[tuple[str, str]]]:
    """The policy's annotations and a list of (term to locate, problem) found in them."""
    found = dict(template.annotations)
    problems: list[tuple[str, str]] = []
    for name in found:
        if name not in KNOWN:
            close = difflib.get_close_matches(name, KNOWN, n=1, cutoff=0.75)
            if close:
                problems.append((name, f"unknown annotation @{name}; did you mean @{close[0]}?"))

    policy_id = found.get("id")
    if policy_id is not None and not (0 < len(policy_id) <= MAX_ID_LENGTH):
        problems.append(("id", f"@id must be 1 to {MAX_ID_LENGTH} characters"))
    reason = found.get("reason")
    if reason is not None and not reason.strip():
        problems.append(("reason", "@reason is empty; say why, for the agent and the approver"))

    mode = found.get("mode", "enforce")
    if mode not in MODES:
        problems.append(("mode", f'@mode must be "enforce" or "shadow", not {mode!r}'))

    approval = found.get("approval")
    if approval is not None:
        if template.effect != "forbid":
            problems.append(("approval", "@approval belongs on a forbid policy"))
        elif not approval.strip():
            problems.append(
                ("approval", '@approval needs the approver role, e.g. @approval("admin")')
            )
        elif not _unless_mentions_approved(template):
            problems.append(
                (
                    "approval",
                    "@approval needs `unless { context.approved }` on the forbid; without it an "
                    "approval could never lift the deny",
                )
            )
    annotations = Annotations(
        id=policy_id, reason=reason, approval=approval or None, shadow=mode == "shadow"
    )
    return annotations, problems


def _unless_mentions_approved(template: pst.Template) -> bool:
    return any(
        isinstance(clause, pst.Unless) and _mentions_approved(clause.expr)
        for clause in template.clauses
    )


def _mentions_approved(node: Any) -> bool:
    return any(
        isinstance(value, pst.GetAttr)
        and value.attr == "approved"
        and isinstance(value.base, pst.Var)
        and value.base.name == "context"
        for value in walk(node)
    )
