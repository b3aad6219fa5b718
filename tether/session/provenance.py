"""Where a sink argument's value came from: the user, trusted content, untrusted content, nowhere.

A prompt-injected agent pays the IBAN it read in an attacker's e-mail; the user never typed it
and no trusted tool returned it. So a task remembers, per kind of content, the values it has seen
there, and every sink argument of a call gets a provenance:

- `user`      the value is in the user's request (even if untrusted content repeats it);
- `trusted`   a trusted tool returned it;
- `untrusted` only third-party content (e-mails, web pages, files, messages) contained it;
- `unseen`    it appeared nowhere the task knows of (made up, or assembled from pieces).

A trusted tool vouches only for what it reveals: a value the agent itself had already put in
the arguments of a call is not promoted by a trusted output that repeats it (a "not found: X"
echo, or a note the agent wrote and read back), since an injected agent could launder any value
that way. Nor is a repetition in another form: a value of the output is the agent's own if any
of its keys (as written, case-folded, an address in it, a normal form) is a key of what the
agent said, and it is then remembered under none of them; what the agent said is keyed as a
lookup keys it (`keys_of`), normal forms case-folded too, so `EVIL@X.IO` said and `evil@x.io`
echoed, or a URL echoed without its `#fragment`, are one value. Arguments past what is indexed
of a call are not remembered, so from then on a trusted output vouches for nothing.

Values are matched whole, never as substrings (`bob@acme.com` is not `bob@acme.com.evil.io`),
after normalisation: case for e-mail addresses and host names, trailing punctuation, IBAN and
phone spacing, URL forms (scheme and host case, default ports, dot segments, fragments) and file
paths (`/repo/../etc` is `/etc`). Indexing happens once per reported output, into sets, so a
decision looks a value up in constant time however long the task has run.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Iterator
from urllib.parse import urlsplit, urlunsplit

from tether.catalogue.cedar_schema import PROVENANCES
from tether.session.detectors import IBAN, digit_count, emails, iban_checksum

USER, TRUSTED, UNTRUSTED, UNSEEN = PROVENANCES
# For a list of values (several recipients), the least vouched-for element decides.
LEAST_VOUCHED_FIRST = (UNTRUSTED, UNSEEN, TRUSTED, USER)
# Bounds on what is remembered. A value not remembered counts as `unseen`, which policies treat
# at least as strictly as `untrusted`, so a bound never makes a call pass that would not.
MAX_VALUES = 250_000  # per set
MAX_INDEXED = 1_000_000  # characters indexed of one output
MAX_CHARS = 16_000_000  # characters remembered per kind of content, over the whole task

_STOP = "\\s\"'<>()\\[\\]{},;`"
# A token: text between stop characters, without trailing `.:!?`. Written so that a long run of
# punctuation cannot make the engine backtrack (possessive quantifiers: linear time).
_TOKEN = re.compile(f"[^{_STOP}.:!?]++(?:[.:!?]++[^{_STOP}.:!?]++)*+")
# URLs and paths are whole tokens: found by an anchored match on each token, not by a scan of
# the text trying every position.
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_PATH_START = re.compile(r"(?:~|\.{1,2})?/(?!/)")
_PHONE = re.compile(r"[+\d][\d ().\-]{5,22}\d")  # starts with a character set: a fast scan
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63})+")
_HOST = re.compile(r"(?:[A-Za-z0-9\-]{1,63}\.)+[A-Za-z]{2,63}\.?")
_TRAILING = ".,;:!?"
_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21, "ws": 80, "wss": 443}
_MIN_PHONE_DIGITS = 7


def normalize_url(text: str) -> str | None:
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname.lower().rstrip(".")
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    if parts.username is not None:
        host = f"{parts.username}@{host}"
    path = posixpath.normpath(parts.path) if parts.path else "/"
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    return urlunsplit((scheme, host, path, parts.query, ""))


def normalize_phone(text: str) -> str | None:
    digits = "".join(c for c in text if c.isdigit())
    if len(digits) < _MIN_PHONE_DIGITS:
        return None
    return ("+" if text.strip().startswith("+") else "") + digits


def normalize_path(text: str) -> str:
    return posixpath.normpath(text)


Found = tuple[set[str], set[str], set[str]]  # tokens, folded, forms (Seen's sets)


class Seen:
    """The values found in one kind of content: whole tokens (as written, and case-folded) and
    normalised forms of URLs, IBANs, phone numbers and paths."""

    def __init__(self) -> None:
        self.tokens: set[str] = set()
        self.folded: set[str] = set()
        self.forms: set[str] = set()
        self.chars = 0  # characters remembered, against MAX_CHARS

    @property
    def full(self) -> bool:
        most = max(len(self.tokens), len(self.folded), len(self.forms))
        return most >= MAX_VALUES or self.chars >= MAX_CHARS

    def add(self, texts: Iterable[str], *, except_in: Seen | None = None) -> None:
        """Remember the values in `texts` (each read apart: no value spans two), but for those
        that are `except_in`'s (see `_without`)."""
        if self.full:
            return
        tokens: list[str] = []
        addresses: set[str] = set()
        forms: list[tuple[str, str]] = []
        for text in texts:
            in_text = _TOKEN.findall(text)
            tokens += in_text
            if "@" in text:
                addresses.update(address.lower() for address in emails(text))
            forms += _forms(text, in_text)
        exact = set(tokens)
        news = (exact, {*map(str.lower, exact), *addresses}, {form for _, form in forms})
        if except_in is not None:
            news = except_in._without(news, addresses, forms)
        for kind, kept in zip(("tokens", "folded", "forms"), news, strict=True):
            getattr(self, kind).update(kept)
            self.chars += sum(map(len, kept))

    def hold(self, keys: Iterable[tuple[str, str]]) -> None:
        """Remember these keys too ((set, value) pairs, as `keys_of` gives them)."""
        for kind, value in keys:
            getattr(self, kind).add(value)
            self.chars += len(value)

    def _without(self, news: Found, addresses: set[str], forms: list[tuple[str, str]]) -> Found:
        """`news` (tokens, folded, forms found in one output, its `addresses` and its `forms` by
        where each was found) less every value that is this Seen's: a value any of whose keys is
        here is dropped under all of them (a token: as written, case-folded, the addresses in
        it, its URL or path form; a phone number or IBAN: its form). Usually nothing is: three
        set intersections, and the output is read again only when something is."""
        exact, folded, formed = news
        own = exact & self.tokens
        own_folded = folded & self.folded
        own_forms = formed & self.forms
        if not (own or own_folded or own_forms):
            return news
        if own_folded:
            own.update(token for token in exact if token.lower() in own_folded)
            if not own_folded.isdisjoint(addresses):
                own.update(t for t in exact if "@" in t and not own_folded.isdisjoint(_in(t)))
        if own_forms:
            own.update(source for source, form in forms if form in own_forms and source in exact)
        own_folded |= {token.lower() for token in own}
        own_folded.update(address for token in own if "@" in token for address in _in(token))
        own_forms |= {form for source, form in forms if source in own}
        return exact - own, folded - own_folded, formed - own_forms

    def has(self, key: tuple[str, str]) -> bool:
        kind, value = key
        return value in getattr(self, kind)


