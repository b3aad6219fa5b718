"""SPIFFE ids for agents: `spiffe://<trust-domain>/ws/<workspace>/agent/<name>`."""

from __future__ import annotations

import re

from tether.errors import InvalidInput

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")


def check_trust_domain(trust_domain: str) -> str:
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        raise InvalidInput(
            f"trust domain {trust_domain!r} is not allowed: use lowercase letters, digits, '.', "
            "'_' and '-' (SPIFFE trust domain rules)"
        )
    return trust_domain


def agent_spiffe_id(trust_domain: str, workspace: str, agent: str) -> str:
    return f"spiffe://{trust_domain}/ws/{workspace}/agent/{agent}"
