"""The decision log as OpenTelemetry logs, sent with the SDK's OTLP/HTTP exporter.

A security team already collects logs in one place (a SIEM, an OpenTelemetry Collector); this
puts Tether's decisions there, one log record per decision, without a bespoke format to parse.

What is sent, and what is not: every field that says who did what, when and why (as `tether.*`
attributes, below) and the chain fields, so a record can be matched to the store and its hash
checked there. The call's `args` and the policy `context` are **not** sent: they may hold the
very data the policies guard (an email body, a secret read from a file), and a log pipeline is
read by more people than the audit store. `args_digest` (their SHA-256) is sent instead, enough
to tie a log line to its record. The shadow outcome is not sent either (it is for policy
authors, read with `tether audit query`).

The export is synchronous and in batches: each batch is sent and acknowledged before the next,
so the count returned is what the endpoint accepted, and a failure stops the export with an
`OtlpExportError` saying how far it got (the records before it were delivered; sending them
again makes duplicates, which the `tether.decision_id` attribute lets a backend drop).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from itertools import islice
from typing import Any
from urllib.parse import urlsplit

import requests
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tether.errors import TetherError
from tether.model import DecisionRecord, Effect

EVENT_NAME = "tether.decision"
BATCH_SIZE = 512  # the SDK's own default batch size for logs
DEFAULT_BASE = "http://localhost:4318"  # OpenTelemetry's default OTLP/HTTP endpoint
LOGS_PATH = "/v1/logs"

# A deny is the system working, not failing, so nothing is ERROR; what a person may want to look
# at (a refused call, a call waiting on a person) is WARN, and the normal case INFO.
SEVERITY = {
    Effect.ALLOW: SeverityNumber.INFO,
    Effect.APPROVAL_REQUIRED: SeverityNumber.WARN,
    Effect.DENY: SeverityNumber.WARN,
}

# Record fields sent as `tether.<field>` attributes (`id` is sent as `tether.decision_id`).
ATTRIBUTE_FIELDS = (
    "tenant",
    "workspace",
    "agent",
    "user",
    "task_id",
    "tool",
    "effect",
    "stage",
    "policy_version",
    "approval_id",
    "args_digest",
    "chain",
    "chain_seq",
    "prev_hash",
    "hash",
)

# The SDK reports what goes wrong through this logger, not through its return value.
_SDK_LOGGER = "opentelemetry"
# Set, these make the exporter build its own HTTP session, which then has to be left to it.
_SESSION_PROVIDERS = (
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_LOGS_CREDENTIAL_PROVIDER",
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
)


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


class _Witness(requests.Session):
    """The exporter's HTTP session, remembering why the last request failed: the exporter logs
    the cause only when it has time left to retry, and the error should always say it."""

    def __init__(self) -> None:
        super().__init__()
        self.failure: str | None = None

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        try:
            response = super().request(method, url, *args, **kwargs)
        except requests.RequestException as exc:
            # requests wraps urllib3's error, whose `reason` is the plain cause
            inner = exc.args[0] if exc.args else None
            self.failure = str(getattr(inner, "reason", None) or exc)
            raise
        if response.status_code >= 400:
            self.failure = f"HTTP {response.status_code} {response.reason}"
        return response


class OtlpExportError(TetherError):
    """The OTLP endpoint could not be reached or refused a batch; the message says how far the
    export got and why it stopped."""


def log_record(record: DecisionRecord) -> LogRecord:
    """One decision as an OpenTelemetry log record: its time, a one-line body for people, and
    its fields as `tether.*` attributes for machines. Never its arguments or context."""
    attributes: dict[str, str | int] = {"tether.decision_id": record.id}
    for name in ATTRIBUTE_FIELDS:
        value = getattr(record, name)
        if value is not None:  # OpenTelemetry attributes have no null
            attributes[f"tether.{name}"] = value if isinstance(value, int) else str(value)
    attributes["tether.reasons"] = record.reasons
    severity = SEVERITY[Effect(record.effect)]
    return LogRecord(
        timestamp=timestamp_ns(record.ts),
        observed_timestamp=time.time_ns(),
        severity_number=severity,
        severity_text=severity.name,
        body=summary(record),
        attributes=attributes,
        event_name=EVENT_NAME,
    )


def timestamp_ns(ts: float) -> int:
    """Epoch seconds as nanoseconds, rounded to the microsecond: a float of today's epoch
    seconds holds about that much, and multiplying it by 1e9 directly would invent digits."""
    return round(ts * 1_000_000) * 1_000


def summary(record: DecisionRecord) -> str:
    """The body: effect, agent, tool and the first reason, e.g. `deny: coder called send_email
    (recipient outside the company)`."""
    reasons = json.loads(record.reasons) if record.reasons else []
    why = f" ({reasons[0]['text']})" if reasons else ""
    return f"{record.effect}: {record.agent or 'an unknown caller'} called {record.tool}{why}"


def export(
    records: Iterable[DecisionRecord],
    *,
    endpoint: str | None = None,
    timeout: float | None = None,
    batch_size: int = BATCH_SIZE,
) -> int:
    """Send `records` to an OTLP/HTTP logs endpoint, in order, `batch_size` at a time; return how
    many were accepted.

    `endpoint` is the logs URL (`http://collector:4318/v1/logs`; a URL with no path gets
    `/v1/logs`); without it, the standard variables say (`logs_url`). The exporter reads the
    rest of its settings from the standard variables too: headers, TLS files, compression, and
    the timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`, in seconds) unless `timeout` is given.
    """
    where = logs_url(endpoint)
    witness = None if any(os.environ.get(v) for v in _SESSION_PROVIDERS) else _Witness()
    exporter = OTLPLogExporter(endpoint=where, timeout=timeout, session=witness)
    resource = Resource.create({"service.name": "tether", "service.version": _version()})
    scope = InstrumentationScope("tether.audit", _version())
    sent = 0
    try:
        for batch in _batches(records, batch_size):
            logs = [ReadableLogRecord(log_record(r), resource, scope) for r in batch]
            with _sdk_messages() as messages:
                result = exporter.export(logs)
            if result is not LogRecordExportResult.SUCCESS:
                said = messages[0] if messages else "no reason given"
                why = witness.failure if witness and witness.failure else said
                raise OtlpExportError(
                    f"OTLP export to {where} failed after {sent} records were sent: {why}"
                )
            sent += len(batch)
        exporter.force_flush()
    finally:
        with _sdk_messages():
            exporter.shutdown()  # type: ignore[no-untyped-call]  # unannotated in the SDK
    return sent


def logs_url(endpoint: str | None = None) -> str:
    """Where the logs go: `endpoint` if given (a collector's base URL gets the logs path), else
    the standard variables as OpenTelemetry specifies them (the logs URL as it is, else the base
    URL plus the logs path, else the local default). Resolved here, not left to the exporter, so
    an error can name the URL that failed."""
    if endpoint:
        return (
            endpoint.rstrip("/") + LOGS_PATH if urlsplit(endpoint).path in ("", "/") else endpoint
        )
    if logs := os.environ.get(OTEL_EXPORTER_OTLP_LOGS_ENDPOINT):
        return logs
    return (os.environ.get(OTEL_EXPORTER_OTLP_ENDPOINT) or DEFAULT_BASE).rstrip("/") + LOGS_PATH


def _batches(records: Iterable[DecisionRecord], size: int) -> Iterator[list[DecisionRecord]]:
    it = iter(records)
    while batch := list(islice(it, size)):
        yield batch


@contextmanager
def _sdk_messages() -> Iterator[list[str]]:
    """Collect what the SDK logs while it works, instead of letting it print: the CLI reports a
    failure as one line, and the first thing the SDK said is its cause."""
    messages: list[str] = []
    logger = logging.getLogger(_SDK_LOGGER)
    handler, propagate = _Collect(messages), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _version() -> str:
    try:
        return version("tether")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"
