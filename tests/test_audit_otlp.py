"""`tether audit export --otlp`: decisions of a real Guard, sent with the OpenTelemetry SDK's
OTLP/HTTP exporter to a real receiver in this process, arrive as one log each with the right
time, severity and attributes, and without the call's arguments or context."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from test_cli import cli_env
from typer.testing import CliRunner, Result

from tether import Guard
from tether.audit import otlp, record_hash
from tether.cli import app
from tether.errors import InvalidInput
from tether.model import DecisionRecord, Effect
from tether.store import Store

SECRET = "TOP-SECRET-7f3a"  # in every call's arguments, so in every record's args and context
CALLS = [  # (tool, args, effect the conftest policies give)
    ("read_file", {"path": f"/srv/{SECRET}/notes"}, Effect.ALLOW),
    ("send_email", {"to": "bob@acme.com", "subject": SECRET}, Effect.ALLOW),
    ("send_email", {"to": "eve@evil.io", "subject": SECRET}, Effect.DENY),
    ("send_email", {"to": "ceo@acme.com", "subject": SECRET}, Effect.APPROVAL_REQUIRED),
]


ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")


class Receiver(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP logs endpoint: POST /v1/logs with a protobuf ExportLogsServiceRequest."""

    received: ClassVar[list[tuple[bytes, ExportLogsServiceRequest]]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path != "/v1/logs" or self.headers["Content-Type"] != "application/x-protobuf":
            self.send_error(404)
            return
        request = ExportLogsServiceRequest()
        request.ParseFromString(body)
        self.received.append((body, request))
        reply = ExportLogsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[bytes, ExportLogsServiceRequest]]]]:
    """The receiver's base URL and what it received."""
    received: list[tuple[bytes, ExportLogsServiceRequest]] = []
    handler = type("Handler", (Receiver,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def decided(guard: Guard, home: Path) -> list[DecisionRecord]:
    """CALLS in a task, and one call outside any task; their records, oldest first."""
    with guard.task(
        workspace="acme",
        agent="coder",
        user="alice",
        request="tidy up",
        tools=["send_email", "read_file"],
    ) as task:
        ids = []
        for tool, args, effect in CALLS:
            decision = task.authorize(tool, args)
            assert decision.effect is effect, decision
            ids.append(decision.decision_id)
    outside = guard.authorize(None, "read_file", {"path": SECRET}, workspace="acme")
    assert outside.effect is Effect.DENY
    ids.append(outside.decision_id)
    store = Store.at_home(home)
    try:
        records = list(reversed(store.decisions(limit=None)))
    finally:
        store.close()
    assert [r.id for r in records] == ids
    return records


def export(home: Path, *args: str, **env: str) -> Result:
    """`tether audit export ARGS` in this process (fast), with no OTLP endpoint variable but
    those in `env`; `tether` below runs the real command."""
    unset: dict[str, str | None] = dict.fromkeys(ENDPOINT_VARIABLES)
    command = ["--home", str(home), "audit", "export", *args]
    return CliRunner().invoke(app, command, env=unset | env)


def tether(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether.cli", "--home", str(home), "audit", "export", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=cli_env() | env,
    )


def attributes(log: Any) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in log.attributes}


def logs(received: list[tuple[bytes, ExportLogsServiceRequest]]) -> list[Any]:
    return [
        log
        for _, request in received
        for resource_logs in request.resource_logs
        for scope_logs in resource_logs.scope_logs
        for log in scope_logs.log_records
    ]


def test_every_decision_arrives_as_one_log(
    decided: list[DecisionRecord], home: Path, receiver: tuple[str, list[Any]]
) -> None:
    url, received = receiver
    result = export(home, "--otlp-endpoint", url)
    assert result.exit_code == 0, result.output
    assert f"sent 5 records to {url}/v1/logs" in result.stdout

    (_, request), *more = received
    assert not more  # one batch
    (resource_logs,) = request.resource_logs
    resource = {kv.key: kv.value.string_value for kv in resource_logs.resource.attributes}
    assert resource["service.name"] == "tether"
    (scope_logs,) = resource_logs.scope_logs
    assert scope_logs.scope.name == "tether.audit"

    got = logs(received)
    assert [attributes(log)["tether.decision_id"] for log in got] == [r.id for r in decided]
    severities = {"allow": "INFO", "deny": "WARN", "approval_required": "WARN"}
    for log, record in zip(got, decided, strict=True):
        attrs = attributes(log)
        assert abs(log.time_unix_nano / 1e9 - record.ts) < 1e-6
        assert log.time_unix_nano == otlp.timestamp_ns(record.ts)
        assert log.observed_time_unix_nano >= log.time_unix_nano
        assert log.severity_text == severities[record.effect]
        assert log.event_name == "tether.decision"
        assert attrs["tether.effect"] == record.effect
        assert attrs["tether.stage"] == record.stage
        assert attrs["tether.tool"] == record.tool
        assert attrs.get("tether.workspace") == record.workspace
        assert attrs["tether.args_digest"] == record.args_digest
        assert attrs["tether.chain"] == record.chain
        assert attrs["tether.chain_seq"] == record.chain_seq
        assert attrs["tether.hash"] == record.hash == record_hash(record)
        assert json.loads(attrs["tether.reasons"]) == json.loads(record.reasons)
        first_reason = json.loads(record.reasons)[0]["text"]
        body = log.body.string_value
        assert body.startswith(f"{record.effect}: ") and record.tool in body
        assert first_reason in body
        # every field that is set is there, and nothing else
        fields = {f for f in otlp.ATTRIBUTE_FIELDS if getattr(record, f) is not None}
        assert set(attrs) == {f"tether.{f}" for f in fields} | {
            "tether.decision_id",
            "tether.reasons",
        }
    in_task = [attributes(log) for log in got[: len(CALLS)]]
    assert all(a["tether.agent"] == "coder" and a["tether.user"] == "alice" for a in in_task)
    assert all(a["tether.task_id"] == decided[0].task_id for a in in_task)
    approval = attributes(got[3])
    assert approval["tether.approval_id"] == decided[3].approval_id is not None
    assert all(a["tether.workspace"] == "acme" for a in in_task)
    # Outside any task no credential proves a workspace: no null attributes, no workspace.
    assert not {"tether.task_id", "tether.workspace"} & set(attributes(got[4]))


def test_arguments_and_context_are_not_sent(
    decided: list[DecisionRecord], home: Path, receiver: tuple[str, list[Any]]
) -> None:
    assert all(SECRET in r.args for r in decided[: len(CALLS)])  # outside a task: a digest
    contexts = [r.context for r in decided if r.context is not None]
    assert len(contexts) == len(CALLS) and all(SECRET in c for c in contexts)
    url, received = receiver
    assert export(home, "--otlp-endpoint", url).exit_code == 0
    ((body, _),) = received
    assert SECRET.encode() not in body
    assert b"eve@evil.io" not in body and b"bob@acme.com" not in body


def test_otlp_uses_the_standard_variables(
    decided: list[DecisionRecord], home: Path, receiver: tuple[str, list[Any]]
) -> None:
    url, received = receiver
    base = export(home, "--otlp", "--workspace", "acme", OTEL_EXPORTER_OTLP_ENDPOINT=url)
    assert base.exit_code == 0, base.output
    logs_url = export(
        home, "--otlp", "--since", "1h", OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=f"{url}/v1/logs"
    )
    assert logs_url.exit_code == 0, logs_url.output
    # acme's records (the call outside any task is in no workspace's), then all of them
    assert len(logs(received)) == len(CALLS) + len(decided)


def test_records_go_in_batches(decided: list[DecisionRecord], receiver: tuple[str, Any]) -> None:
    url, received = receiver
    assert otlp.export(decided, endpoint=url, batch_size=2) == len(decided)
    assert [len(logs([r])) for r in received] == [2, 2, 1]
    assert [attributes(log)["tether.decision_id"] for log in logs(received)] == [
        r.id for r in decided
    ]


def test_an_unreachable_endpoint_is_one_clear_error(
    decided: list[DecisionRecord], home: Path
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    result = tether(
        home, "--otlp-endpoint", f"http://127.0.0.1:{port}", OTEL_EXPORTER_OTLP_TIMEOUT="1"
    )
    assert time.monotonic() - started < 10
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: OTLP export to http://127.0.0.1:{port}/v1/logs failed")
    assert "after 0 records were sent" in line and "Connection refused" in line


def test_a_refusing_endpoint_is_one_clear_error(
    decided: list[DecisionRecord], home: Path, receiver: tuple[str, list[Any]]
) -> None:
    url, received = receiver
    result = export(home, "--otlp-endpoint", f"{url}/v1/elsewhere")
    assert isinstance(result.exception, otlp.OtlpExportError) and not received
    assert str(result.exception) == (
        f"OTLP export to {url}/v1/elsewhere failed after 0 records were sent: HTTP 404 Not Found"
    )


def test_one_destination(home: Path, tmp_path: Path) -> None:
    for args in ((), (str(tmp_path / "log.jsonl"), "--otlp")):
        result = export(home, *args)
        assert isinstance(result.exception, InvalidInput)
        assert str(result.exception) == (
            "give a file to write, or --otlp / --otlp-endpoint (not both)"
        )
