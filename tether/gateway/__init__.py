"""The MCP gateway: Tether in front of MCP servers, every request an agent makes decided in its
task (docs/gateway.md). `proxy.py` is the enforcement; `http.py` and `stdio.py` serve it;
`upstream.py` holds the upstream sessions; `tools.py` holds their tool lists against the
catalogue; `client_auth.py` is the agent's half of the HTTP authentication."""

from tether.gateway.config import GatewayConfig, load_config
from tether.gateway.proxy import Caller, Gateway

__all__ = ["Caller", "Gateway", "GatewayConfig", "load_config"]
