"""A workspace's approval settings (`settings.approvals` in workspace.yaml):

    approvals:
      ttl: 900                       # seconds a request waits, and a grant lasts (default 900)
      self_approval_forbidden: [destructive, financial, secret_access]   # the default
      webhooks:
        - {url: "https://chat.example/hooks/tether", secret_env: TETHER_WEBHOOK_SECRET}

`self_approval_forbidden`: the effects for which the user an agent acts for may not approve
that agent's request themselves (a hijacked agent should not be one click from its own user's
yes on money, deletions or secrets). A webhook's secret is named by an environment variable and
never stored; only a variable whose name starts with `TETHER_WEBHOOK_` may be named, since
whoever writes a workspace's settings chooses the URL too: naming any other variable of the
server (a database password, the master key) would get its HMAC over a known body sent to them,
an offline guessing oracle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import msgspec

from tether.errors import InvalidInput

DEFAULT_TTL = 900.0
DEFAULT_SELF_APPROVAL_FORBIDDEN = ("destructive", "financial", "secret_access")
VARIABLE_PREFIX = "TETHER_WEBHOOK_"
_VARIABLE_NAME = re.compile(re.escape(VARIABLE_PREFIX) + r"[A-Za-z0-9_]+")


def is_webhook_secret(name: str) -> bool:
    """Whether a webhook may be keyed by the environment variable `name`: only variables meant
    as webhook secrets, never another secret of the server's environment."""
    return _VARIABLE_NAME.fullmatch(name) is not None


class Webhook(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: str
    secret_env: str


class ApprovalSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ttl: float = DEFAULT_TTL
    self_approval_forbidden: tuple[str, ...] = DEFAULT_SELF_APPROVAL_FORBIDDEN
    webhooks: tuple[Webhook, ...] = ()

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> ApprovalSettings:
        """The workspace's settings; InvalidInput saying what is wrong."""
        try:
            parsed = msgspec.convert(settings.get("approvals", {}), cls)
        except msgspec.ValidationError as exc:
            raise InvalidInput(f"settings.approvals: {exc}") from exc
        if not 30 <= parsed.ttl <= 7 * 86400:
            raise InvalidInput("settings.approvals.ttl must be between 30 s and 7 days")
        for hook in parsed.webhooks:
            url = urlsplit(hook.url)
            local = url.hostname in ("localhost", "127.0.0.1", "::1")
            if not url.netloc or not (url.scheme == "https" or (url.scheme == "http" and local)):
                raise InvalidInput(
                    "settings.approvals.webhooks: use an https URL (plain http only to this "
                    "machine): a notification carries the call's arguments"
                )
            if not is_webhook_secret(hook.secret_env):
                raise InvalidInput(
                    f"settings.approvals.webhooks: secret_env {hook.secret_env[:80]!r} must name a "
                    f"variable starting with {VARIABLE_PREFIX} (then letters, digits or _): no "
                    "other variable of the server may key a webhook"
                )
        return parsed
