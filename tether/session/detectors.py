"""Detectors that label what a tool returned: `secret` for credentials, `pii` for personal data.

Each detector is a linear-time regular expression, run only when a cheap literal hint is present
in the text (so a 20 KB page without an `@` costs the e-mail detector one substring search), plus,
where a format has one, its checksum: card numbers must pass Luhn and IBANs the ISO 7064 mod-97
check, so random digit runs do not label a task. Labels only ever add to a task, so a false
positive makes policies stricter, never looser.

A secret is also found where an output hides it from a pattern but not from a reader: split by
characters that show as nothing (zero-width spaces, soft hyphens, direction marks), written
percent-encoded, or encoded in base64 (standard or URL-safe alphabet). Each of these is undone
once, not recursively, up to `MAX_UNCOVERED` characters an output.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import unquote

SECRET = "secret"  # noqa: S105 - a label's name, not a password
PII = "pii"


@dataclass(frozen=True)
class Detector:
    name: str
    label: str
    hints: tuple[str, ...] | re.Pattern[str]  # text needed for the search to run ("" = always)
    find: Callable[[str], Iterable[str]]  # candidate matches in the text
    valid: Callable[[str], bool] = lambda _: True
    min_digits: int = 0  # skip texts with fewer digits than a match needs


def luhn(candidate: str) -> bool:
    digits = [int(c) for c in candidate if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if i % 2 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return total % 10 == 0


def iban_checksum(candidate: str) -> bool:
    compact = re.sub(r"\s", "", candidate).upper()
    if not 15 <= len(compact) <= 34 or not compact[:2].isalpha() or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        number = "".join(str(int(c, 36)) for c in rearranged)
    except ValueError:
        return False
    return int(number) % 97 == 1


# A run of 13-19 digits with single spaces or dashes between groups; boundaries are checked in
# `card_number`, not by lookarounds, to keep the scan a simple character-class loop.
_DIGIT_RUN = re.compile(r"\d[\d -]{11,40}\d")
IBAN = re.compile(r"[A-Z]{2}\d{2}(?: ?[0-9A-Z]{4}){2,7}(?: ?[0-9A-Z]{1,4})?")
IBAN_ANY_CASE = re.compile(IBAN.pattern, re.IGNORECASE)
_LOCAL_PART = re.compile(r"[A-Za-z0-9._%+\-]{1,64}\Z")
_AT_DOMAIN = re.compile(r"@([A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63})+)")
MIN_CARD_DIGITS = 13
MIN_IBAN_DIGITS = 11


def emails(text: str) -> Iterator[str]:
    """Every e-mail address in `text`, found from its `@` outwards (linear in the text)."""
    for domain in _AT_DOMAIN.finditer(text):
        at = domain.start()
        local = _LOCAL_PART.search(text, max(0, at - 64), at)
        if local:
            yield local.group(0) + domain.group(0)


def digit_count(text: str) -> int:
    return sum(map(text.count, "0123456789"))


def _finder(pattern: re.Pattern[str] | str) -> Callable[[str], Iterable[str]]:
    compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
    return lambda text: (m.group(0) for m in compiled.finditer(text))


_JWT_ALPHABET_RUN = re.compile(r"[0-9A-Za-z_\-.]+")
_JWT = re.compile(r"eyJ[0-9A-Za-z_\-]{8,}+\.eyJ[0-9A-Za-z_\-]{8,}+\.[0-9A-Za-z_\-]{8,}+")


def jwts(text: str) -> Iterator[str]:
    """JSON Web Tokens: runs of the token alphabet, each checked whole (never a search that
    could retry from every `eyJ` of a long run: that is quadratic)."""
    for run in _JWT_ALPHABET_RUN.finditer(text):
        candidate = run.group(0)
        if candidate.count(".") >= 2 and "eyJ" in candidate:
            for part in _JWT.finditer(candidate):
                yield part.group(0)
                return


def card_number(candidate: str) -> bool:
    """A run of digit groups holds a card number if some consecutive groups of it, 13 to 19
    digits in all, pass Luhn ("order 12345 4111 1111 1111 1111 12/28")."""
    groups = re.split(r"[ -]", candidate)
    for start in range(len(groups)):
        digits = ""
        for group in groups[start:]:
            digits += group
            if len(digits) > 19:
                break
            if len(digits) >= 13 and luhn(digits):
                return True
    return False


DETECTORS = (
    Detector(
        "private key",
        SECRET,
        ("PRIVATE KEY", "PuTTY-User-Key-File"),
        # PEM (PKCS#1/#8, OpenSSH, EC, encrypted), PGP armour, SSH2 (RFC 4716 style), PuTTY
        _finder(
            r"-{4,5} ?BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)? ?-{4,5}"
            r"|PuTTY-User-Key-File-\d+:"
        ),
    ),
    Detector("AWS access key", SECRET, ("AKIA", "ASIA"), _finder(r"(?:AKIA|ASIA)[0-9A-Z]{16}")),
    Detector(
        "AWS secret key",
        SECRET,
        re.compile("(?i)secret"),  # searched in place: lowering the output would copy it
        _finder(r"(?i)aws[_\- ]?secret[_\- ]?access[_\- ]?key\W{0,4}[0-9A-Za-z/+]{40}"),
    ),
    Detector("Google API key", SECRET, ("AIza",), _finder(r"AIza[0-9A-Za-z_\-]{35}")),
    Detector(
        "GitHub token",
        SECRET,
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        _finder(r"gh[pousr]_[0-9A-Za-z]{36,}|github_pat_\w{22,}"),
    ),
    Detector("Slack token", SECRET, ("xox",), _finder(r"xox[abposr]-[0-9A-Za-z-]{10,}")),
    Detector("Stripe key", SECRET, ("_live_",), _finder(r"[rs]k_live_[0-9A-Za-z]{16,}")),
    Detector(
        "OpenAI or Anthropic key",
        SECRET,
        ("sk-",),
        _finder(r"sk-(?:ant-|proj-)?[0-9A-Za-z_\-]{20,}"),
    ),
    Detector("JSON Web Token", SECRET, ("eyJ",), jwts),
    Detector(
        "payment card number",
        PII,
        ("",),
        _finder(_DIGIT_RUN),
        card_number,
        min_digits=MIN_CARD_DIGITS,
    ),
    Detector("IBAN", PII, ("",), _finder(IBAN_ANY_CASE), iban_checksum, min_digits=MIN_IBAN_DIGITS),
    Detector("e-mail address", PII, ("@",), emails),
)


# Up to this many characters, an output's pieces are first searched joined, for which
# detectors could match at all: most outputs hold none of the hints, and twelve detectors over
# many small pieces (a structured output's every `key: value`) cost more than the search.
PREFILTER_CHARS = 64 * 1024


def detect(pieces: Iterable[str]) -> dict[str, str]:
    """{detector name: label} for every detector that found a valid match in the text, as it
    is or as it reads once what hides a secret from a pattern is undone (`_uncovered`)."""
    pieces = tuple(pieces)
    joined = _joined(pieces)
    found = _detect(pieces, joined)
    hidden = tuple(_uncovered(pieces, joined))
    if hidden:
        for name, label in _detect(hidden, _joined(hidden)).items():
            found.setdefault(name, label)
    return found


def _joined(pieces: tuple[str, ...]) -> str | None:
    """The pieces joined by NUL, which no detector's match nor run of base64 holds, so that
    one search of it tells what any piece could hold (None: too long to be worth copying)."""
    return "\0".join(pieces) if sum(map(len, pieces)) <= PREFILTER_CHARS else None


# Characters that show as nothing: put inside a key, they split it for a pattern, not for a
# person or a program that drops them (soft hyphen, Mongolian vowel separator, zero-width
# space/joiners, direction marks and embeddings, word joiner and invisible operators, BOM).
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
# 16 characters of base64 are 12 bytes: shorter than any secret the detectors know, encoded.
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/\-_]{16,}={0,2}")
# Hex (digests, ids, uuids) is the commonest long run in outputs; text in base64 is never it.
_HEX = re.compile(r"[0-9A-Fa-f\-]+")
_URL_SAFE = str.maketrans("-_", "+/")  # the URL-safe alphabet's two, as the standard's
MAX_UNCOVERED = 1 << 20  # characters of base64 decoded an output; past them, none is


def _uncovered(pieces: tuple[str, ...], joined: str | None) -> Iterator[str]:
    """Each piece as it reads with invisible characters dropped and percent-escapes undone,
    where it has any; and every run of base64 in the pieces (or in those readings) that
    decodes to UTF-8 text. One level: what is encoded twice is not found."""
    readings = [reading for piece in pieces for reading in _readings(piece)]
    yield from readings
    # The pieces joined hold the runs each piece holds: one search, not hundreds (a
    # structured output's pieces are many and small).
    budget = MAX_UNCOVERED
    for text in (*((joined,) if joined is not None else pieces), *readings):
        for run in _BASE64_RUN.finditer(text):
            budget -= len(run.group(0))
            if budget < 0:
                return
            decoded = _from_base64(run.group(0))
            if decoded is not None:
                yield decoded


def _readings(piece: str) -> Iterator[str]:
    if not piece.isascii() and _INVISIBLE.search(piece):  # every such character is not ASCII
        piece = _INVISIBLE.sub("", piece)
        yield piece
    if "%" in piece and _PERCENT.search(piece):
        yield unquote(piece, errors="replace")


def _from_base64(run: str) -> str | None:
    """The text a run of base64 encodes, if it is UTF-8; None if it is not base64 or not text.
    (The run is of the alphabets' characters already: decoded by binascii, not by
    `base64.b64decode`, whose check of them took most of the time.)"""
    body = run.rstrip("=")
    if len(body) % 4 == 1 or _HEX.fullmatch(body):  # no bytes encode to it; a digest or uuid
        return None
    try:
        data = binascii.a2b_base64(body.translate(_URL_SAFE) + "=" * (-len(body) % 4))
        return data.decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None


def _detect(pieces: tuple[str, ...], joined: str | None) -> dict[str, str]:
    detectors = _possible(joined) if joined is not None else DETECTORS
    found: dict[str, str] = {}
    for piece in pieces:
        digits: int | None = None
        for detector in detectors:
            if detector.name in found or not _hinted(detector, piece):
                continue
            if detector.min_digits:
                digits = digit_count(piece) if digits is None else digits
                if digits < detector.min_digits:
                    continue
            if any(detector.valid(candidate) for candidate in detector.find(piece)):
                found[detector.name] = detector.label
    return found


def _possible(whole: str) -> tuple[Detector, ...]:
    """The detectors whose hints and digit count the pieces together (`whole`) meet. A piece
    that meets a detector's needs makes the whole meet them (no hint holds the NUL joining
    the pieces), so this only ever drops detectors that no piece would run."""
    digits = digit_count(whole)
    return tuple(d for d in DETECTORS if digits >= d.min_digits and _hinted(d, whole))


def _hinted(detector: Detector, text: str) -> bool:
    hints = detector.hints
    if isinstance(hints, re.Pattern):
        return hints.search(text) is not None
    return any(hint in text for hint in hints)
