"""A policy bundle: parsed, validated against the workspace's Cedar schema, versioned, sliced.

Compiling is the slow, careful step done once per change; what it produces is immutable and
swapped in whole, so a decision never sees half a bundle. Each tool gets its *slice*: the
policies whose action scope can match it (scoped to the tool, to one of its effect groups, or not
scoped at all). Cedar evaluates a policy's scope before its conditions, so a policy outside the
slice can neither decide nor error for that tool. A slice is narrowed further per calling agent,
and the context pruned to what the remaining policies read (policy/analysis.py). The result
decides exactly as the whole set on the full context does (tests/test_slicing_property.py holds
this over generated policies), at a cost that does not grow with unrelated policies.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cedarpy
from cedarpy import pst

from tether.errors import PolicyError, PolicyProblem
from tether.model import Agent
from tether.policy.analysis import (
    Paths,
    action_scope,
    can_apply_to,
    context_paths,
    merge,
    principal_scope,
)
from tether.policy.annotations import Annotations, read_annotations
from tether.policy.fastpath import NativeCondition, Plan, Unsupported, compile_plan, translate
from tether.policy.reasons import ReasonTemplate, compile_reason
from tether.policy.source import Statement, split_statements, too_complex

MAX_CACHED_SELECTIONS = 16_384


@dataclass(frozen=True)
class Policy:
    id: str  # the author's @id (or file:line): what reasons and records show
    key: str  # the id Cedar knows it by, `p<n>`: never parsed back out of free text
    file: str
    line: int
    effect: str  # "permit" | "forbid"
    annotations: Annotations
    actions: frozenset[str] | None  # action ids in its scope; None when unscoped
    template: pst.Template
    paths: Paths  # the context paths it reads
    native: NativeCondition | None  # its clauses, natively; None when outside the fragment
    reason: ReasonTemplate  # @reason, or the policy's name
    inert: bool = False  # its scope matches no tool of the catalogue (an empty effect group)

    def applies_to(self, tool: str, groups: frozenset[str]) -> bool:
        if self.inert:
            return False
        return self.actions is None or tool in self.actions or not self.actions.isdisjoint(groups)


@dataclass(frozen=True)
class FastPlan:
    """The policies of a selection for the native evaluator, split by effect, each in bundle
    order (slices keep it), and the one generated function that evaluates them all."""

    forbids: tuple[Policy, ...]
    permits: tuple[Policy, ...]
    decide: Plan  # the indices (into forbids, else permits) of the policies that hold

    @classmethod
    def of(cls, policies: Iterable[Policy]) -> FastPlan:
        policies = tuple(policies)
        forbids = tuple(p for p in policies if p.effect == "forbid")
        permits = tuple(p for p in policies if p.effect == "permit")
        return cls(forbids, permits, compile_plan(_natives(forbids), _natives(permits)))


@dataclass(frozen=True)
class Selection:
    """What is evaluated for one tool called by one agent."""

    enforced: Any  # cedarpy.PolicySet
    with_shadow: Any | None  # enforced + shadow policies; None when no shadow policy applies
    paths: Paths  # the context paths the selected policies read
    # The same policies for the native evaluator (policy/fastpath.py), when every one of them is
    # in its fragment: (enforced, enforced + shadow).
    fast: tuple[FastPlan, FastPlan | None] | None


@dataclass(frozen=True)
class Bundle:
    version: str
    files: Mapping[str, str]
    cedar_schema: Mapping[str, Any]
    schema: Any  # cedarpy.Schema
    policies: Mapping[str, Policy]  # by @id
    by_key: Mapping[str, Policy]  # by the id Cedar reports
    groups: Mapping[str, frozenset[str]]  # tool -> its effect groups
    slices: Mapping[str, tuple[Policy, ...]]  # tool -> the policies whose scope can match it
    # Caches, never copied: `dataclasses.replace` gives a bundle that selects afresh.
    _selections: dict[tuple[str, Agent], Selection] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    _sets: dict[tuple[str, ...], Any] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def select(self, tool: str, agent: Agent) -> Selection:
        """The policies of `tool`'s slice that can matter for `agent` (built once, then cached)."""
        key = (tool, agent)
        selection = self._selections.get(key)
        if selection is None:
            selection = self._select(tool, agent)
            if len(self._selections) >= MAX_CACHED_SELECTIONS:
                self._selections.clear()
            self._selections[key] = selection
        return selection

    def whole(self, *, shadow: bool = False) -> Any:
        """Every enforced policy (and the shadow ones if asked) as one PolicySet, unsliced."""
        return _policy_set(p for p in self.policies.values() if shadow or not p.annotations.shadow)

    def _select(self, tool: str, agent: Agent) -> Selection:
        applicable = [p for p in self.slices[tool] if can_apply_to(p.template, agent)]
        enforced = [p for p in applicable if not p.annotations.shadow]
        has_shadow = len(applicable) > len(enforced)
        steps = _fast_steps(applicable, tool, self.groups[tool], agent)
        fast = None
        if steps is not None:
            enforced_plan = FastPlan.of(p for p in steps if not p.annotations.shadow)
            fast = (enforced_plan, FastPlan.of(steps) if has_shadow else None)
        return Selection(
            enforced=self._shared_set(enforced),
            with_shadow=self._shared_set(applicable) if has_shadow else None,
            paths=merge(p.paths for p in applicable),
            fast=fast,
        )

    def _shared_set(self, policies: list[Policy]) -> Any:
        """One PolicySet per distinct list of policies, shared by every agent that selects it."""
        key = tuple(p.key for p in policies)
        policy_set = self._sets.get(key)
        if policy_set is None:
            if len(self._sets) >= MAX_CACHED_SELECTIONS:
                self._sets.clear()
            policy_set = self._sets[key] = _policy_set(policies)
        return policy_set


