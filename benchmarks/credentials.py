"""Credential costs on the embedded store, beside raw `cryptography` ES256 in the same run.

What is measured, one operation at a time on one thread (so the rates are per core):

- **raw ES256 sign / verify**: `cryptography` signing and verifying a 600-byte message with a
  P-256 key, the floor under everything else.
- **exchange**: a full RFC 8693 token exchange from a user's grant: the agent's assertion
  verified (signature, replay cache insert), grant and task checks, the task and token rows
  written, the token signed. The assertions are made before timing.
- **token + DPoP proof**: what a remote call's authenticate stage does for a token it has not
  seen: token signature and claims, revocation check, proof signature and claims, and the proof's
  `jti` inserted into the store's replay cache. Proofs are made before timing; the verified-token
  cache is emptied before each call.
- **cached token**: the same token checked again (embedded calls, or a remote call before its
  proof is checked): SHA-256 of the token, a dict lookup, expiry, revocation sets.

Targets (issue 4): token + proof >= 1,500/s per core; cached checks >= 20,000/s.

    .venv/bin/python benchmarks/credentials.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from rich.console import Console
from rich.table import Table

from tether import Guard
from tether.credentials import GRANT_TOKEN_TYPE, ExchangeRequest, make_assertion, make_proof

TARGET_PROOF_PER_S = 1500.0
TARGET_CACHED_PER_S = 20_000.0
HTU = "https://tether.bench/v1/authorize"
AGENT_ID = "spiffe://tether.local/ws/bench/agent/coder"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(fn: Callable[[int], object], n: int) -> list[float]:
    """Microseconds per call of fn(i), for i in range(n), after a warm-up on i = n .. n + 49."""
    for i in range(n, n + 50):
        fn(i)
    samples = []
    for i in range(n):
        started = time.perf_counter_ns()
        fn(i)
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def setup(guard: Guard) -> str:
    guard.add_workspace("bench")
    guard.register_agent("bench", "coder", kind="coder", owner="bench@acme.com")
    for tool in ("read_file", "write_file", "send_email"):
        guard.register_tool("bench", tool, effects=["read"])
    guard.activate_policies("bench", {"all.cedar": "permit (principal, action, resource);"})
    guard.add_user("bench", "alice")
    grant = guard.grant(
        "bench", user="alice", agent="coder", tools=["read_file", "write_file", "send_email"]
    )
    return grant.id


def measure(guard: Guard, grant: str, n: int) -> dict[str, list[float]]:
    key = guard.agent_keys.get("bench", "coder")
    credentials = guard.credentials
    now = time.time

    raw_key = ec.generate_private_key(ec.SECP256R1())
    message = os.urandom(600)
    signature = raw_key.sign(message, ec.ECDSA(hashes.SHA256()))
    public = raw_key.public_key()

    requests = [
        ExchangeRequest(
            subject_token=grant,
            subject_token_type=GRANT_TOKEN_TYPE,
            actor_token=make_assertion(key, agent_id=AGENT_ID, audience="tether", now=now()),
            scope="read_file send_email",
        )
        for _ in range(n + 50)
    ]
    tokens: list[str] = []

    def exchange(i: int) -> None:
        tokens.append(credentials.exchange(requests[i]).response.access_token)

    results = {
        "raw ES256 sign": timed(lambda i: raw_key.sign(message, ec.ECDSA(hashes.SHA256())), n),
        "raw ES256 verify": timed(
            lambda i: public.verify(signature, message, ec.ECDSA(hashes.SHA256())), n
        ),
        "exchange": timed(exchange, n),
    }
    proofs = [
        make_proof(key, htm="POST", htu=HTU, now=now(), access_token=tokens[i])
        for i in range(n + 50)
    ]

    def token_and_proof(i: int) -> None:
        credentials._verified.clear()  # as for a token this process has not seen
        credentials.authenticate(tokens[i], proof=proofs[i], htu=HTU, require_proof=True)

    results["token + DPoP proof"] = timed(token_and_proof, n)
    token = tokens[0]
    credentials.authenticate(token)
    results["cached token"] = timed(lambda i: credentials.authenticate(token), n)
    return results


def summary(values: list[float]) -> dict[str, float]:
    median = statistics.median(values)
    return {
        "median_us": median,
        "p99_us": percentile(values, 0.99),
        "per_second": 1e6 / median,
        "n": len(values),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few samples: a smoke run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    n = 100 if args.quick else 2000
    console = Console()
    with tempfile.TemporaryDirectory() as home, Guard.embedded(home=home) as guard:
        grant = setup(guard)
        results = {name: summary(v) for name, v in measure(guard, grant, n).items()}

    raw_verify = results["raw ES256 verify"]["median_us"]
    table = Table(title="Credentials, one thread (per core)")
    for column in ("operation", "median µs", "p99 µs", "per second", "x raw verify"):
        table.add_column(column, justify="right" if column != "operation" else "left")
    for name, r in results.items():
        table.add_row(
            name,
            f"{r['median_us']:.1f}",
            f"{r['p99_us']:.1f}",
            f"{r['per_second']:,.0f}",
            f"{r['median_us'] / raw_verify:.2f}",
        )
    console.print(table)
    proof_rate = results["token + DPoP proof"]["per_second"]
    cached_rate = results["cached token"]["per_second"]
    goals = {
        "token + DPoP proof per second": (proof_rate, TARGET_PROOF_PER_S),
        "cached token checks per second": (cached_rate, TARGET_CACHED_PER_S),
    }
    for name, (value, target) in goals.items():
        mark = "[green]met[/]" if value >= target else "[red]missed[/]"
        console.print(f"{name}: {value:,.0f} (target >= {target:,.0f}) {mark}")
    if args.json:
        document: dict[str, Any] = {"results": results, "quick": args.quick}
        args.json.write_text(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
