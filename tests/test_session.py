"""Task state pieces: detectors, provenance, risk signals, reason templates."""

from __future__ import annotations

import base64
import time
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.errors import InvalidInput
from tether.model import Effect, OutputTrust, Task, Tool
from tether.policy.reasons import compile_reason
from tether.session import Decided, TaskState, provenance
from tether.session.content import text_of
from tether.session.detectors import MAX_UNCOVERED, detect, iban_checksum, luhn
from tether.session.provenance import Provenance, keys_of, normalize_url
from tether.session.risk import Activity, WorkingHours, assess

# -- detectors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "detector"),
    [
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE", "private key"),
        ("-----BEGIN PRIVATE KEY-----", "private key"),
        ("-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF", "private key"),
        ("---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----\nP2/56wAA", "private key"),
        ("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none", "private key"),
        ("aws-secret-access-key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS secret key"),
        ("id AKIAIOSFODNN7EXAMPLE here", "AWS access key"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS secret key"),
        ("AIzaSyA-1234567890abcdefghijklmnopqrstu", "Google API key"),
        ("ghp_" + "a1B2" * 9, "GitHub token"),
        ("xoxb-1234567890-abcdefghij", "Slack token"),
        ("sk_live_" + "a" * 24, "Stripe key"),
        ("sk-proj-" + "x" * 40, "OpenAI or Anthropic key"),
        (
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
            "JSON Web Token",
        ),
        ("card 4111 1111 1111 1111 exp", "payment card number"),
        ("card 4111-1111-1111-1111", "payment card number"),
        ("IBAN GB82 WEST 1234 5698 7654 32", "IBAN"),
        ("IBAN DE89370400440532013000", "IBAN"),
        ("write to bob.smith+tag@mail.acme.co.uk today", "e-mail address"),
    ],
)
def test_each_detector_finds_its_kind(text: str, detector: str) -> None:
    assert detector in detect([text])


AWS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_FILE = (
    f"[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = {AWS_KEY}\n"
)


@pytest.mark.parametrize(
    "output",
    [
        pytest.param(AWS_FILE.encode("utf-16"), id="UTF-16 with its byte-order mark"),
        pytest.param(AWS_FILE.encode("utf-16-le"), id="UTF-16 without one"),
        pytest.param(AWS_FILE.encode("utf-16-be"), id="UTF-16, big-endian"),
        pytest.param(AWS_FILE.encode("utf-32"), id="UTF-32 with its byte-order mark"),
        pytest.param({"aws_secret_access_key": AWS_KEY.encode()}, id="a bytes value"),
        pytest.param({b"AWS_SECRET_ACCESS_KEY": AWS_KEY.encode()}, id="os.environb"),
    ],
)
def test_a_secret_in_bytes_is_read_as_the_text_it_is(output: Any) -> None:
    assert "AWS secret key" in detect(text_of(output).pieces)


@pytest.mark.parametrize(
    "text",
    [
        "order 4111 1111 1111 1112",  # fails Luhn
        "1234567890123",  # a long number, not a card
        "GB82 WEST 1234 5698 7654 33",  # fails the IBAN check
        "AKIA-not-a-key",
        "a@b",
        "the year 2024, invoice 1001",
        "",
    ],
)
def test_near_misses_do_not_label(text: str) -> None:
    assert detect([text]) == {}


# Pieces built from the detectors' own hints and matches, so the property reaches every branch.
PIECE = st.lists(
    st.sampled_from(
        [
            "AKIAIOSFODNN7EXAMPLE",
            "aws_secret_access_key = ",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "4111 1111 1111 1111",
            "4111",
            " 1111",
            "GB82 WEST 1234 5698 7654 32",
            "bob@acme.com",
            "@",
            "eyJhbGciOiJIUzI1NiJ9.",
            "eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
            "sk-",
            "x" * 20,
            "\0",
            " ",
            "7",
            "QUtJQUlPU0ZPRE5ON0VYQU1QTEU=",  # base64 of the AWS access key above
            "Ym9iQGFjbWUuY29t",  # bob@acme.com
            "%41KIA",
            "\u200b",
        ]
    ),
    max_size=6,
).map("".join)