def parse_schema(cedar_schema: Mapping[str, Any]) -> Any:
    """A parsed `cedarpy.Schema` from its JSON form."""
    return cedarpy.Schema.from_json_str(json.dumps(cedar_schema))


def compile_bundle(
    files: Mapping[str, str], cedar_schema: Mapping[str, Any], version: str | None = None
) -> Bundle:
    """Parse, check and validate every policy; raise PolicyError listing every problem found.
    `version`: their `bundle_version`, when the caller has just computed it."""
    schema = parse_schema(cedar_schema)
    problems: list[PolicyProblem] = []
    policies: dict[str, Policy] = {}
    for file in sorted(files):
        for statement in split_statements(file, files[file]):
            key = f"p{len(policies)}"
            policy = _compile_statement(statement, key, schema, cedar_schema, problems)
            if policy is None:
                continue
            if policy.id in policies:
                first = policies[policy.id]
                problems.append(
                    PolicyProblem(
                        file,
                        statement.line_of("id"),
                        policy.id,
                        f"duplicate @id; first used at {first.file}:{first.line}",
                    )
                )
                continue
            policies[policy.id] = policy
    if problems:
        raise PolicyError(problems)

    groups = _action_groups(cedar_schema)
    slices = {
        tool: tuple(p for p in policies.values() if p.applies_to(tool, tool_groups))
        for tool, tool_groups in groups.items()
    }
    return Bundle(
        version=version or bundle_version(files, cedar_schema),
        files=dict(files),
        cedar_schema=cedar_schema,
        schema=schema,
        policies=policies,
        by_key={p.key: p for p in policies.values()},
        groups=groups,
        slices=slices,
    )


