"""Evaluating the simple fragment of Cedar natively, exactly as Cedar does.

Why: through cedarpy, a decision costs about 20 us before the first policy (reading the request
and answering in JSON) and 2-3 us per policy on varied traffic; most agent policies are simple
comparisons of the agent's attributes and the call's arguments, which Python decides in well under
a microsecond each. Cedar stays the language, the validator and the authority:

- a policy is compiled here only if every part of it is in the fragment below; a tool-and-agent
  selection with any other policy is decided by Cedar;
- anything unexpected at run time (a missing attribute, a value of another type, a decimal
  compared for equality) raises `Fallback`, and Cedar decides the call instead.

The fragment: scopes already decided for the selection (any principal, action and resource
constraint that the selection resolved exactly); conditions built from boolean, integer and
string literals, `principal.<name|kind|owner|spiffe_id>`, `principal == Agent::"x"`, attribute
chains on `context`, `has`, `==`, `!=`, `<`, `<=`, `>`, `>=`, `like`, `.contains(...)`, the four
decimal comparisons against `decimal("...")` literals, `.containsAny`, `.containsAll`,
`.isEmpty()`, `&&`, `||`, `!` and `if-then-else`. None
of these can error in Cedar on a context of the schema's shape, except a lookup of an absent
attribute, which is a `Fallback` here. tests/test_slicing_property.py and tests/test_fastpath.py
check decisions against Cedar's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from cedarpy import pst

from tether.model import Agent

Condition = Callable[[Agent, Mapping[str, Any]], Any]
_AGENT_ATTRIBUTES = ("name", "kind", "owner", "spiffe_id")
_DECIMAL_LITERAL = re.compile(r"-?[0-9]+\.[0-9]{1,4}")
_DECIMAL_LIMIT = Decimal("922337203685477.5807")


class Unsupported(Exception):
    """The policy is outside the fragment: Cedar evaluates it."""


class Fallback(Exception):
    """A call the fragment cannot decide exactly: Cedar decides it."""


def compile_condition(template: pst.Template) -> Condition:
    """The policy's `when`/`unless` clauses as one function of (agent, full context).

    Raises Unsupported if any part is outside the fragment. The scopes are not part of it: the
    selection only admits policies whose scopes it decided to be true for the tool and agent.
    """
    parts = [(_expr(clause.expr), isinstance(clause, pst.Unless)) for clause in template.clauses]
    if not parts:
        return lambda _agent, _context: True
    if len(parts) == 1 and not parts[0][1]:
        return _as_boolean(parts[0][0])

    def condition(agent: Agent, context: Mapping[str, Any]) -> bool:
        # In order, stopping at the first false clause, as Cedar does (a plain loop: cheaper
        # than all() over a generator, and this runs for every policy of every call).
        for part, negated in parts:  # noqa: SIM110
            if _boolean(part(agent, context)) is negated:
                return False
        return True

    return condition


def _as_boolean(part: Condition) -> Condition:
    def condition(agent: Agent, context: Mapping[str, Any]) -> bool:
        value = part(agent, context)
        if value is True or value is False:
            return value
        raise Fallback

    return condition


def _boolean(value: Any) -> bool:
    if value is True or value is False:
        return value
    raise Fallback


def _expr(node: Any) -> Condition:  # noqa: PLR0911 - one case per node type
    if isinstance(node, pst.BoolLit | pst.LongLit | pst.StringLit):
        value = node.value
        return lambda _agent, _context: value
    if isinstance(node, pst.Set):
        elements = [_expr(e) for e in node.elements]
        return lambda agent, context: [e(agent, context) for e in elements]
    if isinstance(node, pst.GetAttr):
        return _get_attr(node)
    if isinstance(node, pst.HasAttr):
        return _has_attr(node)
    if isinstance(node, pst.UnaryOp):
        return _unary(node)
    if isinstance(node, pst.BinaryOp):
        return _binary(node)
    if isinstance(node, pst.Like):
        return _like(node)
    if isinstance(node, pst.IfThenElse):
        test, then, otherwise = _expr(node.cond), _expr(node.then_expr), _expr(node.else_expr)
        return lambda a, c: then(a, c) if _boolean(test(a, c)) else otherwise(a, c)
    raise Unsupported(type(node).__name__)


def _context_path(node: Any) -> list[str] | None:
    names: list[str] = []
    while isinstance(node, pst.GetAttr):
        names.append(node.attr)
        node = node.base
    if isinstance(node, pst.Var) and node.name == "context":
        return names[::-1]
    return None


def _get_attr(node: pst.GetAttr) -> Condition:
    if isinstance(node.base, pst.Var) and node.base.name == "principal":
        if node.attr not in _AGENT_ATTRIBUTES:
            raise Unsupported(f"principal.{node.attr}")
        attr = node.attr
        return lambda agent, _context: getattr(agent, attr)
    path = _context_path(node)
    if path is None:
        raise Unsupported("attribute of a computed value")
    if len(path) == 2:  # context.args.x, context.task.calls: the common case, kept cheap
        first, second = path

        def lookup2(_agent: Agent, context: Mapping[str, Any]) -> Any:
            try:
                # A missing key, or a string or list on the way, is an error in Cedar. An
                # extension value cannot be on the way: no argument may be named `__extn`.
                return context[first][second]
            except (KeyError, TypeError) as exc:
                raise Fallback from exc

        return lookup2

    def lookup(_agent: Agent, context: Mapping[str, Any]) -> Any:
        value: Any = context
        for name in path:
            if not isinstance(value, dict) or "__extn" in value or name not in value:
                raise Fallback  # Cedar would error (or the shape is not the schema's)
            value = value[name]
        return value

    return lookup


def _has_attr(node: pst.HasAttr) -> Condition:
    path = _context_path(node.base)
    if path is None:
        raise Unsupported("has on a computed value")
    chain = [*path, *node.attrs]
    known = len(path)

    def has(_agent: Agent, context: Mapping[str, Any]) -> bool:
        value: Any = context
        for i, name in enumerate(chain):
            if not isinstance(value, dict) or "__extn" in value:
                raise Fallback
            if name not in value:
                if i < known:
                    raise Fallback  # the base itself is absent: an error in Cedar
                return False
            value = value[name]
        return True

    return has


def _unary(node: pst.UnaryOp) -> Condition:
    if node.op == "not":
        arg = _expr(node.arg)
        return lambda a, c: not _boolean(arg(a, c))
    if node.op == "is_empty":
        arg = _expr(node.arg)
        return lambda a, c: len(_set(arg(a, c))) == 0
    if node.op == "decimal" and isinstance(node.arg, pst.StringLit):
        value = _decimal_literal(node.arg.value)
        return lambda _agent, _context: value
    raise Unsupported(node.op)


def _decimal_literal(text: str) -> Decimal:
    if not _DECIMAL_LITERAL.fullmatch(text):
        raise Unsupported("malformed decimal literal")
    value = Decimal(text)
    if abs(value) > _DECIMAL_LIMIT:
        raise Unsupported("decimal literal out of range")
    return value


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "less": lambda a, b: a < b,
    "less_eq": lambda a, b: a <= b,
    "greater": lambda a, b: a > b,
    "greater_eq": lambda a, b: a >= b,
}
_DECIMAL_COMPARISONS = {
    "decimal_less_than": "less",
    "decimal_less_eq": "less_eq",
    "decimal_greater": "greater",
    "decimal_greater_eq": "greater_eq",
}


def _binary(node: pst.BinaryOp) -> Condition:  # noqa: PLR0911 - one case per operator
    op = node.op
    if op in ("eq", "not_eq") and _is_principal(node.left) != _is_principal(node.right):
        return _principal_equals(node, negate=op == "not_eq")
    left, right = _expr(node.left), _expr(node.right)
    if op in ("and", "or"):
        return _logical(left, right, stop_at=op == "or")
    if op in ("eq", "not_eq"):
        return _equality(node, left, right, negate=op == "not_eq")
    if op in _COMPARISONS:
        compare = _COMPARISONS[op]
        return lambda a, c: compare(_long(left(a, c)), _long(right(a, c)))
    if op in _DECIMAL_COMPARISONS:
        compare = _COMPARISONS[_DECIMAL_COMPARISONS[op]]
        return lambda a, c: compare(_decimal(left(a, c)), _decimal(right(a, c)))
    if op == "contains":
        return lambda a, c: _contains(left(a, c), right(a, c))
    if op == "contains_any":
        return lambda a, c: any(_contains(left(a, c), x) for x in _set(right(a, c)))
    if op == "contains_all":
        return lambda a, c: all(_contains(left(a, c), x) for x in _set(right(a, c)))
    raise Unsupported(op)


def _logical(left: Condition, right: Condition, *, stop_at: bool) -> Condition:
    """`&&` (stops at false) and `||` (stops at true), short-circuit as in Cedar."""
    go_on = not stop_at

    def logical(agent: Agent, context: Mapping[str, Any]) -> bool:
        value = left(agent, context)
        if value is stop_at:
            return value
        if value is not go_on:
            raise Fallback
        value = right(agent, context)
        if value is True or value is False:
            return value
        raise Fallback

    return logical


def _equality(node: pst.BinaryOp, left: Condition, right: Condition, *, negate: bool) -> Condition:
    literal = node.right if isinstance(node.right, pst.StringLit | pst.LongLit) else None
    if literal is None:
        return lambda a, c: _equal(left(a, c), right(a, c)) is not negate
    constant, kind = literal.value, type(literal.value)

    def against_literal(agent: Agent, context: Mapping[str, Any]) -> bool:
        value = left(agent, context)  # `x == "literal"`: compared directly when the types match
        equal = value == constant if type(value) is kind else _equal(value, constant)
        return bool(equal) is not negate

    return against_literal


def _is_principal(node: Any) -> bool:
    return isinstance(node, pst.Var) and node.name == "principal"


def _principal_equals(node: pst.BinaryOp, *, negate: bool) -> Condition:
    other = node.right if _is_principal(node.left) else node.left
    if not isinstance(other, pst.EntityLit):
        raise Unsupported("principal compared with a computed value")
    uid = other.value
    name = uid.id if uid.type.basename == "Agent" and not uid.type.namespace else None
    return lambda agent, _context: (agent.name == name) is not negate


def _equal(a: Any, b: Any) -> bool:
    """Cedar's `==` on the values the fragment meets: values of different types are unequal."""
    if type(a) is not type(b):
        if isinstance(a, dict | list) or isinstance(b, dict | list):
            raise Fallback  # records, sets and extension values: leave to Cedar
        if _kind(a) == _kind(b):
            raise Fallback  # a subclass of str or int: not a plain JSON value, leave to Cedar
        return False
    if isinstance(a, str | int):  # bool is an int subclass; the type check above separates them
        return bool(a == b)
    raise Fallback


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    return "str" if isinstance(value, str) else type(value).__name__


