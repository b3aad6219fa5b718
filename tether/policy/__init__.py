"""The Cedar policy engine: bundles, validation, slicing, annotations, evaluation, tests, format.

Public names: `Bundle`, `Policy`, `compile_bundle`, `bundle_version`, `read_policy_dir`,
`parse_schema`, `evaluate`, `Verdict`, `Outcome`, `workspace_entities`.
"""

from tether.policy.bundle import Bundle, Policy, bundle_version, compile_bundle, parse_schema
from tether.policy.engine import Outcome, Verdict, evaluate
from tether.policy.entities import workspace_entities
from tether.policy.source import read_policy_dir

__all__ = [
    "Bundle",
    "Outcome",
    "Policy",
    "Verdict",
    "bundle_version",
    "compile_bundle",
    "evaluate",
    "parse_schema",
    "read_policy_dir",
    "workspace_entities",
]