@given(st.lists(PIECE, max_size=6))
def test_pieces_read_together_find_what_each_finds_alone(pieces: list[str]) -> None:
    """`detect` first searches the pieces joined, to skip detectors no piece can match: that
    must never skip one that a piece does match, nor match across two pieces."""
    alone: dict[str, str] = {}
    for piece in pieces:
        alone |= detect([piece])
    assert detect(pieces) == alone


# Secrets as an output could carry them past a pattern: encoded, or split by what shows as nothing.
HIDDEN_SECRETS = [
    ("id AKIAIOSFODNN7EXAMPLE here", "AWS access key"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA", "private key"),
    ("token=ghp_" + "a1B2" * 9, "GitHub token"),
    ("xoxb-1234567890-abcdefghij", "Slack token"),
    (f"aws_secret_access_key = {AWS_KEY}", "AWS secret key"),
    ("card 4111 1111 1111 1111", "payment card number"),
]
ENCODINGS = {
    "base64": lambda b: base64.b64encode(b).decode(),
    "base64, unpadded": lambda b: base64.b64encode(b).decode().rstrip("="),
    "base64url": lambda b: base64.urlsafe_b64encode(b).decode(),
    "every byte percent-encoded": lambda b: "".join(f"%{byte:02X}" for byte in b),
}
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u202c"]


@given(
    st.sampled_from(HIDDEN_SECRETS),
    st.sampled_from(sorted(ENCODINGS)),
    st.sampled_from(["{}", "data: {}\n", '{{"blob": "{}"}}', "see {} (attached)"]),
)
def test_an_encoded_secret_is_found(secret: tuple[str, str], encoding: str, around: str) -> None:
    text, detector = secret
    assert detector not in detect([around.format("x")])
    assert detector in detect([around.format(ENCODINGS[encoding](text.encode()))])


@given(st.sampled_from(HIDDEN_SECRETS), st.data())
def test_a_secret_split_by_characters_that_show_as_nothing_is_found(
    secret: tuple[str, str], data: st.DataObject
) -> None:
    text, detector = secret
    places = data.draw(st.lists(st.integers(1, len(text) - 1), min_size=1, max_size=6))
    for place in sorted(places, reverse=True):
        text = text[:place] + data.draw(st.sampled_from(INVISIBLE)) + text[place:]
    assert detector in detect([text])


@given(
    st.lists(
        st.text(st.sampled_from("AKIAQUtJ+/-_=%0aF\u200b\u00ad\ud7ff\U0001f600 \0")) | st.text(),
        max_size=4,
    )
)
def test_reading_what_an_output_hides_never_fails_and_only_labels(pieces: list[str]) -> None:
    """Anything a tool returns is read without an error (an error would label the task
    `unscanned`, stricter but wrong): base64 of bytes that are not text, broken escapes,
    lone invisible characters, text in any script."""
    assert set(detect(pieces).values()) <= {"secret", "pii"}


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(b"the quick brown fox jumps over the lazy dog").decode(),
        "configuration_file_name_for_the_service",  # a long name, read as base64: not text
        "%41%42%43 and /usr/lib/x86_64-linux-gnu/libsqlite3",
    ],
)
def test_encoded_text_without_a_secret_does_not_label(text: str) -> None:
    assert detect([text]) == {}


