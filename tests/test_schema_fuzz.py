"""schemathesis over the service's own /openapi.json: requests made up from the document for
every operation, against `tether serve` in its own process, each sent with no credential, with a
credential of the wrong kind (an admin token presented as a DPoP one), with an admin token of
every workspace, and (to the agents' operations) as an agent of a task of its own, its DPoP proof
made for that very request.

Every answer must be one the document describes: a status it declares (each operation lists its
refusals: there is no `default`), of a media type it declares, with the headers it declares and
a body valid against that response's schema (a refusal's too: a problem document). None is a 5xx
or a trace. And a request the document calls valid, sent by the admin or the agent, is not
refused as malformed (schemathesis's positive data acceptance): where the service holds names or
numbers to rules, the document states them. What no JSON Schema can state is set apart, each
with its reason: text in another language that does not compile (`SEMANTIC`, `YAML_TEXT`), and
a few fields whose rules are the service's (`VALID`: half of the requests get a valid value
there and are held to acceptance, the other half keep the made-up one and are not).

Each operation is tried twice: with path parameters made up (mostly resources that do not
exist: 404s, 401s and 403s are checked too), and with real ones (the starter workspace, its
agent and tool, a decision waiting for an approval), so that answers with content are checked.
A mismatch is a bug of the document or of the service: fix the one that is wrong, not this test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from conftest import STARTER
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from test_server import Agent, Server, admin, server  # noqa: F401 - the module's service

from tether.credentials import make_proof
from tether.identity import generate_key

pytestmark = pytest.mark.sqlite  # one service for the module, on its home's SQLite file

EXAMPLES = 15  # made-up requests per operation and pass, each sent with each credential
CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# A 400 a schema-valid request may get: its text, in a language of its own, does not compile.
# Any other 400 to a request the document calls valid is a rule the document does not state.
SEMANTIC = {
    "urn:tether:problem:PolicyError": "Cedar policies that do not validate",
    "urn:tether:problem:CatalogueError": "a tool's JSON Schema Tether cannot type, or sinks "
    "that are not among its arguments",
}
# Operations whose body carries such text without a problem type of its own to tell it by.
YAML_TEXT = {
    ("POST", "/v1/workspaces/{workspace}/apply"): "workspace.yaml and catalogue.yaml",
    ("POST", "/v1/workspaces/{workspace}/policies/test"): "the test cases' YAML",
}
# Fields whose rules no JSON Schema states (the service checks them): half of the requests that
# carry one get a valid value in its place, and only those are held to positive data acceptance.
VALID = {
    ("POST", "/v1/workspaces"): {  # hours in order, a time zone that exists, webhook URLs...
        "settings": st.sampled_from(
            [
                {},
                {"working_hours": {"start": 8, "end": 18, "timezone": "Europe/Paris"}},
                {"approvals": {"ttl": 600}},
                {"audit": {"arguments": "digest"}},
            ]
        )
    },
    ("POST", "/v1/workspaces/{workspace}/agents/{agent}/keys"): {  # a point of P-256
        "jwk": st.builds(lambda: generate_key().as_dict(private=False))
    },
    ("PUT", "/v1/workspaces/{workspace}/tools/{tool}"): {  # a schema Tether can type, sinks in it
        "args_schema": st.sampled_from(
            [None, {"type": "object", "properties": {"path": {"type": "string"}}}]
        ),
        "sinks": st.just([]),
    },
}


@pytest.fixture(scope="module")
def api(server: Server) -> Any:  # noqa: F811
    document = httpx.get(
        f"{server.url}/openapi.json", headers={"Authorization": f"Bearer {server.admin}"}
    ).json()
    return schemathesis.openapi.from_dict(document)


@pytest.fixture(scope="module")
def real(server: Server) -> dict[str, str]:  # noqa: F811
    """Path parameters naming resources that exist: the starter workspace's, and a decision
    waiting for an approval (a refund above 100.00: the starter's policies ask for one, once a
    policy permits refunds at all)."""
    files = {p.name: p.read_text() for p in (STARTER / "policies").glob("*.cedar")}
    files["refunds.cedar"] = 'permit (principal, action == Action::"refund_customer", resource);'
    with admin(server, server.admin) as alice:
        activated = alice.post("/v1/workspaces/acme/policies", json={"files": files})
        assert activated.status_code == 200, activated.text
        granted = alice.post(
            "/v1/workspaces/acme/grants",
            json={"user": "alice", "agent": "assistant", "tools": ["refund_customer"]},
        )
        assert granted.status_code == 201, granted.text
        checked = alice.post(
            "/v1/workspaces/acme/check",
            json={
                "agent": "assistant",
                "user": "alice",
                "tool": "refund_customer",
                "args": {"customer": "c_1", "amount": 500},
            },
        )
    assert checked.status_code == 200, checked.text
    decision = checked.json()
    assert decision["approval_id"], decision
    return {
        "workspace": "acme",
        "agent": "coder",
        "tool": "read_file",
        "grant_id": server.grant,
        "task_id": decision["task_id"],
        "decision_id": decision["decision_id"],
        "approval_id": decision["approval_id"],
        "kid": "kid_x",
    }


def test_every_answer_is_one_the_document_describes(
    api: Any,
    server: Server,  # noqa: F811
    real: dict[str, str],
) -> None:
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) > 30
    failures: list[str] = []
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        fuzz(operation, server, {}, failures)
        if names:
            fuzz(operation, server, {k: v for k, v in real.items() if k in names}, failures)
    assert failures == [], "\n".join(sorted(set(failures)))


Credential = Callable[[Any], dict[str, str]]


def credentials(operation: Any, server: Server, path: dict[str, str]) -> dict[str, Credential]:  # noqa: F811
    """The credentials each request is sent with: each gives the request's headers."""
    found: dict[str, Credential] = {
        "none": lambda case: {},
        "wrong kind": lambda case: {"Authorization": f"DPoP {server.admin}"},
        "admin": lambda case: {"Authorization": f"Bearer {server.admin}"},
    }
    if operation.definition.raw.get("x-tether-auth") == "agent":
        agent = Agent(server)  # a task of its own: this operation may end it
        assert agent.start().status_code == 200
        if "task_id" in path:
            path["task_id"] = agent.task_id

        def agent_of_the_task(case: Any) -> dict[str, str]:
            url = case.as_transport_kwargs(base_url=server.url)["url"]
            proof = make_proof(
                agent.key,
                htm=case.method.upper(),
                htu=url,
                now=time.time(),
                access_token=agent.token,
            )
            return {"Authorization": f"DPoP {agent.token}", "DPoP": proof}

        found["agent"] = agent_of_the_task
    return found


