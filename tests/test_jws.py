"""The strict compact-JWS reader every token, assertion and proof goes through."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given
from hypothesis import strategies as st
from joserfc import jws
from joserfc.jwk import ECKey

from tether.credentials.jws import sign, unverified_header, unverified_payload, verified_payload
from tether.errors import CredentialRefused

KEY = ECKey.generate_key("P-256")


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def signed(header: dict[str, object], payload: bytes = b'{"a":1}', key: ECKey = KEY) -> str:
    """A token signed by hand, whatever its header says (joserfc would refuse some)."""
    head = b64(json.dumps(header).encode())
    body = b64(payload)
    der = key.private_key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{head}.{body}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def test_a_good_token_reads_and_every_bit_of_its_signature_matters() -> None:
    token = sign({"typ": "x"}, b'{"a":1}', KEY)
    assert verified_payload(token, KEY, "token") == b'{"a":1}'
    assert verified_payload(signed({"alg": "ES256"}), KEY, "token") == b'{"a":1}'
    other = ECKey.generate_key("P-256")
    with pytest.raises(CredentialRefused, match="does not verify"):
        verified_payload(token, other, "token")


def test_what_tether_signs_another_implementation_reads() -> None:
    """Signing is Tether's own few lines over `cryptography`: joserfc, a general JWS library,
    must read the result as the same header and payload."""
    token = sign({"typ": "dpop+jwt", "kid": "k1"}, b'{"jti":"x"}', KEY)
    read = jws.deserialize_compact(token, KEY, algorithms=["ES256"])
    assert read.payload == b'{"jti":"x"}'
    assert read.headers() == {"alg": "ES256", "typ": "dpop+jwt", "kid": "k1"}


def test_signing_needs_a_private_p256_key() -> None:
    public = ECKey.import_key(KEY.as_dict(private=False))
    with pytest.raises(ValueError, match="private EC P-256"):
        sign({}, b"{}", public)
    with pytest.raises(ValueError, match="private EC P-256"):
        sign({}, b"{}", ECKey.generate_key("P-384"))


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (signed({"alg": "ES256", "crit": ["exp"], "exp": 1}), "critical"),
        (signed({"alg": "none"}), "only ES256"),
        (signed({"alg": "HS256"}), "only ES256"),
        (signed({"typ": "JWT"}), "only ES256"),
        ("a.b", "three segments"),
        ("a.b.c.d", "three segments"),
        ("e30=.e30.e30", "base64url"),  # padding
        ("e3+.e30.e30", "base64url"),  # not the URL alphabet
        ("e31.e30.e30", "canonical"),  # unused bits set: another text of the same bytes
        (b64(b"[1]") + ".e30.e30", "not an object"),
        ("", "no token"),
        ("é.e30.e30", "8 KiB"),
    ],
)
def test_malformed_tokens_are_refused_with_a_reason(token: str, why: str) -> None:
    with pytest.raises(CredentialRefused, match=why):
        verified_payload(token, KEY, "token")


def test_a_signature_of_the_wrong_size_or_curve_is_refused() -> None:
    head, body, signature = signed({"alg": "ES256"}).split(".")
    raw = base64.urlsafe_b64decode(signature + "==")
    short = f"{head}.{body}.{b64(raw[:-3])}"  # well-formed base64url, 61 bytes
    with pytest.raises(CredentialRefused, match="does not verify"):
        verified_payload(short, KEY, "token")
    p384 = ECKey.generate_key("P-384")
    with pytest.raises(CredentialRefused, match="does not verify"):
        verified_payload(signed({"alg": "ES256"}), p384, "token")


@given(st.text(max_size=300))
def test_no_text_is_read_as_a_token_without_a_reason(text: str) -> None:
    try:
        unverified_header(text, "token")
        verified_payload(text, KEY, "token")
    except CredentialRefused as refused:
        assert str(refused)
    else:  # pragma: no cover - it would have to be signed by KEY
        pytest.fail(f"{text!r} was read as a token")


def test_a_header_nested_past_decoding_is_refused_not_raised() -> None:
    deep = b64(b'{"alg":"ES256","x":' + b"[" * 2000 + b"]" * 2000 + b"}")  # under 8 KiB
    with pytest.raises(CredentialRefused, match="malformed"):
        unverified_header(f"{deep}.e30.e30", "token")


def test_an_unverified_payload_that_is_not_base64url_is_a_refusal() -> None:
    with pytest.raises(CredentialRefused, match="malformed"):
        unverified_payload("e30.e3+.e30")