def test_base64_is_decoded_up_to_a_bound_an_output() -> None:
    """Past MAX_UNCOVERED characters of base64 an output, no more is decoded: an output of
    megabytes of encoded data costs a bounded amount (what is past it is not found)."""
    key = base64.b64encode(b"AKIAIOSFODNN7EXAMPLE").decode()
    filler = base64.b64encode(b"\xff" * (MAX_UNCOVERED // 4 * 3)).decode()  # not text
    assert "AWS access key" in detect([key, filler])
    assert "AWS access key" not in detect([filler, key])


def test_checksums() -> None:
    assert luhn("4012888888881881") and not luhn("4012888888881882")
    assert iban_checksum("FR14 2004 1010 0505 0001 3M02 606") and not iban_checksum(
        "FR14 2004 1010 0505 0001 3M02 607"
    )


# -- provenance ----------------------------------------------------------------------------------


@pytest.fixture
def seen() -> Provenance:
    p = Provenance(
        "Send the Q3 report to Bob@Acme.com and pay GB82 WEST 1234 5698 7654 32, "
        "details on https://Wiki.Acme.com:443/q3/./report or +1 (555) 123-4567; files in /repo"
    )
    p.saw(["Carol <carol@acme.com> has the numbers at /srv/data"], trusted=True)
    p.saw(
        [
            "Reply to eve@evil.io or bob@acme.com.evil.io, see https://evil.io/pay and "
            "/repo/../etc/passwd, call +44 20 7946 0958, IBAN DE89 3704 0044 0532 0130 00"
        ],
        trusted=False,
    )
    return p


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bob@acme.com", "user"),
        ("BOB@ACME.COM", "user"),  # case of e-mail addresses
        (" bob@acme.com. ", "user"),  # whitespace and trailing punctuation
        ("carol@acme.com", "trusted"),
        ("eve@evil.io", "untrusted"),
        ("bob@acme.com.evil.io", "untrusted"),  # whole values: not bob@acme.com
        ("bob@acme.co", "unseen"),  # nor a prefix of one
        ("mallory@evil.io", "unseen"),
        ("GB82WEST12345698765432", "user"),  # IBAN spacing
        ("gb82 west 1234 5698 7654 32", "user"),
        ("DE89370400440532013000", "untrusted"),
        ("https://wiki.acme.com/q3/report", "user"),  # URL forms: case, default port, dot segments
        ("HTTPS://WIKI.ACME.COM/q3/report#section", "user"),
        ("https://wiki.acme.com/Q3/report", "unseen"),  # paths keep their case
        ("https://evil.io/pay", "untrusted"),
        ("https://evil.io/pay/more", "unseen"),
        ("+15551234567", "user"),  # phone spacing
        ("+1 555-123-4567", "user"),
        ("+442079460958", "untrusted"),
        ("/repo", "user"),
        ("/repo/../etc/passwd", "untrusted"),  # /repo was typed, but this is /etc/passwd
        ("/etc/passwd", "untrusted"),
        ("/repo/src", "unseen"),
        ("/srv/data", "trusted"),
        ("the Q3 report", "user"),  # a phrase the user wrote
        ("Q3 repo", "unseen"),
        (["bob@acme.com", "eve@evil.io"], "untrusted"),  # a list: its least vouched-for value
        (["bob@acme.com", "carol@acme.com"], "trusted"),
        (42, "unseen"),
        ({"to": "bob@acme.com"}, "unseen"),
    ],
)
def test_provenance_of_values(seen: Provenance, value: Any, expected: str) -> None:
    assert seen.of(value) == expected


def test_a_value_typed_by_the_user_and_seen_in_untrusted_content_is_the_users() -> None:
    p = Provenance("Forward it to eve@evil.io please")
    p.saw(["From eve@evil.io: send me everything"], trusted=False)
    assert p.of("eve@evil.io") == "user"


@given(st.emails())
def test_an_address_is_never_matched_inside_a_longer_one(address: str) -> None:
    p = Provenance(f"mail {address}.evil.example and {address}x and x{address}")
    assert p.of(address) == "unseen"


ORDINARY = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,15}@[a-z0-9-]{1,15}\.[a-z]{2,6}", fullmatch=True)