def fuzz(operation: Any, server: Server, path: dict[str, str], failures: list[str]) -> None:  # noqa: F811
    path = dict(path)
    sent_with = credentials(operation, server, path)
    label = f"{operation.method.upper()} {operation.path}"
    yaml_text = (operation.method.upper(), operation.path) in YAML_TEXT
    valid = VALID.get((operation.method.upper(), operation.path), {})

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(operation.as_strategy(path_parameters=path or None), st.data())
    def each(case: Any, data: st.DataObject) -> None:
        made_up = False
        if valid and isinstance(case.body, dict) and valid.keys() & case.body.keys():
            if data.draw(st.booleans()):
                for field, values in valid.items():
                    case.body[field] = data.draw(values)
            else:
                made_up = True
        for name, credential in sent_with.items():
            headers = credential(case)
            response = case.call(base_url=server.url, headers=headers)
            where = f"{label} ({name}, {'real' if path else 'made-up'} path)"
            status, text = response.status_code, response.text
            if status >= 500 or "Traceback" in text:
                failures.append(f"{where}: {status} {text[:300]}")
                continue
            checks = list(CONFORMANCE)
            if name in ("admin", "agent") and not (yaml_text or made_up or _semantic(response)):
                checks.append(positive_data_acceptance)
            try:
                case.validate_response(response, checks=checks, headers=headers)
            except (FailureGroup, Failure) as failed:
                for failure in getattr(failed, "exceptions", [failed]):
                    failures.append(
                        f"{where}: {failure.title}: {status} {text[:300]}"
                        f" -- sent {case.path_parameters} {case.query} {str(case.body)[:300]}"
                    )

    each()


def _semantic(response: Any) -> bool:
    if response.status_code != 400:
        return False
    try:
        return response.json().get("type") in SEMANTIC
    except ValueError:
        return False
