"""schemathesis over the service's own /openapi.json: requests made up from the document for
every operation, with no credential, a credential of the wrong kind, and an admin token of every
workspace, against `tether serve` in its own process. Whatever they hold, the answer is never a
5xx, and a refusal is a problem document.

(Whether every response also matches its schema, and every schema-valid request is accepted,
is not yet asserted: the request schemas do not yet carry the name rules the service applies.)
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from test_server import Server, server  # noqa: F401 - the module's service

pytestmark = pytest.mark.sqlite  # one service for the module, on its home's SQLite file


@pytest.fixture(scope="module")
def api(server: Server) -> Any:  # noqa: F811
    document = httpx.get(
        f"{server.url}/openapi.json", headers={"Authorization": f"Bearer {server.admin}"}
    ).json()
    return schemathesis.openapi.from_dict(document)


CREDENTIALS = ("none", "wrong kind", "admin")


def test_no_request_the_document_describes_gets_a_5xx(api: Any, server: Server) -> None:  # noqa: F811
    """Every operation, 20 made-up requests each, each sent with each credential."""
    headers = {
        "none": {},
        "wrong kind": {"Authorization": f"DPoP {server.admin}"},
        "admin": {"Authorization": f"Bearer {server.admin}"},
    }
    failures: list[str] = []
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) > 30

    for operation in operations:
        fuzz(operation, server.url, headers, failures)
    assert failures == []


def fuzz(operation: Any, url: str, headers: dict[str, dict[str, str]], failures: list[str]) -> None:
    @settings(max_examples=20, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(operation.as_strategy())
    def each(case: Any) -> None:
        for name in CREDENTIALS:
            response = case.call(base_url=url, headers=headers[name])
            kind = response.headers.get("content-type") or [""]  # schemathesis: a list each
            problem = kind[0].startswith("application/problem")
            if (
                response.status_code >= 500
                or "Traceback" in response.text
                or (response.status_code >= 400 and not problem)
            ):
                failures.append(
                    f"{operation.method.upper()} {operation.path} ({name}): "
                    f"{response.status_code} {response.text[:200]}"
                )

    each()