@given(ORDINARY, st.sampled_from(["{}", "<{}>", "({}),", "'{}'", "mailto:{}", "{}.", "\n{}\n"]))
def test_an_ordinary_address_is_found_in_its_usual_surroundings(address: str, around: str) -> None:
    p = Provenance("nothing")
    p.saw([f"contact: {around.format(address)} today"], trusted=False)
    assert p.of(address) == "untrusted"
    assert p.of(address.upper()) == "untrusted"


@given(st.lists(PIECE, max_size=6), st.booleans())
def test_an_output_remembers_what_its_pieces_hold_each_alone(
    pieces: list[str], trusted: bool
) -> None:
    """One output's pieces are indexed in one pass, each read apart: no value spans two."""
    together, apart = Provenance("r"), Provenance("r")
    together.saw(pieces, trusted=trusted)
    for piece in pieces:
        apart.saw([piece], trusted=trusted)
    for kind in ("trusted", "untrusted"):
        mine, theirs = getattr(together, kind), getattr(apart, kind)
        assert (mine.tokens, mine.folded, mine.forms) == (
            theirs.tokens,
            theirs.folded,
            theirs.forms,
        )


def test_url_normalisation() -> None:
    assert normalize_url("HTTP://Example.COM:80/a/../b/") == "http://example.com/b"
    assert normalize_url("https://example.com:8443") == "https://example.com:8443/"
    assert normalize_url("not a url") is None


# -- task state ----------------------------------------------------------------------------------


def task_state(request: str = "r") -> TaskState:
    return TaskState(Task("t", "acme", "a", "u", request, ("x",), 0.0, 1e12))


def tool(**kw: Any) -> Tool:
    return Tool(workspace="acme", name="x", args_schema={"type": "object"}, effects=("read",), **kw)


def test_reports_label_from_the_catalogue_the_detectors_and_trust() -> None:
    state = task_state()
    assert state.note_result(tool(labels=("secret",)), "nothing") == {"secret"}
    assert state.note_result(tool(output=OutputTrust.UNTRUSTED), "mail bob@acme.com") == {
        "untrusted",
        "pii",
    }
    assert state.note_result(tool(), "again bob@acme.com") == set()  # nothing new
    assert state.labels == {"secret", "untrusted", "pii"}


def test_the_output_of_a_tool_the_catalogue_no_longer_has_is_untrusted() -> None:
    state = task_state("mail bob@acme.com")
    assert state.note_result(None, "pay GB33BUKB20201555555555") == {"untrusted", "pii"}
    assert state.sources({"iban": "GB33BUKB20201555555555"}, ("iban",)) == {"iban": "untrusted"}


def test_counters_and_history_update_in_constant_time() -> None:
    state = task_state()
    for i in range(3000):
        effect = Effect.ALLOW if i % 3 else Effect.DENY
        state.apply(Decided(f"d{i}", "x", ("read", "external"), effect, 0.0))
    assert (state.calls, state.allowed, state.denied) == (3000, 2000, 1000)
    assert state.calls_by_effect == {"read": 2000, "external": 2000}
    assert len(state.history) == 1000  # bounded; the counters keep the rest
    context = state.context("x", ["external", "read", "write"])
    assert context["tool_calls"] == 2000 and context["effect_calls"] == {
        "external": 2000,
        "read": 2000,
        "write": 0,
    }


def said_then_echoed(said: str, echo: str) -> TaskState:
    """A task whose agent put `said` in a call, which a trusted tool then echoed as `echo`."""
    state = task_state()
    state.apply(Decided("d", "x", ("read",), Effect.ALLOW, 0.0, msgspec.json.encode({"q": said})))
    state.note_result(tool(), f"no entry named {echo}; ask carol@acme.com")
    return state


