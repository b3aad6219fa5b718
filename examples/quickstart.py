"""The smallest complete Tether setup: one workspace, one agent, one user who delegates one tool
to it, two policies.

Run it with `python examples/quickstart.py`; it keeps its store in a temporary folder.
"""

from __future__ import annotations

import tempfile

from tether import ApprovalRequired, Denied, Guard

POLICIES = {
    "mail.cedar": """
@id("mail-inside")
@reason("mail inside acme is fine")
permit (principal, action == Action::"send_email", resource)
when { context.args.to like "*@acme.com" };

@id("ceo-needs-approval")
@approval("admin")
@reason("mail to the CEO needs a person's approval")
forbid (principal, action == Action::"send_email", resource)
when { context.args.to == "ceo@acme.com" }
unless { context.approved };
"""
}


def main() -> None:
    with Guard.embedded(home=tempfile.mkdtemp(prefix="tether-quickstart-")) as guard:
        guard.add_workspace("acme")
        guard.register_agent("acme", "coder", kind="coder", owner="alice@acme.com")

        @guard.tool(workspace="acme", effects=["external"], sinks=["to"])
        def send_email(to: str, body: str = "") -> str:
            return f"sent to {to}"

        guard.activate_policies("acme", POLICIES)
        guard.add_user("acme", "alice")
        # alice lets coder send mail for her: her tasks for it may hold send_email, no more.
        guard.grant("acme", user="alice", agent="coder", tools=["send_email"])

        with guard.task(
            workspace="acme",
            agent="coder",
            user="alice",
            request="Email the report to bob@acme.com",
            tools=["send_email"],
        ) as task:
            decision = task.authorize("send_email", {"to": "bob@acme.com"})
            print(decision.effect, "-", decision.reason)  # allow - mail inside acme is fine

            print(send_email("bob@acme.com", body="the report"))  # runs: allowed
            for recipient in ("eve@evil.io", "ceo@acme.com"):
                try:
                    send_email(recipient)
                except ApprovalRequired as exc:
                    print("needs approval:", exc.decision.reason)
                except Denied as exc:
                    print("denied:", exc.decision.reason)


if __name__ == "__main__":
    main()