def _in(token: str) -> set[str]:
    """The addresses in a token (`mailto:eve@evil.io`), case-folded."""
    return {address.lower() for address in emails(token)}


def _forms(text: str, tokens: list[str]) -> Iterable[tuple[str, str]]:
    """The normal forms in `text`, each with what it was found in: a token (a URL, a path), or
    the text of a phone number or IBAN (which may span several tokens)."""
    if "://" in text:
        for url in set(filter(_URL_START.match, tokens)):
            normal = normalize_url(url)
            if normal:
                yield url, "url:" + normal
    if "/" in text:
        for path in set(filter(_PATH_START.match, tokens)):
            yield path, "path:" + normalize_path(path)
    if digit_count(text) >= _MIN_PHONE_DIGITS:
        if text.lower() != text:  # an IBAN starts with two capital letters
            for candidate in IBAN.findall(text):
                if iban_checksum(candidate):
                    yield candidate, "iban:" + candidate.replace(" ", "")
        for candidate in set(_PHONE.findall(text)):
            phone = normalize_phone(candidate)
            if phone:
                yield candidate, "phone:" + phone


def keys_of(value: str) -> list[tuple[str, str]]:
    """How to look a sink value up: (set, normalised value) pairs, any of which counts."""
    whole = value.strip()
    text = whole.rstrip(_TRAILING)
    keys: list[tuple[str, str]] = []
    if "://" in whole:
        # Not stripped: `https://host/in/..` is the parent of /in, not /in.
        url = normalize_url(whole)
        if url:
            keys.append(("forms", "url:" + url))
    compact = re.sub(r"\s", "", text)
    if IBAN.fullmatch(compact.upper()) and iban_checksum(compact):
        keys.append(("forms", "iban:" + compact.upper()))
    if _PHONE.fullmatch(text):
        phone = normalize_phone(text)
        if phone:
            keys.append(("forms", "phone:" + phone))
    if whole.startswith(("/", "~/", "./", "../")):
        keys.append(("forms", "path:" + normalize_path(whole)))  # `/a/b/..` is /a
    if _EMAIL.fullmatch(text) or _HOST.fullmatch(text):
        keys.append(("folded", text.lower().rstrip(".")))
    if not any(c.isspace() for c in text) and not whole.startswith(("/", "~/", "./", "../")):
        keys.append(("tokens", text))
    return keys


