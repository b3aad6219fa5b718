"""The exceptions Tether raises at its edges.

Every error a person or a program can act on is a `TetherError` with a message written for them;
interfaces (CLI, SDK, server) turn it into one clear line or a 4xx, never a stack trace. Anything
else that escapes is a bug, and the decision pipeline turns even those into a deny.
"""

from __future__ import annotations

from dataclasses import dataclass


class TetherError(Exception):
    """Base of every error Tether reports to its callers."""


class NotFound(TetherError):
    """A workspace, agent, tool, task or bundle that does not exist."""


class Conflict(TetherError):
    """The change contradicts what is already there (a duplicate name, a used id)."""


class InvalidInput(TetherError):
    """Input that is malformed or breaks a rule; the message says which rule."""


class CatalogueError(InvalidInput):
    """A tool that cannot be registered, most often because its argument schema cannot be typed."""


@dataclass(frozen=True)
class PolicyProblem:
    """One thing wrong with a policy bundle, located for its author."""

    file: str
    line: int
    policy_id: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        policy = f" [{self.policy_id}]" if self.policy_id else ""
        return f"{where}{policy}: {self.message}"


class PolicyError(InvalidInput):
    """A policy bundle that failed to parse or validate; `problems` lists every finding."""

    def __init__(self, problems: list[PolicyProblem]) -> None:
        self.problems = problems
        count = len(problems)
        header = f"{count} problem{'s' if count != 1 else ''} in the policy bundle"
        super().__init__("\n".join([header, *(f"  {p}" for p in problems)]))


class CredentialRefused(TetherError):
    """A token, proof, assertion, grant or SVID that is refused; the message says exactly why.

    `error` is the OAuth error code an HTTP interface answers with (RFC 6749 section 5.2,
    RFC 8693 section 2.2.2, RFC 9449 section 7.1)."""

    def __init__(self, message: str, error: str = "invalid_token", subject: object = None) -> None:
        super().__init__(message)
        self.error = error
        self.subject = subject  # the verified claims, when the refusal came after verifying


class Forbidden(TetherError):
    """The caller may not do this (an approver without the role, an agent approving itself)."""


class Unavailable(TetherError):
    """The service could not answer now (unreachable, overloaded, too slow); try again later."""


# -- errors over HTTP ------------------------------------------------------------------------------
# The HTTP API names the class of each error in its problem document's `type` (RFC 9457), so a
# client, the remote Guard, raises the very class the embedded Guard would have raised.

PROBLEM_TYPE = "urn:tether:problem:"
_BY_NAME: dict[str, type[TetherError]] = {
    kind.__name__: kind
    for kind in (
        NotFound,
        Conflict,
        InvalidInput,
        CatalogueError,
        PolicyError,
        CredentialRefused,
        Forbidden,
        Unavailable,
    )
}


def problem_type(exc: BaseException) -> str:
    """The `type` of the problem document that reports `exc`."""
    for kind in type(exc).__mro__:
        if _BY_NAME.get(kind.__name__) is kind:
            return PROBLEM_TYPE + kind.__name__
    return "about:blank"


def error_class(type_uri: str) -> type[TetherError] | None:
    """The class a problem document's `type` names, if it names one."""
    name = type_uri.removeprefix(PROBLEM_TYPE) if type_uri.startswith(PROBLEM_TYPE) else ""
    return _BY_NAME.get(name)


def shown(exc: BaseException) -> str:
    """What a caller may be told of an exception: a TetherError's message, which is written
    for them, and of anything else only its kind. Another exception's text can carry what is
    not the caller's to see: a database's host and user, a statement's parameters (in a group
    commit, other calls' values), a file's path. Whoever catches it logs it in full."""
    if isinstance(exc, TetherError):
        return str(exc)
    return f"{type(exc).__name__} (the details are in Tether's log)"