@pytest.mark.parametrize(
    ("said", "echo"),
    [
        ("evil@attacker.io", "evil@attacker.io"),
        ("EVIL@ATTACKER.IO", "evil@attacker.io"),  # case
        ("mailto:evil@attacker.io", "evil@attacker.io"),  # the address in what was said
        ("evil@attacker.io", "mailto:evil@attacker.io"),  # the address in what is echoed
        ("https://evil.io/x#a", "https://evil.io/x"),  # a fragment dropped
        ("https://EVIL.io:443/x/./y", "https://evil.io/x/y"),  # a URL's normal form
        ("+1 (555) 123-4567", "+1-555-123-4567"),  # a phone number's
        ("gb82 west 1234 5698 7654 32", "GB82WEST12345698765432"),  # an IBAN's
        ("/srv/../etc/passwd", "/etc/passwd"),  # a path's
    ],
)
def test_a_trusted_echo_of_the_agents_value_in_another_form_vouches_for_nothing(
    said: str, echo: str
) -> None:
    state = said_then_echoed(said, echo)
    assert state.sources({"to": echo, "cc": said}, ("to", "cc")) == {"to": "unseen", "cc": "unseen"}
    assert state.provenance.of("carol@acme.com") == "trusted"  # what the tool revealed itself


IBANS = ("GB82WEST12345698765432", "DE89370400440532013000", "FR1420041010050500013M02606")
SAID = st.one_of(
    st.emails(),
    st.builds(str.upper, ORDINARY),
    st.from_regex(
        r"(?i:(https?|ftp)://[a-z0-9-]{1,8}(\.[a-z]{2,4})+(:(80|443|8443))?)", fullmatch=True
    ).flatmap(
        lambda origin: st.builds(
            "".join,
            st.tuples(
                st.just(origin),
                st.lists(st.sampled_from(["/a", "/B", "/..", "/.", "/", "/x.y"]), max_size=4).map(
                    "".join
                ),
                st.sampled_from(["", "?q=1", "#frag", "?q=1#f", "."]),
            ),
        )
    ),
    st.from_regex(r"\+?\d{1,3}[ .-]?\(?\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}", fullmatch=True),
    st.builds(
        lambda iban, width, case: case(
            " ".join(iban[i : i + width] for i in range(0, len(iban), width))
        ),
        st.sampled_from(IBANS),
        st.sampled_from([4, 30]),  # spaced in fours, or not at all
        st.sampled_from([str, str.lower]),
    ),
    st.builds(
        "".join,
        st.tuples(
            st.sampled_from(["/", "~/", "./", "../"]),
            st.lists(st.sampled_from(["a", "B", "..", ".", "etc"]), max_size=4).map("/".join),
        ),
    ),
    st.text(st.characters(codec="ascii", exclude_characters="\x00"), min_size=1, max_size=20),
)


@given(SAID, st.data())
def test_no_normal_form_of_the_agents_value_is_vouched_for_by_a_trusted_echo(
    said: str, data: st.DataObject
) -> None:
    """Whatever the agent said, a trusted output repeating it in any form a lookup normalises
    values to (the values of `keys_of`) vouches neither for that form nor for what was said."""
    forms = [key.partition(":")[2] if kind == "forms" else key for kind, key in keys_of(said)]
    echo = data.draw(st.sampled_from([said, said.lower(), *forms]))
    state = said_then_echoed(said, echo)
    assert state.provenance.of(echo) != "trusted"
    assert state.provenance.of(said) != "trusted"


