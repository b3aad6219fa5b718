"""SPIFFE ids for agents: `spiffe://<trust-domain>/ws/<workspace>/agent/<name>`."""

from __future__ import annotations

import re

from tether.errors import InvalidInput

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
TRUST_DOMAIN_PATTERN = f"^{_TRUST_DOMAIN.pattern}$"  # as JSON Schema says it (the API's document)


def check_trust_domain(trust_domain: str) -> str:
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        raise InvalidInput(
            f"trust domain {trust_domain!r} is not allowed: use lowercase letters, digits, '.', "
            "'_' and '-' (SPIFFE trust domain rules)"
        )
    return trust_domain


def agent_spiffe_id(trust_domain: str, workspace: str, agent: str) -> str:
    return f"spiffe://{trust_domain}/ws/{workspace}/agent/{agent}"


_AGENT_ID = re.compile(
    r"spiffe://([a-z0-9._-]{1,255})/ws/([a-z0-9._-]{1,64})/agent/([a-z0-9._-]{1,64})"
)


def parse_agent_spiffe_id(spiffe_id: str) -> tuple[str, str, str]:
    """(trust domain, workspace, agent) of a Tether agent id; raises InvalidInput otherwise."""
    match = _AGENT_ID.fullmatch(spiffe_id) if isinstance(spiffe_id, str) else None
    if match is None:
        raise InvalidInput(
            f"{spiffe_id!r} is not an agent id (spiffe://<trust-domain>/ws/<workspace>/agent/<name>)"
        )
    return match.group(1), match.group(2), match.group(3)
