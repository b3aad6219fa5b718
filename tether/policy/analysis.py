"""Static facts about a policy that let Cedar evaluate less, without changing any decision.

Cedar evaluates a policy as `scope && when... && !unless...`, left to right, stopping at the first
false conjunct. Two consequences are used here:

- **Agent selection.** If, in that order, a policy reaches a conjunct that is false for the calling
  agent, and every conjunct before it is one we evaluated as true (so none could error), the policy
  can neither apply nor error for that agent, and need not be evaluated. Only conjuncts decided by
  the agent alone are evaluated here (`principal.kind == "coder"`, `principal == Agent::"x"`,
  `["a", "b"].contains(principal.kind)`, ...); at the first other conjunct we stop and keep the
  policy.
- **Context pruning.** A policy sees the context only through attribute chains
  (`context.args.to`, `context has approved`). Giving Cedar just the paths the evaluated policies
  read gives the same results, and Cedar's cost of reading a request grows with the context's size
  (a `decimal` or a long string argument costs more than many policies do). A policy that uses
  `context` as a whole value gets the whole context.

tests/test_slicing_property.py holds both against evaluating every policy on the full context.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import fields, is_dataclass
from typing import Any

from cedarpy import pst

from tether.catalogue import AGENT_ATTRIBUTES
from tether.model import Agent

# A tree of context paths: {"args": {"to": ALL}, "approved": ALL}; ALL keeps a whole subtree.
ALL: Mapping[str, Any] = {"*": None}
Paths = Mapping[str, Any]


def context_paths(template: pst.Template) -> Paths:
    """The context paths a policy can read."""
    found: list[tuple[str, ...] | None] = []
    for clause in template.clauses:
        _collect(clause.expr, found)
    if None in found:
        return ALL
    return _tree(p for p in found if p is not None)


def merge(trees: Iterable[Paths]) -> Paths:
    merged: dict[str, Any] = {}
    for tree in trees:
        if tree is ALL:
            return ALL
        for key, sub in tree.items():
            merged[key] = sub if key not in merged else merge([merged[key], sub])
    return merged


def prune(value: Any, paths: Paths) -> Any:
    """`value` (a Cedar JSON value) with only the parts `paths` names."""
    if paths is ALL or not isinstance(value, dict) or "__extn" in value:
        return value
    return {key: prune(value[key], sub) for key, sub in paths.items() if key in value}


def _collect(node: Any, found: list[tuple[str, ...] | None]) -> None:
    """Append every context path read under `node` (None: the whole context is used)."""
    for value in walk(node, stop=lambda n: _context_chain(n) is not None):
        path = _context_chain(value)
        if path is not None:
            found.append(path or None)


def walk(root: Any, stop: Callable[[Any], bool] = lambda _: False) -> Iterator[Any]:
    """Every node under `root` (policy ASTs from cedarpy.pst), not descending below a node for
    which `stop` is true. Record literals are mappings: their values are walked too."""
    stack = [root]
    while stack:
        value = stack.pop()
        yield value
        if stop(value):
            continue
        if isinstance(value, tuple):
            stack.extend(value)
        elif isinstance(value, Mapping):
            stack.extend(value.values())
        elif is_dataclass(value) and not isinstance(value, type):
            stack.extend(getattr(value, f.name) for f in fields(value))


def _context_chain(node: Any) -> tuple[str, ...] | None:
    """The path of an attribute chain rooted at `context` (() for bare `context`), else None."""
    names: list[str] = []
    while True:
        if isinstance(node, pst.GetAttr):
            names.append(node.attr)
            node = node.base
        elif isinstance(node, pst.HasAttr):
            names.extend(reversed(node.attrs))
            node = node.base
        elif isinstance(node, pst.Var) and node.name == "context":
            return tuple(reversed(names))
        else:
            return None


def _tree(paths: Iterable[tuple[str, ...]]) -> Paths:
    tree: Paths = {}
    for path in paths:
        tree = merge([tree, _branch(path)])
    return tree


def _branch(path: tuple[str, ...]) -> Paths:
    tree: Paths = ALL
    for name in reversed(path):
        tree = {name: tree}
    return tree


def can_apply_to(template: pst.Template, agent: Agent) -> bool:
    """False only when the policy provably can neither apply nor error for `agent`."""
    principal = _scope(template.principal, agent)
    if principal is not True:
        return principal is None
    for clause in template.clauses:
        value = _agent_value(clause.expr, agent)
        if value is None:
            return True
        if value is (isinstance(clause, pst.Unless)):
            return False
    return True


def principal_scope(template: pst.Template, agent: Agent) -> bool | None:
    """Whether the policy's principal scope holds for `agent`; None when it cannot be told."""
    return _scope(template.principal, agent)