def bundle_version(files: Mapping[str, str], cedar_schema: Mapping[str, Any]) -> str:
    """The content hash that names a bundle: same files and schema, same version."""
    canonical = json.dumps(
        {"files": dict(sorted(files.items())), "schema": cedar_schema},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _compile_statement(
    statement: Statement,
    key: str,
    schema: Any,
    cedar_schema: Mapping[str, Any],
    problems: list[PolicyProblem],
) -> Policy | None:
    declared_id = _declared_id(statement.text)

    def problem(message: str, term: str | None = None) -> None:
        line = statement.line_of(term) if term else statement.line
        problems.append(PolicyProblem(statement.file, line, declared_id, message))

    complexity = too_complex(statement.text)
    if complexity is not None:
        problem(f"too complex for Cedar's parser: {complexity}")
        return None
    try:
        parsed = cedarpy.policies_to_pst(statement.text)
    except ValueError as exc:
        problem(f"syntax error: {exc}")
        return None
    if parsed.templates:
        problem("templates (?principal / ?resource slots) are not supported in bundles")
        return None
    (template,) = parsed.static_policies.values()
    annotations, annotation_problems = read_annotations(template)
    policy_id = annotations.id or f"{statement.file}:{statement.line}"
    reason, unknown = compile_reason(annotations.reason or f"policy {policy_id}")
    annotation_problems += [
        ("reason", f"@reason refers to {{{name}}}, which is not in the context") for name in unknown
    ]
    for term, message in annotation_problems:
        problem(message, term)

    result = cedarpy.validate_policies(statement.text, schema)
    no_action = [e for e in result.errors if _NO_ACTION in e.error]
    inert = (
        bool(no_action)
        and len(no_action) == len(result.errors)
        and isinstance(template.action, pst.ActionIn)
        and all(e.id in _empty_groups(cedar_schema) for e in template.action.entities)
    )
    # An inert policy's scope is `action in` effect groups no tool of this catalogue has: it
    # can never apply. It is kept (and validated in full once such a tool is registered), and
    # evaluated for nothing. Any other policy that applies to no action is a mistake, reported.
    unknown_action = any(_ACTION.search(e.error) for e in result.errors)
    for error in [] if inert else result.errors:
        if unknown_action and _NO_ACTION in error.error:
            continue  # Cedar's echo of the unknown action already reported
        problem(*_explain(error.error, cedar_schema))
    if annotation_problems or not (result.validation_passed or inert):
        return None

    return Policy(
        id=policy_id,
        key=key,
        file=statement.file,
        line=statement.line,
        effect=template.effect,
        annotations=annotations,
        actions=_scoped_actions(template.action),
        template=dataclasses.replace(template, id=key),
        paths=context_paths(template),
        native=_native(template, key),
        reason=reason,
        inert=inert,
    )


_ID = re.compile(r'@id\s*\(\s*"((?:[^"\\]|\\.)*)"\s*\)')


def _declared_id(text: str) -> str | None:
    match = _ID.search(text)
    return match.group(1) if match else None


_NO_ACTION = "unable to find an applicable action"
_PREFIX = re.compile(r"^for policy `[^`]*`, ")
_CONTEXT_ATTRIBUTE = re.compile(r'attribute `([^`]+)` in context for Action::"([^"]+)"')
_ENTITY_ATTRIBUTE = re.compile(r"attribute `([^`]+)` on entity type `([^`]+)`")
_ACTION = re.compile(r'unrecognized action `Action::"([^"]+)"`')
_ENTITY_TYPE = re.compile(r"unrecognized entity type `([^`]+)`")


def _explain(error: str, cedar_schema: Mapping[str, Any]) -> tuple[str, str | None]:
    """Cedar's validation message, reworded where it helps, with a term to locate and hints."""
    message = _PREFIX.sub("", error)
    namespace = cedar_schema.get("", {})
    actions = namespace.get("actions", {})

    match = _ACTION.search(message)
    if match:
        hint = _did_you_mean(match.group(1), [a for a in actions if "appliesTo" in actions[a]])
        return f"{message}: no tool of that name in the catalogue{hint}", match.group(1)

    match = _ENTITY_TYPE.search(message)
    if match:
        hint = _did_you_mean(match.group(1), list(namespace.get("entityTypes", {})))
        return message + hint, match.group(1).split("::")[-1]

    match = _CONTEXT_ATTRIBUTE.search(message)
    if match:
        path = match.group(1).split(".")
        context = actions.get(match.group(2), {}).get("appliesTo", {}).get("context", {})
        return message + _did_you_mean(path[-1], _attributes(context, path[:-1])), path[-1]

    match = _ENTITY_ATTRIBUTE.search(message)
    if match:
        shape = namespace.get("entityTypes", {}).get(match.group(2), {}).get("shape", {})
        return message + _did_you_mean(match.group(1), _attributes(shape, [])), match.group(1)
    return message, None


def _attributes(record: Mapping[str, Any], parent: list[str]) -> list[str]:
    """Attribute names at `parent` inside a schema record type (for did-you-mean hints)."""
    node: Any = record
    for name in parent:
        node = node.get("attributes", {}).get(name, {})
    return list(node.get("attributes", {}))


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(f"`{c}`" for c in close) + "?"


def _scoped_actions(constraint: Any) -> frozenset[str] | None:
    if isinstance(constraint, pst.ActionEq):
        return frozenset({constraint.entity.id})
    if isinstance(constraint, pst.ActionIn):
        return frozenset(e.id for e in constraint.entities)
    return None


def _empty_groups(cedar_schema: Mapping[str, Any]) -> frozenset[str]:
    """Effect groups that no tool is a member of."""
    actions = cedar_schema.get("", {}).get("actions", {})
    used = {m["id"] for spec in actions.values() for m in spec.get("memberOf", ())}
    return frozenset(name for name, spec in actions.items() if "appliesTo" not in spec) - used


def _action_groups(cedar_schema: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """Each tool (an action that applies to requests) with the groups it is a member of."""
    actions = cedar_schema.get("", {}).get("actions", {})
    return {
        name: frozenset(m["id"] for m in spec.get("memberOf", ()))
        for name, spec in actions.items()
        if "appliesTo" in spec
    }


def _fast_steps(
    policies: list[Policy], tool: str, groups: frozenset[str], agent: Agent
) -> list[Policy] | None:
    """The policies that apply to this tool and agent, or None when one of them needs Cedar
    (a condition outside the fragment, or a scope only Cedar can decide)."""
    plan = []
    for policy in policies:
        template = policy.template
        if policy.native is None or not isinstance(template.resource, pst.ScopeAny):
            return None
        principal = principal_scope(template, agent)
        if principal is None:
            return None
        if principal and action_scope(template, tool, groups):
            plan.append(policy)
    return plan


def _natives(policies: tuple[Policy, ...]) -> list[NativeCondition]:
    natives = [p.native for p in policies if p.native is not None]
    assert len(natives) == len(policies)  # a plan holds only policies in the fragment
    return natives


def _native(template: pst.Template, key: str) -> NativeCondition | None:
    try:
        return translate(template, prefix=f"{key}_")
    except Unsupported:
        return None


def _policy_set(policies: Iterable[Policy]) -> Any:
    return cedarpy.PolicySet.from_pst(
        pst.PolicySet(
            templates={},
            static_policies={p.key: p.template for p in policies},
            template_links=(),
        )
    )
