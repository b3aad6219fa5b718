"""What the decision log keeps of a call's arguments (`settings.audit`): real decisions through an
embedded Guard, then the stored record, for each mode; the setting's validation; and backtests,
which must count a cut record as not replayable instead of re-deciding it on altered data."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import delegate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import run_cli

from tether import Guard
from tether.audit.redaction import FULL, MARKER, Mode, Redaction
from tether.errors import InvalidInput
from tether.model import DecisionRecord, Effect, Stage

_string = {"type": "string"}
API_SCHEMA = {
    "type": "object",
    "properties": {
        "url": _string,
        "token": _string,
        "pin": {"type": "integer"},
        "headers": {
            "type": "object",
            "properties": {"Authorization": _string, "accept": _string},
        },
        "body": {
            "type": "object",
            "properties": {
                "password": _string,
                "note": _string,
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"token": _string, "name": _string},
                    },
                },
            },
        },
    },
}
POLICIES = {
    "p.cedar": """
@id("api-ok")
permit (principal, action == Action::"call_api", resource);

@id("no-admin-urls")
forbid (principal, action == Action::"call_api", resource)
when { context.args has url && context.args.url like "*admin*" };
"""
}
REDACT = {"audit": {"arguments": "redact", "redact": ["token", "authorization", "password"]}}
REQUEST = "call the API for me"
_SORTED = msgspec.json.Encoder(order="sorted").encode

CALL = {
    "url": "https://api.example/v1/things",
    "token": "tok-top-secret",
    "headers": {"Authorization": "Bearer abc-secret-123", "accept": "application/json"},
    "body": {
        "password": "hunter2-secret",
        "note": "keep this",
        "items": [{"token": "tok-item-secret", "name": "first"}, {"name": "second"}],
    },
}
SECRETS = ("tok-top-secret", "Bearer abc-secret-123", "hunter2-secret", "tok-item-secret")


def _workspace(guard: Guard, name: str, audit: dict[str, Any] | None) -> None:
    guard.add_workspace(name, settings={"audit": audit} if audit is not None else None)
    guard.register_agent(name, "coder", kind="coder", owner="alice@acme.com")
    guard.register_tool(
        name, "call_api", effects=["external"], sinks=["url"], args_schema=API_SCHEMA
    )
    guard.activate_policies(name, POLICIES)
    delegate(guard, name, "coder", users=("alice",))


@pytest.fixture
def make(home: Path) -> Iterator[Any]:
    """`make(audit_setting)`: an embedded Guard whose workspace `acme` has that setting."""
    guards: list[Guard] = []

    def _make(audit: dict[str, Any] | None) -> Guard:
        guard = Guard.embedded(home=home)
        guards.append(guard)
        _workspace(guard, "acme", audit)
        return guard

    yield _make
    for guard in guards:
        guard.close()


def _decide(guard: Guard, args: Any, *, request: str = REQUEST) -> DecisionRecord:
    with guard.task(
        workspace="acme", agent="coder", user="alice", request=request, tools=["call_api"]
    ) as task:
        decision = task.authorize("call_api", args)
    stored = guard.store.decision(decision.decision_id)
    assert stored is not None
    return stored


def _digest(args: Any) -> str:
    canonical = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _context(stored: DecisionRecord) -> dict[str, Any]:
    assert stored.context is not None
    context: dict[str, Any] = json.loads(stored.context)
    return context


def _text(stored: DecisionRecord) -> str:
    """Every column of the record, JSON columns decoded, as one text to search."""
    columns = msgspec.structs.asdict(stored)
    for name in ("args", "context", "reasons", "shadow"):
        if columns[name] is not None:
            columns[name] = json.loads(columns[name])
    return json.dumps(columns, ensure_ascii=False)


def test_full_is_the_default_and_keeps_everything(make: Any) -> None:
    stored = _decide(make(None), CALL)
    assert stored.effect is Effect.ALLOW
    assert json.loads(stored.args) == CALL and stored.args_digest == _digest(CALL)
    context = _context(stored)
    assert context["args"]["body"]["password"] == "hunter2-secret"
    assert "redaction" not in context


def test_redact_cuts_named_fields_at_any_depth_in_args_and_context(make: Any) -> None:
    stored = _decide(make(REDACT["audit"]), CALL)
    assert stored.effect is Effect.ALLOW and stored.args_digest == _digest(CALL)
    expected = {
        "url": "https://api.example/v1/things",
        "token": MARKER,
        "headers": {"Authorization": MARKER, "accept": "application/json"},  # any case
        "body": {
            "password": MARKER,
            "note": "keep this",
            "items": [{"token": MARKER, "name": "first"}, {"name": "second"}],
        },
    }
    assert json.loads(stored.args) == expected
    context = _context(stored)
    assert context["args"] == expected  # Cedar's form of these arguments is the JSON one
    assert context["redaction"] == {
        "arguments": "redact",
        "fields": ["authorization", "password", "token"],
    }
    assert context["task"]["request"] == REQUEST and context["provenance"] == {"url": "unseen"}
    assert not any(secret in _text(stored) for secret in SECRETS)


def test_redact_leaves_a_call_without_those_fields_as_it_was(make: Any) -> None:
    args = {"url": "https://api.example/", "body": {"note": "plain"}}
    stored = _decide(make(REDACT["audit"]), args)
    assert json.loads(stored.args) == args and "redaction" not in _context(stored)


def test_a_cut_value_is_cut_wherever_else_the_record_quotes_it(make: Any) -> None:
    guard = make({"redact": ["url", "pin"]})  # naming fields alone means `redact`
    url = "https://private.example/path"
    # The user's request holds the URL (so its provenance is `user`); a note repeats it.
    stored = _decide(guard, {"url": url, "body": {"note": f"see {url}"}}, request=f"open {url}")
    context = _context(stored)
    assert context["provenance"] == {"url": "user"}
    assert context["task"]["request"] == f"open {MARKER}"
    assert json.loads(stored.args) == {"url": MARKER, "body": {"note": f"see {MARKER}"}}
    assert url not in _text(stored)
    # A schema error quotes the value it refuses: the caller is told, the record is not.
    with guard.task(
        workspace="acme", agent="coder", user="alice", request="x", tools=["call_api"]
    ) as task:
        refused = task.authorize("call_api", {"pin": "pin-9876-secret"})
    assert refused.effect is Effect.DENY and "pin-9876-secret" in refused.reason
    stored = guard.store.decision(refused.decision_id)
    assert stored is not None and stored.stage is Stage.CONTEXT
    assert "pin-9876-secret" not in _text(stored) and MARKER in stored.reasons
    assert stored.args_digest == _digest({"pin": "pin-9876-secret"})


def test_digest_keeps_no_argument_values(make: Any) -> None:
    guard = make({"arguments": "digest"})
    stored = _decide(guard, CALL)
    assert stored.effect is Effect.ALLOW
    assert stored.args == "{}" and stored.args_digest == _digest(CALL)
    context = _context(stored)
    assert context["args"] == {} and context["redaction"] == {"arguments": "digest"}
    text = _text(stored)
    assert not any(v in text for v in (*SECRETS, "keep this", "api.example", "application/json"))
    # A policy deny, and a call denied before any workspace view (no token), keep none either.
    denied = _decide(guard, {"url": "https://admin.example/"})
    assert denied.effect is Effect.DENY and denied.args == "{}"
    anonymous = guard.authorize(None, "call_api", {"url": "https://x.example/"}, workspace="acme")
    stored = guard.store.decision(anonymous.decision_id)
    assert stored is not None and stored.stage is Stage.AUTHENTICATE and stored.args == "{}"
    assert stored.args_digest == _digest({"url": "https://x.example/"})


def _nested(depth: int) -> dict[str, Any]:
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(depth):
        inner["a"] = {}
        inner = inner["a"]
    return deep


def test_arguments_too_deep_to_walk_are_still_recorded_keeping_none(make: Any) -> None:
    args = {"token": "tok-deep-secret", "body": _nested(950)}
    stored = _decide(make(REDACT["audit"]), args)
    # Too deep to cut field by field: none kept (or, on a deeper stack, too deep to encode at
    # all: a placeholder naming the type, which the pipeline records for any such call).
    assert stored.stage is Stage.CONTEXT
    assert stored.args in ("{}", '{"unencodable":"dict"}')
    assert "tok-deep-secret" not in _text(stored)
    if stored.args == "{}":
        assert stored.args_digest == hashlib.sha256(_SORTED(args)).hexdigest()
    # The fallback itself, past any stack: everything withheld, as `digest` would.
    cut = Redaction(Mode.REDACT, frozenset({"token"})).apply(
        {"token": "tok-deep-secret", "body": _nested(5000)}, context=None, reasons=(), shadow=None
    )
    assert cut is not None and cut.args == "{}"


def test_a_call_aimed_at_another_workspace_keeps_no_more_than_either_allows(make: Any) -> None:
    guard = make(None)  # acme keeps everything...
    _workspace(guard, "beta", {"arguments": "digest"})  # ...beta keeps nothing
    with guard.task(
        workspace="acme", agent="coder", user="alice", request="x", tools=["call_api"]
    ) as task:
        decision = guard.authorize(task.id, "call_api", CALL, workspace="beta")
    stored = guard.store.decision(decision.decision_id)
    assert stored is not None and stored.stage is Stage.WORKSPACE
    # Filed in acme's log (where the token was issued), cut as beta's setting would cut it.
    assert stored.workspace == "acme" and stored.args == "{}"


def test_a_changed_setting_applies_to_the_next_decision(make: Any) -> None:
    guard = make(None)
    assert json.loads(_decide(guard, CALL).args) == CALL
    guard._control.set_settings("acme", REDACT)
    assert json.loads(_decide(guard, CALL).args)["token"] == MARKER


@pytest.mark.parametrize(
    ("audit", "message"),
    [
        ({"arguments": "some"}, "settings.audit.arguments must be full, redact or digest"),
        ({"arguments": "redact"}, "arguments: redact needs `redact`"),
        ({"arguments": "full", "redact": ["token"]}, "`redact` would cut nothing"),
        ({"redact": "token"}, "settings.audit: Expected `array`, got `str`"),
        ({"redact": [""]}, "an argument name cannot be empty"),
        ({"mode": "digest"}, "settings.audit: Object contains unknown field `mode`"),
        ("digest", "settings.audit: Expected `object`"),
    ],
)
def test_an_invalid_setting_is_refused_with_what_is_wrong(
    guard: Guard, audit: Any, message: str
) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        guard.add_workspace("other", settings={"audit": audit})
    with pytest.raises(InvalidInput, match=r"settings\.audit"):
        guard._control.set_settings("acme", {"audit": audit})


def test_an_invalid_setting_in_workspace_yaml_is_refused(guard: Guard, tmp_path: Path) -> None:
    (tmp_path / "workspace.yaml").write_text(
        "name: beta\nsettings:\n  audit: {arguments: secret}\n"
    )
    with pytest.raises(InvalidInput, match="must be full, redact or digest, not 'secret'"):
        guard.apply_directory(tmp_path)


def test_parsing() -> None:
    assert Redaction.from_settings({}) is FULL and Redaction.from_settings({"audit": None}) is FULL
    assert Redaction.from_settings({"audit": {"redact": ["Token"]}}) == Redaction(
        Mode.REDACT, frozenset({"token"})
    )
    assert Redaction.from_settings({"audit": {"arguments": "digest"}}).mode is Mode.DIGEST
    both = Redaction.strictest(
        [Redaction(Mode.REDACT, frozenset({"a"})), Redaction(Mode.REDACT, frozenset({"b"}))]
    )
    assert both == Redaction(Mode.REDACT, frozenset({"a", "b"}))
    assert Redaction.strictest([both, Redaction(Mode.DIGEST)]).mode is Mode.DIGEST


def test_backtest_counts_redacted_records_as_not_replayable(make: Any) -> None:
    guard = make(REDACT["audit"])
    _decide(guard, CALL)  # cut: tokens, a password
    _decide(guard, {"url": "https://admin.example/", "token": "t-secret"})  # cut, and denied
    _decide(guard, {"url": "https://api.example/"})  # nothing to cut: replayable
    candidate = guard.check_policies("acme", POLICIES)
    report = guard.backtest("acme", candidate, since=0)
    assert (report.replayed, report.redacted, report.not_replayable) == (1, 2, 0)
    assert report.changes == [] and report.unfaithful == []


def test_the_backtest_command_says_how_many_were_redacted(home: Path, tmp_path: Path) -> None:
    with Guard.embedded(home=home) as guard:
        _workspace(guard, "acme", {"arguments": "digest"})
        _decide(guard, CALL)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.cedar").write_text(POLICIES["p.cedar"])
    shown = run_cli(home, "policy", "backtest", str(policies), "--workspace", "acme")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "replayed 0 decisions" in shown.stdout
    assert "1 not replayable (arguments redacted)" in shown.stdout
    as_json = run_cli(home, "policy", "backtest", str(policies), "--workspace", "acme", "--json")
    assert json.loads(as_json.stdout)["redacted"] == 1


# -- the property: nothing of a cut field survives anywhere in the record ------------------------

# Values a record could not contain by chance (ids are lowercase hex, names are fixed).
_secret = st.text("ABCDEFGHJKLMNPQRSTUVWXYZ", min_size=6, max_size=12).map(lambda s: f"Q{s}")
_plain = st.text("abcdefghij -./", min_size=0, max_size=10)
_value = st.one_of(_plain, _secret)
_item = st.fixed_dictionaries({}, optional={"token": _secret, "name": _value})
_call = st.fixed_dictionaries(
    {},
    optional={
        "url": _value,
        "token": _secret,
        # an integer is schema-valid; a string is refused, and the refusal quotes it
        "pin": st.one_of(st.integers(1000, 9999), _secret),
        "headers": st.fixed_dictionaries({}, optional={"Authorization": _secret, "accept": _value}),
        "body": st.fixed_dictionaries(
            {},
            optional={"password": _secret, "note": _value, "items": st.lists(_item, max_size=3)},
        ),
    },
)
CUT = frozenset({"token", "authorization", "password", "pin"})


def _cut_values(value: Any, into: list[Any], cut: bool = False) -> list[Any]:
    """The leaf values of fields named in CUT, at any depth (what must not survive)."""
    if isinstance(value, dict):
        for key, item in value.items():
            _cut_values(item, into, cut or key.casefold() in CUT)
    elif isinstance(value, list):
        for item in value:
            _cut_values(item, into, cut)
    elif cut:
        into.append(value)
    return into


@pytest.fixture(scope="module")
def redacting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guard]:
    home = tmp_path_factory.mktemp("redaction") / "home"
    with Guard.embedded(home=home) as guard:
        _workspace(guard, "acme", {"arguments": "redact", "redact": sorted(CUT)})
        yield guard


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(args=_call)
def test_no_value_of_a_cut_field_appears_anywhere_in_the_record(
    redacting: Guard, args: dict[str, Any]
) -> None:
    stored = _decide(redacting, args)
    text = _text(stored)
    for value in _cut_values(args, []):
        # a number is looked for whole (1234 is not in the hash ...f12345...)
        found = re.search(rf"(?<![\w.]){re.escape(str(value))}(?![\w.])", text)
        assert (str(value) not in text) if isinstance(value, str) else not found, (value, text)
    assert stored.args_digest == _digest(args)
    # What was not cut, and repeats nothing cut, is kept as called.
    kept = json.loads(stored.args)
    secrets = [str(v) for v in _cut_values(args, [])]
    if "url" in args and not any(s in args["url"] for s in secrets):
        assert kept["url"] == args["url"]


def test_a_token_presented_for_the_wrong_task_is_recorded_as_its_workspace_redacts(
    make: Any,
) -> None:
    """Denied while authenticating (the caller names a task the token is not for): the token
    still says whose workspace the arguments belong to, so its setting applies."""
    guard = make(REDACT["audit"])
    with guard.task(
        workspace="acme", agent="coder", user="alice", request="x", tools=["call_api"]
    ) as task:
        decision = guard.authorize("task_someone_elses", "call_api", CALL, token=task.token)
    stored = guard.store.decision(decision.decision_id)
    assert stored is not None and stored.stage is Stage.AUTHENTICATE
    assert not any(secret in _text(stored) for secret in SECRETS)


def test_a_short_number_under_a_cut_field_is_cut_from_the_reasons_too(make: Any) -> None:
    guard = make({"arguments": "redact", "redact": ["token"]})
    stored = _decide(guard, {"url": "https://api.example/v1/x", "token": 123})
    assert json.loads(stored.args)["token"] == "[redacted]"
    said = " ".join(filter(None, (stored.args, stored.reasons, stored.context, stored.shadow)))
    assert "is not of type" in stored.reasons  # the schema error that quoted it...
    assert not re.search(r"(?<![\w.])123(?![\w.])", said)  # ...quotes it no more


def test_a_short_string_under_a_cut_field_is_cut_where_it_stands_alone(make: Any) -> None:
    """A three-character card code, as a string, repeated in a kept note: cut where it is a
    word of its own, not where it is part of another (a longer number, a word)."""
    guard = make({"arguments": "redact", "redact": ["password"]})
    body = {"password": "739", "note": "code 739, not 97391 or x739y; 739."}
    stored = _decide(guard, {"url": "https://api.example/v1/x", "body": body})
    kept = json.loads(stored.args)["body"]
    assert kept["password"] == "[redacted]"
    assert kept["note"] == "code [redacted], not 97391 or x739y; [redacted]."
    assert not re.search(r"(?<!\w)739(?!\w)", stored.context or "")


_integer = {"type": "integer"}
UNLOCK_SCHEMA = {
    "type": "object",
    "properties": {
        "card": _string,
        "pin": _integer,
        "confirm": _integer,
        "again": {"type": "number"},
        "other": _integer,
        "codes": {"type": "array", "items": _integer},
        "ok": {"type": "boolean"},
    },
}


def test_a_kept_number_repeating_a_cut_number_is_cut_but_a_boolean_is_not(home: Path) -> None:
    """A PIN and its confirmation: the confirmation is not a named field, but it repeats the
    withheld value, so it must go from `args` and the context's `args` as a string would. A
    boolean is not a number here, although True == 1."""
    with Guard.embedded(home=home) as guard:
        guard.add_workspace("bank", settings={"audit": {"redact": ["pin"]}})
        guard.register_agent("bank", "ops", kind="ops", owner="alice@acme.com")
        guard.register_tool("bank", "unlock", effects=["secret_access"], args_schema=UNLOCK_SCHEMA)
        guard.activate_policies("bank", {"p.cedar": "permit (principal, action, resource);"})
        delegate(guard, "bank", "ops", users=("alice",))

        def decide(args: dict[str, Any]) -> DecisionRecord:
            with guard.task(
                workspace="bank", agent="ops", user="alice", request="x", tools=["unlock"]
            ) as task:
                decision = task.authorize("unlock", args)
            assert decision.effect is Effect.ALLOW, decision.reason
            stored = guard.store.decision(decision.decision_id)
            assert stored is not None
            return stored

        args = {
            "card": "4111-xx",
            "pin": 739215,
            "confirm": 739215,
            "again": 739215.0,
            "other": 739216,
            "codes": [1, 739215],
        }
        stored = decide(args)
        expected = {
            "card": "4111-xx",
            "pin": MARKER,
            "confirm": MARKER,
            "again": MARKER,
            "other": 739216,
            "codes": [1, MARKER],
        }
        assert json.loads(stored.args) == expected
        assert _context(stored)["args"] == expected
        assert "739215" not in _text(stored) and stored.args_digest == _digest(args)

        stored = decide({"card": "4111-xx", "pin": 1, "confirm": 1, "ok": True})
        kept = {"card": "4111-xx", "pin": MARKER, "confirm": MARKER, "ok": True}
        assert json.loads(stored.args) == kept and _context(stored)["args"] == kept
