"""`tether serve` for the HTTP benchmarks (http_api.py, load.py): a fresh home or database with
the starter workspace and the coder's key, the service in a process group of its own, tasks
for its agent, and requests written by hand (a client library would be slower than the
service and measure itself)."""

from __future__ import annotations

import asyncio
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import sqlalchemy as sa
from joserfc.jwk import ECKey

from tether import Guard
from tether.credentials import ACCESS_TOKEN_TYPE, GRANT_TOKEN_TYPE, make_assertion, make_proof
from tether.identity import generate_key, register_key

STARTER = Path(__file__).resolve().parent.parent / "tether" / "starter" / "acme"
START_SECONDS = 60
STOP_SECONDS = 30


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def prepare(home: Path, db: str | None = None) -> tuple[ECKey, str]:
    """The starter workspace on `home` (or `db`), the coder's key registered: the key and
    alice's grant to the coder."""
    key = generate_key()
    with Guard.embedded(home=home, db=db) as guard:
        guard.apply_directory(STARTER)
        register_key(
            guard.store, workspace="acme", agent="coder", jwk=key.as_dict(), now=time.time()
        )
        grant = next(g for g in guard.store.credentials.grants("acme") if g.agent == "coder")
    return key, grant.id


@dataclass
class Service:
    port: int
    pid: int  # and its process group's id
    key: ECKey  # the coder's
    grant: str  # alice's to the coder

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def served(workers: int, db: str | None = None) -> Iterator[Service]:
    """`tether serve` at `commit` durability with no rate limit, on a fresh home (or on `db`),
    until the block ends; its errors go to a file, so a flood of them cannot fill a pipe and
    stop it."""
    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryFile("w+") as errors:
        key, grant = prepare(Path(home), db)
        port = free_port()
        command = [
            sys.executable, "-m", "tether.cli", "--home", home, "serve", "--port", str(port),
            "--rate", "1000000", "--burst", "1000000", "--durability", "commit",
            "--workers", str(workers), *(["--db", db] if db else []),
        ]  # fmt: skip
        child = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True
        )
        try:
            _wait_until_healthy(port, child, errors)
            yield Service(port, child.pid, key, grant)
        finally:
            _stop(child)


def _wait_until_healthy(port: int, child: subprocess.Popen[bytes], errors: IO[str]) -> None:
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if child.poll() is not None or time.monotonic() > deadline:
            _stop(child)
            errors.seek(0)
            raise SystemExit(f"tether serve did not start: {errors.read()[-2000:]}")
        time.sleep(0.1)


def _stop(child: subprocess.Popen[bytes]) -> None:
    """The whole process group (the server and its workers), killed if it will not stop."""
    if child.poll() is not None:
        return
    os.killpg(child.pid, signal.SIGTERM)
    try:
        child.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


@contextmanager
def database(server_url: str) -> Iterator[str]:
    """A PostgreSQL database of the run's own on `server_url`'s server, dropped afterwards."""
    name = f"tether_bench_{uuid.uuid4().hex[:12]}"
    server = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with server.connect() as db:
        db.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield (
            sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False)
        )
    finally:
        with server.connect() as db:
            db.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


def start_task(client: httpx.Client, svc: Service) -> str:
    """A task token for the coder, by token exchange (RFC 8693) with a DPoP proof."""
    url, key, grant, now = svc.url, svc.key, svc.grant, time.time()
    assertion = make_assertion(
        key, agent_id="spiffe://tether.local/ws/acme/agent/coder", audience="tether", now=now
    )
    response = client.post(
        "/v1/token",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": grant,
            "subject_token_type": GRANT_TOKEN_TYPE,
            "actor_token": assertion,
            "requested_token_type": ACCESS_TOKEN_TYPE,
            "scope": "read_file",
            "request": "benchmark",
        },
        headers={"DPoP": make_proof(key, htm="POST", htu=f"{url}/v1/token", now=now)},
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def http_request(method: str, path: str, port: int, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def authorize_request(svc: Service, token: str, body: bytes) -> bytes:
    """`POST /v1/authorize` under `token`, with a proof signed now."""
    proof = make_proof(
        svc.key, htm="POST", htu=f"{svc.url}/v1/authorize", now=time.time(), access_token=token
    )
    headers = {"Authorization": f"DPoP {token}", "DPoP": proof, "Content-Type": "application/json"}
    return http_request("POST", "/v1/authorize", svc.port, headers, body)


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> bytes:
    """Send one request on a keep-alive connection and read its whole answer: its status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    await reader.readexactly(int(length.group(1)) if length else 0)
    return head[9:12]


def nearest_rank(ordered: list[float], share: float) -> float:
    """The `share` quantile of sorted values, by nearest rank."""
    if not ordered:
        return float("nan")
    return ordered[max(0, math.ceil(len(ordered) * share) - 1)]
