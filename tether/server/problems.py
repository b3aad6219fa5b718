"""Errors as RFC 9457 problem details: a JSON body with `type`, `title`, `status` and `detail`,
never a stack trace. Every way a request can fail maps to one status here, in one place."""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from tether.errors import (
    Conflict,
    CredentialRefused,
    Forbidden,
    InvalidInput,
    NotFound,
    PolicyError,
    Unavailable,
    problem_type,
)

log = logging.getLogger("tether.server")

MEDIA_TYPE = "application/problem+json"
TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    429: "Too many requests",
    500: "Internal error",
    503: "Unavailable",
}


class Problem(Exception):
    """Raised by a handler to answer with a problem."""

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra


def problem(status: int, detail: str, *, kind: str = "about:blank", **extra: Any) -> Response:
    """`kind`: the document's `type`, which error this is (tether/errors.py names each class
    of TetherError, so that a client can raise the same)."""
    body = {
        "type": kind,
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        **extra,
    }
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'DPoP, Bearer realm="tether"'
    if "retry_after" in extra:
        headers["Retry-After"] = str(max(1, math.ceil(extra["retry_after"])))
    if status == 413:  # the body was left unread: this connection cannot carry another request
        headers["Connection"] = "close"
    return Response(msgspec.json.encode(body), status, headers=headers, media_type=MEDIA_TYPE)


STATUS: tuple[tuple[type[Exception] | tuple[type[Exception], ...], int], ...] = (
    (CredentialRefused, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (Unavailable, 503),
    ((InvalidInput, msgspec.ValidationError, msgspec.DecodeError), 400),
)


def status_of(exc: Exception) -> int:
    if isinstance(exc, Problem):
        return exc.status
    return next((status for kind, status in STATUS if isinstance(exc, kind)), 500)


async def handle(request: Request, exc: Exception) -> Response:
    """Starlette's handler for every exception a request raises."""
    if isinstance(exc, HTTPException):
        return problem(exc.status_code, str(exc.detail))
    status = status_of(exc)
    if status == 500:
        log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
        return problem(500, "the request failed inside Tether; it has been logged")
    extra = dict(exc.extra) if isinstance(exc, Problem) else {}
    kind = extra.pop("kind", problem_type(exc))
    if isinstance(exc, CredentialRefused):
        extra = {"error": exc.error}
    if isinstance(exc, PolicyError):  # each problem located, for its author (and a client)
        extra = {"problems": [dataclasses.asdict(p) for p in exc.problems]}
    return problem(status, str(exc), kind=kind, **extra)
