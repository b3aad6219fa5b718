"""The HTTP API (DESIGN.md section 3, "server"): the decision point, credentials, approvals, audit
and administration behind `/v1`, for agents written in any language and for the people and
services that run them. `tether.server.app.create_app` makes the application; this package's
root imports nothing, so the CLI's other commands do not load the web stack."""
