"""Evaluating the simple fragment of Cedar natively, exactly as Cedar does.

Why: through cedarpy, a decision costs about 20 us before the first policy (reading the request
and answering in JSON) and 2-3 us per policy on varied traffic; most agent policies are simple
comparisons of the agent's attributes and the call's arguments, which Python decides in well under
a microsecond each when each policy is one generated expression, and the policies a selection
evaluates are one generated function (`compile_plan`). Cedar stays
the language, the validator and the authority:

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from cedarpy import pst

from tether.catalogue import AGENT_ATTRIBUTES
from tether.model import Agent

Condition = Callable[[Agent, Mapping[str, Any]], bool]
_DECIMAL_LITERAL = re.compile(r"-?[0-9]+\.[0-9]{1,4}")
_DECIMAL_LIMIT = Decimal("922337203685477.5807")
_PREFIX = re.compile(r"[a-z0-9_]*")


class Unsupported(Exception):
    """The policy is outside the fragment: Cedar evaluates it."""


class Fallback(Exception):
    """A call the fragment cannot decide exactly: Cedar decides it."""


@dataclass(frozen=True)
class NativeCondition:
    """A policy's `when`/`unless` clauses as one Python expression over `agent` and `context`
    that is exactly True or False (or raises), with the constants it names. The names carry the
    policy's prefix, so the expressions of many policies can share one function."""

    expression: str
    constants: Mapping[str, Any]


# What a plan answers: the indices of the forbids that hold, and if none does, of the permits.
Plan = Callable[[Agent, Mapping[str, Any]], tuple[list[int], list[int]]]


def translate(template: pst.Template, prefix: str = "") -> NativeCondition:
    """The policy's clauses as a native expression; Unsupported if any part is outside the
    fragment. The scopes are not part of it: a selection only admits policies whose scopes it
    decided to be true for the tool and agent."""
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"not a name prefix: {prefix!r}")
    writer = _Writer(prefix)
    clauses = []
    for clause in template.clauses:
        test = writer.boolean(clause.expr)
        clauses.append(f"not {test}" if isinstance(clause, pst.Unless) else test)
    # Clauses in order, stopping at the first false one, as Cedar does.
    return NativeCondition(" and ".join(clauses) or "True", writer.constants)


def compile_condition(template: pst.Template) -> Condition:
    """One policy's clauses as a function of (agent, full context)."""
    native = translate(template)
    condition: Condition = _function("condition", [f"return {native.expression}"], native.constants)
    return condition


def compile_plan(forbids: Sequence[NativeCondition], permits: Sequence[NativeCondition]) -> Plan:
    """A whole selection as one function: every forbid is evaluated (one that would error is
    never skipped); the permits only when no forbid holds, as Cedar decides."""
    body = ["forbids = []"]
    body += [f"if {c.expression}: forbids.append({i})" for i, c in enumerate(forbids)]
    body += ["if forbids: return forbids, []", "permits = []"]
    body += [f"if {c.expression}: permits.append({i})" for i, c in enumerate(permits)]
    body += ["return forbids, permits"]
    constants = {name: value for c in (*forbids, *permits) for name, value in c.constants.items()}
    plan: Plan = _function("plan", body, constants)
    return plan


def _function(name: str, body: list[str], constants: Mapping[str, Any]) -> Any:
    """Compile generated code: the source holds only operators, names of this module's helpers
    and generated names (`p3_k0`, `p3_v1`); every literal of a policy (strings, attribute
    names, numbers) is a bound constant, so no text from a policy is ever compiled as code.

    Why generated: a decision evaluates dozens of policies, and a call per node of each (the
    obvious closures), or even per policy, costs more than the comparisons themselves. A
    missing key, or a value of another type on the way (Cedar errors on both), means the
    fragment cannot decide exactly: Fallback."""
    source = "\n".join(
        [
            f"def {name}(agent, context):",
            "    try:",
            *(f"        {line}" for line in body),
            "    except (KeyError, TypeError) as exc:",
            "        raise Fallback from exc",
            "",
        ]
    )
    namespace = {**_HELPERS, **constants}
    exec(compile(source, f"<policy {name}>", "exec"), namespace)  # noqa: S102 - see above
    return namespace[name]


