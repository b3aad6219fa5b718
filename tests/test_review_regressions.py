"""Regressions found by adversarial review: each of these once let a call through, or escaped
the record. Kept apart so their history is plain."""

from __future__ import annotations

import enum
import re
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether import Denied, Guard
from tether.catalogue import compile_tool
from tether.model import Effect, Tool
from tether.policy.fastpath import glob_match


class Recipient(enum.StrEnum):
    TEAM = "team@acme.com"
    CEO = "ceo@acme.com"


class Level(enum.IntEnum):
    LOW = 1
    TOP = 5


def test_enum_arguments_cannot_slip_past_an_equality_forbid(guard: Guard) -> None:
    @guard.tool(workspace="acme", effects=["external"], name="notify")
    def notify(to: Recipient, level: Level, cc: list[Recipient] | None = None) -> str:
        return "sent"

    guard.activate_policies(
        "acme",
        {
            "p.cedar": """
@id("all") permit (principal, action == Action::"notify", resource);
@id("no-ceo") forbid (principal, action == Action::"notify", resource)
  when { context.args.to == "ceo@acme.com" };
@id("no-top") forbid (principal, action == Action::"notify", resource)
  when { context.args.level == 5 };
@id("no-ceo-cc") forbid (principal, action == Action::"notify", resource)
  when { context.args has cc && context.args.cc.contains("ceo@acme.com") };
"""
        },
    )
    with guard.task(workspace="acme", agent="coder", user="a", request="", tools=["notify"]):
        assert notify(Recipient.TEAM, Level.LOW) == "sent"
        for call, policy in (
            ((Recipient.CEO, Level.LOW), "no-ceo"),
            ((Recipient.TEAM, Level.TOP), "no-top"),
            ((Recipient.TEAM, Level.LOW, [Recipient.CEO]), "no-ceo-cc"),
        ):
            with pytest.raises(Denied) as denied:
                notify(*call)
            assert denied.value.decision.reasons[0].policy == policy


def test_a_path_read_inside_a_record_literal_reaches_the_policy(guard: Guard) -> None:
    guard.activate_policies(
        "acme",
        {
            "p.cedar": """
@id("mail") permit (principal, action == Action::"send_email", resource)
  when { context.args.to like "*@acme.com" };
@id("no-subject") forbid (principal, action == Action::"send_email", resource)
  when { {"a": context.args}.a has subject };
"""
        },
    )
    with guard.task(
        workspace="acme", agent="coder", user="a", request="", tools=["send_email"]
    ) as t:
        assert t.authorize("send_email", {"to": "a@acme.com"}).allowed
        d = t.authorize("send_email", {"to": "a@acme.com", "subject": "x"})
    assert d.effect is Effect.DENY and d.reasons[0].policy == "no-subject"


def test_concurrent_calls_in_one_task_respect_a_call_limit(guard: Guard) -> None:
    guard.activate_policies(
        "acme",
        {
            "p.cedar": """
@id("mail") permit (principal, action == Action::"send_email", resource);
@id("three") forbid (principal, action, resource) when { context.task.calls >= 3 };
"""
        },
    )
    allowed: list[bool] = []
    barrier = threading.Barrier(20)
    with guard.task(
        workspace="acme", agent="coder", user="a", request="", tools=["send_email"]
    ) as t:

        def call() -> None:
            barrier.wait()
            allowed.append(t.authorize("send_email", {"to": "x"}).allowed)

        threads = [threading.Thread(target=call) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert allowed.count(True) == 3 and len(allowed) == 20


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.text(alphabet="ab*", max_size=4), min_size=1, max_size=4),
    st.text(alphabet="ab*\n", max_size=12),
)
def test_glob_match_is_fullmatch_of_the_same_pattern(segments: list[str], value: str) -> None:
    reference = re.compile(".*".join(re.escape(s) for s in segments), re.DOTALL)
    assert glob_match(segments, value) == (reference.fullmatch(value) is not None)


@pytest.fixture
def deadline() -> Iterator[None]:
    """Fail (rather than hang) if the body takes 10,000 times longer than it should."""

    def expired(*_: Any) -> None:
        raise TimeoutError("took more than 10 s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(10)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_like_takes_linear_time_on_crafted_arguments(guard: Guard, deadline: None) -> None:
    """A backtracking regex took minutes on this; a 1 MB argument must not stall decisions."""
    guard.activate_policies(
        "acme",
        {
            "p.cedar": """
@id("mail") permit (principal, action == Action::"send_email", resource);
@id("no-secrets") forbid (principal, action == Action::"send_email", resource)
  when { context.args has subject && context.args.subject like "*a*a*a*b" };
"""
        },
    )
    with guard.task(
        workspace="acme", agent="coder", user="a", request="", tools=["send_email"]
    ) as t:
        assert t.authorize("send_email", {"to": "x", "subject": "a" * 900_000}).allowed
        assert not t.authorize("send_email", {"to": "x", "subject": "a" * 900_000 + "b"}).allowed


def test_a_decision_on_unencodably_deep_arguments_is_still_recorded(guard: Guard) -> None:
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    with guard.task(
        workspace="acme", agent="coder", user="a", request="", tools=["send_email"]
    ) as t:
        d = t.authorize("send_email", {"to": deep})
    assert d.effect is Effect.DENY and d.reasons[0].stage.value == "context"
    (record,) = [r for r in guard.store.decisions(limit=5) if r.id == d.decision_id]
    assert record.args == '{"unencodable":"dict"}'


def test_a_whole_float_is_the_same_union_member_as_the_integer() -> None:
    tool = compile_tool(
        Tool(
            workspace="acme",
            name="t",
            effects=("read",),
            args_schema={
                "type": "object",
                "properties": {"v": {"type": ["integer", "number", "string"]}},
            },
        )
    )
    assert tool.cedar_args({"v": 5.0}) == tool.cedar_args({"v": 5}) == {"v": {"integer": 5}}
    assert tool.cedar_args({"v": 5.5})["v"] == {
        "number": {"__extn": {"fn": "decimal", "arg": "5.5"}}
    }
