"""Agent identities. Public names: `agent_spiffe_id`, `check_trust_domain`."""

from tether.identity.spiffe import agent_spiffe_id, check_trust_domain

__all__ = ["agent_spiffe_id", "check_trust_domain"]