class _Writer:
    """Writes a policy expression as a Python expression. Each `expr` returns the code and what
    it is known to evaluate to (`bool`, `int`, `str`, `set`, `decimal`), or `any` when only the
    context can tell; a value of a known kind needs no check at run time."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix  # generated by the bundle (`p3_`): names unique across policies
        self.constants: dict[str, Any] = {}
        self._temporaries = 0

    def constant(self, value: Any) -> str:
        name = f"{self.prefix}k{len(self.constants)}"
        self.constants[name] = value
        return name

    def temporary(self) -> str:
        self._temporaries += 1
        return f"{self.prefix}v{self._temporaries}"

    def boolean(self, node: Any) -> str:
        """Code that is exactly True or False, or raises Fallback (Cedar: a type error)."""
        code, kind = self.expr(node)
        return code if kind == "bool" else f"_boolean({code})"

    def expr(self, node: Any) -> tuple[str, str]:  # noqa: PLR0911 - one case per node type
        if isinstance(node, pst.BoolLit):
            return ("True" if node.value else "False"), "bool"
        if isinstance(node, pst.LongLit | pst.StringLit):
            kind = "int" if isinstance(node, pst.LongLit) else "str"
            return self.constant(node.value), kind
        if isinstance(node, pst.Set):
            return f"[{', '.join(self.expr(e)[0] for e in node.elements)}]", "set"
        if isinstance(node, pst.GetAttr):
            return self.get_attr(node)
        if isinstance(node, pst.HasAttr):
            return self.has_attr(node), "bool"
        if isinstance(node, pst.UnaryOp):
            return self.unary(node)
        if isinstance(node, pst.BinaryOp):
            return self.binary(node)
        if isinstance(node, pst.Like):
            code, _ = self.expr(node.base)
            return f"_like({code}, {self.constant(_segments(node))})", "bool"
        if isinstance(node, pst.IfThenElse):
            test = self.boolean(node.cond)
            (then, a), (otherwise, b) = self.expr(node.then_expr), self.expr(node.else_expr)
            return f"({then} if {test} else {otherwise})", a if a == b else "any"
        raise Unsupported(type(node).__name__)

    def get_attr(self, node: pst.GetAttr) -> tuple[str, str]:
        if isinstance(node.base, pst.Var) and node.base.name == "principal":
            if node.attr not in AGENT_ATTRIBUTES:
                raise Unsupported(f"principal.{node.attr}")
            return f"agent.{node.attr}", "str"
        path = _context_path(node)
        if path is None:
            raise Unsupported("attribute of a computed value")
        # Subscripts: a missing key, or a string or list on the way, raises KeyError/TypeError,
        # which the condition turns into Fallback. An extension value cannot be on the way: no
        # argument may be named `__extn`, so looking into one is a KeyError too.
        return "context" + "".join(f"[{self.constant(name)}]" for name in path), "any"

    def has_attr(self, node: pst.HasAttr) -> str:
        path = _context_path(node.base)
        if path is None:
            raise Unsupported("has on a computed value")
        chain = self.constant((*path, *node.attrs))
        return f"_has(context, {chain}, {len(path)})"

    def unary(self, node: pst.UnaryOp) -> tuple[str, str]:
        if node.op == "not":
            return f"(not {self.boolean(node.arg)})", "bool"
        if node.op == "is_empty":
            return f"(len(_set({self.expr(node.arg)[0]})) == 0)", "bool"
        if node.op == "decimal" and isinstance(node.arg, pst.StringLit):
            return self.constant(_decimal_literal(node.arg.value)), "decimal"
        raise Unsupported(node.op)

    def binary(self, node: pst.BinaryOp) -> tuple[str, str]:
        op = node.op
        if op in ("eq", "not_eq") and _is_principal(node.left) != _is_principal(node.right):
            return self.principal_equals(node), "bool"
        if op in ("and", "or"):
            joined = f" {op} ".join(self.boolean(operand) for operand in _operands(node, op))
            return f"({joined})", "bool"  # Python's and/or: in order, short-circuit, as Cedar's
        (left, left_kind), (right, right_kind) = self.expr(node.left), self.expr(node.right)
        if op in ("eq", "not_eq"):
            return self.equality(left, left_kind, right, right_kind, op == "not_eq"), "bool"
        if op in _COMPARISONS:
            left = left if left_kind == "int" else f"_long({left})"
            right = right if right_kind == "int" else f"_long({right})"
            return f"({left} {_COMPARISONS[op]} {right})", "bool"
        if op in _DECIMAL_COMPARISONS:
            left = left if left_kind == "decimal" else f"_decimal({left})"
            right = right if right_kind == "decimal" else f"_decimal({right})"
            return f"({left} {_DECIMAL_COMPARISONS[op]} {right})", "bool"
        if op in ("contains", "contains_any", "contains_all"):
            return f"_{op}({left}, {right})", "bool"
        raise Unsupported(op)

    def equality(self, left: str, left_kind: str, right: str, right_kind: str, negate: bool) -> str:
        if left_kind == right_kind and right_kind in ("str", "int"):
            test = f"({left} == {right})"
        elif right_kind in ("str", "int"):  # `x == "literal"`: compared directly if types match
            value = self.temporary()
            test = f"({value} == {right} if type({value} := {left}) is {right_kind} else "
            test += f"_equal({value}, {right}))"
        else:
            test = f"_equal({left}, {right})"
        return f"(not {test})" if negate else test

    def principal_equals(self, node: pst.BinaryOp) -> str:
        other = node.right if _is_principal(node.left) else node.left
        if not isinstance(other, pst.EntityLit):
            raise Unsupported("principal compared with a computed value")
        uid = other.value
        name = uid.id if uid.type.basename == "Agent" and not uid.type.namespace else None
        return f"(agent.name {'==' if node.op == 'eq' else '!='} {self.constant(name)})"


_COMPARISONS = {"less": "<", "less_eq": "<=", "greater": ">", "greater_eq": ">="}
_DECIMAL_COMPARISONS = {
    "decimal_less_than": "<",
    "decimal_less_eq": "<=",
    "decimal_greater": ">",
    "decimal_greater_eq": ">=",
}


def _operands(node: Any, op: str) -> list[Any]:
    """`a && b && c` as [a, b, c]."""
    if isinstance(node, pst.BinaryOp) and node.op == op:
        return [*_operands(node.left, op), *_operands(node.right, op)]
    return [node]


def _context_path(node: Any) -> list[str] | None:
    names: list[str] = []
    while isinstance(node, pst.GetAttr):
        names.append(node.attr)
        node = node.base
    if isinstance(node, pst.Var) and node.name == "context":
        return names[::-1]
    return None


def _segments(node: pst.Like) -> list[str]:
    """The literal runs between wildcards: `*@acme.com` is ["", "@acme.com"]."""
    segments = [""]
    for element in node.pattern:
        if isinstance(element, pst.Wildcard):
            segments.append("")
        else:
            segments[-1] += element.value
    return segments


def _decimal_literal(text: str) -> Decimal:
    if not _DECIMAL_LITERAL.fullmatch(text):
        raise Unsupported("malformed decimal literal")
    value = Decimal(text)
    if abs(value) > _DECIMAL_LIMIT:
        raise Unsupported("decimal literal out of range")
    return value


def _is_principal(node: Any) -> bool:
    return isinstance(node, pst.Var) and node.name == "principal"


# -- run time: the checks Cedar makes, where a policy's code cannot tell in advance ----------------


def _boolean(value: Any) -> bool:
    if value is True or value is False:
        return value
    raise Fallback


def _has(context: Mapping[str, Any], chain: tuple[str, ...], known: int) -> bool:
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


def _contains_any(collection: Any, elements: Any) -> bool:
    _set(collection)  # a set, even when `elements` is empty: else Cedar errors
    return any(_contains(collection, element) for element in _set(elements))


def _contains_all(collection: Any, elements: Any) -> bool:
    _set(collection)
    return all(_contains(collection, element) for element in _set(elements))


def _like(value: Any, segments: list[str]) -> bool:
    if not isinstance(value, str):
        raise Fallback
    return glob_match(segments, value)


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


_HELPERS: dict[str, Any] = {
    "Fallback": Fallback,
    "_boolean": _boolean,
    "_contains": _contains,
    "_contains_all": _contains_all,
    "_contains_any": _contains_any,
    "_decimal": _decimal,
    "_equal": _equal,
    "_has": _has,
    "_like": _like,
    "_long": _long,
    "_set": _set,
    # All the built-ins a condition uses: nothing else is in reach of the generated code.
    "__builtins__": {
        "len": len,
        "type": type,
        "str": str,
        "int": int,
        "KeyError": KeyError,
        "TypeError": TypeError,
    },
}