def _long(value: Any) -> int:
    if type(value) is not int:
        raise Fallback
    return value


def _decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, dict) and value.get("__extn", {}).get("fn") == "decimal":
        try:
            return Decimal(value["__extn"]["arg"])
        except (InvalidOperation, KeyError, TypeError) as exc:
            raise Fallback from exc
    raise Fallback


def _set(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise Fallback
    return value


def _contains(collection: Any, element: Any) -> bool:
    return any(_equal(member, element) for member in _set(collection))


def _like(node: pst.Like) -> Condition:
    base = _expr(node.base)
    # The literal runs between wildcards: `*@acme.com` is ["", "@acme.com"].
    segments = [""]
    for element in node.pattern:
        if isinstance(element, pst.Wildcard):
            segments.append("")
        else:
            segments[-1] += element.value

    def like(agent: Agent, context: Mapping[str, Any]) -> bool:
        value = base(agent, context)
        if not isinstance(value, str):
            raise Fallback
        return glob_match(segments, value)

    return like


def glob_match(segments: list[str], value: str) -> bool:
    """Whether `value` matches literal `segments` joined by `*` wildcards, in linear time.

    The first segment must be a prefix and the last a suffix; each one between is found left to
    right. Taking the leftmost occurrence never loses a match when `*` is the only wildcard, and
    unlike a backtracking regex it cannot be made to take quadratic time by a crafted argument.
    """
    if len(segments) == 1:
        return value == segments[0]
    first, *middle, last = segments
    if len(value) < len(first) + len(last) or not value.startswith(first):
        return False
    if not value.endswith(last):
        return False
    position, end = len(first), len(value) - len(last)
    for segment in middle:
        found = value.find(segment, position, end)
        if found < 0:
            return False
        position = found + len(segment)
    return True
