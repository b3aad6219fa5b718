"""Protocol transparency: the `@modelcontextprotocol/conformance` server scenarios (npm, run by
tests/conformance/run.py) against the fixture upstream directly, then through the gateway with a
policy that allows everything. Every scenario the upstream passes must pass through the gateway.

The CLI cannot send the agent's DPoP-bound token, so it reaches the gateway through a proxy that
signs each request in (tests/conformance/auth_proxy.py); the gateway's public URL is the proxy's.
Both result sets are written to TETHER_CONFORMANCE_RESULTS (a folder), when it is set."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
from gateway_env import gateway, prepare
from served import serve_in_thread

sys.path.insert(0, str(Path(__file__).parent / "conformance"))
from auth_proxy import SigningProxy

HERE = Path(__file__).parent / "conformance"
ALLOW_ALL = {"all.cedar": "permit (principal, action, resource);\n"}


def _conformance(url: str, out: Path) -> dict[str, dict[str, object]]:
    subprocess.run(
        [sys.executable, str(HERE / "run.py"), "--url", url, "--json", str(out), "--timeout", "60"],
        check=False,
        timeout=900,
    )
    results: dict[str, dict[str, object]] = json.loads(out.read_text())
    return results


def _upstream(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, str(HERE / "upstream.py"), "--port", str(port)])
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx2.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
            return process
        except httpx2.TransportError:
            assert process.poll() is None and time.monotonic() < deadline, "no upstream"
            time.sleep(0.1)


def test_the_gateway_passes_every_scenario_its_upstream_passes(home: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    upstream = _upstream(port)
    try:
        direct = _conformance(f"http://127.0.0.1:{port}/mcp", tmp_path / "direct.json")
        config = tmp_path / "gateway.yaml"
        config.write_text(
            "workspace: acme\nupstreams:\n  conformance:\n"
            f"    url: http://127.0.0.1:{port}/mcp\n    prefix: ''\n    timeout: 30\n"
        )
        guard = prepare(home)
        proxy_url, proxy, stop_proxy = serve_in_thread(lambda url: SigningProxy(url + "/mcp"))
        try:
            with gateway(home, config, guard, ALLOW_ALL, public=proxy_url) as gw:
                tools = [t.name for t in guard.tools("acme")]
                task = guard.task(
                    workspace="acme", agent="coder", user="alice", request="", tools=tools
                )
                proxy.sign_for(task, gw.url)
                through = _conformance(proxy_url + "/mcp", tmp_path / "gateway.json")
                task.end()
        finally:
            stop_proxy()
        guard.close()
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)
    record = os.environ.get("TETHER_CONFORMANCE_RESULTS")
    if record:
        Path(record).mkdir(parents=True, exist_ok=True)
        for name, results in (("upstream", direct), ("gateway", through)):
            (Path(record) / f"{name}.json").write_text(json.dumps(results, indent=2))
    passed_direct = {name for name, r in direct.items() if r["passed"]}
    assert len(passed_direct) >= 30, direct  # the fixture serves every scenario
    lost = {
        name: through.get(name) for name in passed_direct if not through.get(name, {}).get("passed")
    }
    assert not lost, lost