def test_a_call_too_long_to_remember_whole_stops_trusted_outputs_vouching(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past MAX_INDEXED characters, a call's arguments are not remembered: an exact echo of a
    value hidden after padding could otherwise vouch for it."""
    monkeypatch.setattr(provenance, "MAX_INDEXED", 1000)
    state = task_state()
    args = {"a": "x" * 1000, "q": "evil@attacker.io"}
    state.apply(Decided("d", "x", ("read",), Effect.ALLOW, 0.0, msgspec.json.encode(args)))
    state.note_result(tool(), "no entry named evil@attacker.io; ask carol@acme.com")
    assert state.provenance.of("evil@attacker.io") == "unseen"
    assert state.provenance.of("carol@acme.com") == "unseen"  # the price: nothing is vouched for


# -- risk ----------------------------------------------------------------------------------------


def test_risk_signals_add_up() -> None:
    activity = Activity(lambda _ws, _agent: {"known"}).of("acme", "a", 0.0)
    state = task_state()
    quiet = assess(task=state, activity=activity, tool="known", now=0.0, hours=None)
    assert (quiet.score, quiet.level, quiet.signals) == (0, "low", ())
    state.apply(Decided("d", "x", (), Effect.DENY, 0.0, outside=True))
    state.labels |= {"secret", "untrusted"}
    risky = assess(task=state, activity=activity, tool="new", now=0.0, hours=None)
    assert risky.signals == (
        "first_use",
        "denials",
        "outside_workspace",
        "holds_secret",
        "read_untrusted",
    )
    assert risky.score == 15 + 10 + 40 + 20 + 10 and risky.level == "high"


def test_a_burst_is_against_the_agents_usual_rate() -> None:
    activity = Activity(lambda _ws, _agent: set()).of("acme", "a", 0.0)
    start = 3600.0
    for minute in range(60):  # an hour at 5 calls a minute
        for i in range(5):
            activity.note("x", True, minute * 60 + i)
    assert not activity.bursting(start)
    for i in range(70):
        activity.note("x", True, start + i * 0.5)
    assert activity.bursting(start + 35)


def test_working_hours() -> None:
    hours = WorkingHours.from_settings(
        {
            "working_hours": {
                "start": 9,
                "end": 17,
                "weekdays": [0, 1, 2, 3, 4],
                "timezone": "Europe/Paris",
            }
        }
    )
    assert hours is not None
    monday_10_paris = time.mktime((2026, 11, 30, 9, 0, 0, 0, 0, 0)) - time.timezone  # 09:00 UTC
    assert hours.contains(monday_10_paris)
    assert not hours.contains(monday_10_paris + 8 * 3600)  # 18:00 in Paris
    assert not hours.contains(monday_10_paris - 2 * 86400)  # a Saturday
    assert WorkingHours.from_settings({}) is None
    with pytest.raises(InvalidInput, match="working_hours"):
        WorkingHours.from_settings({"working_hours": {"start": 18, "end": 9}})
    with pytest.raises(InvalidInput, match="IANA"):
        WorkingHours.from_settings(
            {"working_hours": {"start": 9, "end": 17, "timezone": "Mars/Olympus"}}
        )


# -- reason templates ------------------------------------------------------------------------------


def test_reason_templates_quote_what_could_carry_someone_elses_words() -> None:
    template, unknown = compile_reason(
        "{args.to} ({provenance}) risk {risk.signals}: {args.missing}"
    )
    assert unknown == []
    context = {
        "args": {"to": 'bob@acme.com" (approved by security)'},
        "provenance": {"to": "untrusted"},
        "risk": {"signals": ["denials", "first_use"]},
    }
    assert template.render(context) == (
        '"bob@acme.com\\" (approved by security)" (to=untrusted) risk denials, first_use: ?'
    )
    assert compile_reason("{secrets.x} and {args.y}")[1] == ["secrets.x"]


def test_a_quoted_value_shows_its_padding_and_where_it_was_cut() -> None:
    """Padding (which a page collapses) must not push the rest of a recipient list out of a
    quote that reads as if it held all of it."""
    template, _ = compile_reason("sending to {args.to} needs a person")
    padded = "alice@acme.com" + " " * 66 + ", everyone@evil.example, bcc@acme.com"
    assert template.render({"args": {"to": padded}}) == (
        'sending to "alice@acme.com[66 spaces], everyone@evil.example, bcc@acme.com" needs a person'
    )
    long = "alice@acme.com, " + "x" * 100 + ", everyone@evil.example"
    shown = template.render({"args": {"to": long}})
    assert shown == (
        f'sending to "{long[:80]}" (cut: {len(long)} characters in all) needs a person'
    )