def action_scope(template: pst.Template, tool: str, groups: frozenset[str]) -> bool:
    """Whether the policy's action scope holds for `tool` (a member of `groups`), exactly."""
    constraint = template.action
    if isinstance(constraint, pst.ActionEq):
        return constraint.entity.id == tool
    if isinstance(constraint, pst.ActionIn):
        ids = {e.id for e in constraint.entities}
        return tool in ids or not ids.isdisjoint(groups)
    return True


def _scope(constraint: Any, agent: Agent) -> bool | None:
    if isinstance(constraint, pst.ScopeAny):
        return True
    if isinstance(constraint, pst.ScopeEq | pst.ScopeIn) and isinstance(
        constraint.entity, pst.EntityUid
    ):
        return _principal_in(constraint.entity, agent, exact=isinstance(constraint, pst.ScopeEq))
    if isinstance(constraint, pst.ScopeIs):
        return constraint.entity_type.basename == "Agent" and not constraint.entity_type.namespace
    return None


def _principal_in(entity: pst.EntityUid, agent: Agent, *, exact: bool) -> bool | None:
    kind = entity.type.basename if not entity.type.namespace else None
    if kind == "Agent":
        return entity.id == agent.name
    if kind == "Workspace" and not exact:
        return entity.id == agent.workspace
    return None if kind == "Tenant" and not exact else False


def _agent_value(expr: Any, agent: Agent) -> bool | None:
    """The value of a boolean expression decided by the agent alone; None if not (or if it
    could error)."""
    if isinstance(expr, pst.BoolLit):
        return expr.value
    if isinstance(expr, pst.UnaryOp) and expr.op == "not":
        inner = _agent_value(expr.arg, agent)
        return None if inner is None else not inner
    if isinstance(expr, pst.BinaryOp):
        return _binary(expr, agent)
    if (
        isinstance(expr, pst.Is)
        and isinstance(expr.base, pst.Var)
        and expr.base.name == "principal"
    ):
        return None if expr.in_expr is not None else expr.entity_type.basename == "Agent"
    return None


def _binary(expr: pst.BinaryOp, agent: Agent) -> bool | None:
    if expr.op in ("and", "or"):
        left = _agent_value(expr.left, agent)
        if left is None or left is (expr.op == "or"):
            return left
        return _agent_value(expr.right, agent)
    if expr.op in ("eq", "not_eq"):
        sides = _string_sides(expr.left, expr.right, agent) or _entity_sides(
            expr.left, expr.right, agent
        )
        return None if sides is None else (sides[0] == sides[1]) is (expr.op == "eq")
    if expr.op == "contains" and isinstance(expr.left, pst.Set):
        return _set_contains(expr.left, expr.right, agent)
    if (
        expr.op == "in"
        and isinstance(expr.left, pst.Var)
        and expr.left.name == "principal"
        and isinstance(expr.right, pst.EntityLit)
    ):
        return _principal_in(expr.right.value, agent, exact=False)
    return None


def _set_contains(literal: pst.Set, element: Any, agent: Agent) -> bool | None:
    value = _agent_attribute(element, agent)
    strings = [e.value for e in literal.elements if isinstance(e, pst.StringLit)]
    if value is None or len(strings) != len(literal.elements):
        return None
    return value in strings


def _string_sides(left: Any, right: Any, agent: Agent) -> tuple[str, str] | None:
    for attribute, literal in ((left, right), (right, left)):
        value = _agent_attribute(attribute, agent)
        if value is not None and isinstance(literal, pst.StringLit):
            return value, literal.value
    return None


def _entity_sides(left: Any, right: Any, agent: Agent) -> tuple[str, str] | None:
    for var, literal in ((left, right), (right, left)):
        if (
            isinstance(var, pst.Var)
            and var.name == "principal"
            and isinstance(literal, pst.EntityLit)
        ):
            uid = literal.value
            is_agent = uid.type.basename == "Agent" and not uid.type.namespace
            return agent.name, uid.id if is_agent else "\0not an agent"
    return None


def _agent_attribute(node: Any, agent: Agent) -> str | None:
    if (
        isinstance(node, pst.GetAttr)
        and isinstance(node.base, pst.Var)
        and node.base.name == "principal"
        and node.attr in AGENT_ATTRIBUTES
    ):
        value: str = getattr(agent, node.attr)
        return value
    return None