def _said_keys(pieces: Iterable[str]) -> Iterator[tuple[str, str]]:
    """The keys a lookup would give the values the agent said, so that an echo in any form a
    lookup normalises to is the agent's own: `keys_of` of each argument's whole value (a piece,
    or the value of a `name: value` piece, as content.text_of writes an argument: after the
    first `: `, or the last if the name has one), and each normal form case-folded, as a token
    of an output repeating it is indexed."""
    values: set[str] = set()
    for piece in pieces:
        if ": " in piece:
            values.update((piece.partition(": ")[2], piece.rpartition(": ")[2]))
        else:
            values.add(piece)
    for value in values:
        for kind, key in keys_of(value):
            yield kind, key
            yield "folded", (key.partition(":")[2] if kind == "forms" else key).lower()


def first_indexed(texts: Iterable[str]) -> Iterator[str]:
    """The pieces of one output (or one call's arguments), up to MAX_INDEXED characters."""
    budget = MAX_INDEXED
    for text in texts:
        if budget <= 0:
            return
        piece = text[:budget]
        budget -= len(piece)
        yield piece


class Provenance:
    """What one task has seen, by kind of content."""

    def __init__(self, request: str) -> None:
        request = request[:MAX_INDEXED]
        self.request_tokens = _TOKEN.findall(request)
        self.user = Seen()
        self.user.add((request,))
        self.trusted = Seen()
        self.untrusted = Seen()
        self.agent = Seen()  # values the agent put in arguments: never vouched for by an echo
        self.agent_cut = False  # some of them were past MAX_INDEXED: not remembered

    def saw(self, texts: Iterable[str], *, trusted: bool) -> None:
        """Remember the values in one output (its first MAX_INDEXED characters). Once the
        agent's own values are past remembering, a trusted output vouches for nothing more: it
        might be echoing one of them."""
        if trusted and (self.agent.full or self.agent_cut):
            return
        if trusted:
            self.trusted.add(first_indexed(texts), except_in=self.agent)
        else:
            self.untrusted.add(first_indexed(texts))

    def said(self, texts: Iterable[str]) -> None:
        """The agent put these values in a call's arguments: remembered as any content's are,
        and also under every key a lookup would give them (`_said_keys`). Arguments longer than
        MAX_INDEXED characters are not remembered at all, and from then on trusted outputs
        vouch for nothing (`saw`): any value of theirs could be the unremembered part."""
        pieces = tuple(texts)
        if sum(map(len, pieces)) > MAX_INDEXED:
            self.agent_cut = True
        if self.agent_cut:
            return
        self.agent.add(pieces)
        if not self.agent.full:
            self.agent.hold(_said_keys(pieces))

    def of(self, value: object) -> str:
        """The provenance of a sink argument's value (a list: its least vouched-for element)."""
        if isinstance(value, list | tuple):
            found = {self.of(item) for item in value}
            return next((p for p in LEAST_VOUCHED_FIRST if p in found), USER)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return UNSEEN
        text = str(value)
        keys = keys_of(text)
        if any(self.user.has(key) for key in keys) or self._in_request(text):
            return USER
        if any(self.trusted.has(key) for key in keys):
            return TRUSTED
        if any(self.untrusted.has(key) for key in keys):
            return UNTRUSTED
        return UNSEEN

    def _in_request(self, text: str) -> bool:
        """A phrase (a value with spaces) the user wrote: the same whole tokens, in a row."""
        if not any(c.isspace() for c in text.strip()):
            return False
        phrase = _TOKEN.findall(text)
        if not phrase or len(" ".join(phrase)) != len(" ".join(text.split()).rstrip(_TRAILING)):
            return False  # stop characters inside the phrase (quotes, commas): no shortcut
        words, n = self.request_tokens, len(phrase)
        return any(words[i : i + n] == phrase for i in range(len(words) - n + 1))
