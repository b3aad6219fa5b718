"""A workspace's approval settings (`settings.approvals` in workspace.yaml):

    approvals:
      ttl: 900                       # seconds a request waits, and a grant lasts (default 900)
      self_approval_forbidden: [destructive, financial, secret_access]   # the default
      webhooks:
        - {url: "https://chat.example/hooks/tether", secret_env: TETHER_WEBHOOK_ACME__CHAT}

`self_approval_forbidden`: the effects for which the user an agent acts for may not approve
that agent's request themselves (a hijacked agent should not be one click from its own user's
yes on money, deletions or secrets). A webhook's secret is named by an environment variable and
never stored; only a variable meant as the webhook secret of that very workspace may be named
(`webhook_variable_prefix`), since whoever writes a workspace's settings chooses the URL too:
naming any other variable of the server (a database password, the master key, another
workspace's webhook secret) would get an HMAC keyed with it over a body they know sent to them,
an offline guessing oracle, and for another workspace's secret, notifications its receivers
take as genuine.
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
_SUFFIX = re.compile(r"[A-Z0-9]+(?:_[A-Z0-9]+)*")  # no `__`: the last one ends the workspace


def webhook_variable_prefix(workspace: str) -> str:
    """How the names of `workspace`'s webhook secret variables start: TETHER_WEBHOOK_, the
    workspace's name in capitals with `-` and `.` written `_`, then `__` (a name ends in a
    letter or digit, so two workspaces' variables never pass for each other's; names that
    differ only in `-`, `.` and `_` would, so a workspace named so is refused: control.py)."""
    return f"{VARIABLE_PREFIX}{workspace.upper().replace('-', '_').replace('.', '_')}__"


def is_webhook_secret(name: str, workspace: str) -> bool:
    """Whether `workspace`'s webhooks may be keyed by the environment variable `name`: only
    variables meant as that workspace's webhook secrets, never another secret of the server's
    environment, nor another workspace's."""
    start = webhook_variable_prefix(workspace)
    return name.startswith(start) and _SUFFIX.fullmatch(name[len(start) :]) is not None


class Webhook(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: str
    secret_env: str


class ApprovalSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ttl: float = DEFAULT_TTL
    self_approval_forbidden: tuple[str, ...] = DEFAULT_SELF_APPROVAL_FORBIDDEN
    webhooks: tuple[Webhook, ...] = ()

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], workspace: str) -> ApprovalSettings:
        """The settings of `workspace`; InvalidInput saying what is wrong."""
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
            if not is_webhook_secret(hook.secret_env, workspace):
                start = webhook_variable_prefix(workspace)
                raise InvalidInput(
                    f"settings.approvals.webhooks: secret_env {hook.secret_env[:80]!r} must name "
                    f"a variable of this workspace's: {start} then capitals, digits and single _ "
                    "(no other variable of the server, nor another workspace's, may key its "
                    "webhooks)"
                )
        return parsed
