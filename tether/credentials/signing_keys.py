"""The service's token signing keys: ES256, selected by `kid`, encrypted at rest, rotated safely.

The private keys are stored encrypted with AES-256-GCM under a master key that never enters the
store (given by `TETHER_MASTER_KEY`, by the file `TETHER_MASTER_KEY_FILE` names, or kept in
`<home>/master.key`, created owner-only). Rotation follows the order verifiers need: the next key
is published in the JWKS `lead` seconds before it signs anything, and a replaced key keeps
verifying until every token it signed has expired (the longest token lifetime, plus twice the
clock skew, plus `REFRESH`: a process signs with it until it rereads the keys, plus
`EARLY_READ`), then is retired: gone from the JWKS, and tokens signed with it are refused. The
skew is how far each process's clock may be from the true time, so two may be twice that apart.

Callers pass their own `now`, and it is not the same instant everywhere: a thread that read the
clock a moment before another made the first key, or a process whose clock is behind, asks for
a key at a time before one that is already signing. A key made to
sign at once (no lead) is therefore the signer for every caller, whatever its `now`; and a
pending key is withdrawn only while no process can have started signing with it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc.jwk import ECKey

from tether.errors import InvalidInput, TetherError
from tether.identity.jwk import ALGORITHM, CURVE, public_jwk
from tether.store import Store
from tether.store.credentials import SigningKeyRecord

log = logging.getLogger("tether.credentials")
MASTER_KEY_ENV = "TETHER_MASTER_KEY"
MASTER_KEY_FILE_ENV = "TETHER_MASTER_KEY_FILE"
MASTER_KEY_FILE = "master.key"
JWKS_MAX_AGE = 300.0  # how long verifiers may cache the JWKS: the default publication lead
REFRESH = 5.0  # how often a process rereads the keys another process may have rotated
EARLY_READ = 1.0  # how long before it asks a caller may have read the `now` it passes


def load_master_key(home: str | Path | None) -> bytes:
    """The 32-byte master key, from the environment, a named file, or `home` (created there)."""
    text = os.environ.get(MASTER_KEY_ENV)
    where = MASTER_KEY_ENV
    if text is None and os.environ.get(MASTER_KEY_FILE_ENV):
        path = Path(os.environ[MASTER_KEY_FILE_ENV])
        text, where = _read(path), str(path)
        _warn_if_shared(path)
    if text is None:
        if home is None:
            raise InvalidInput(f"no master key: set {MASTER_KEY_ENV} or {MASTER_KEY_FILE_ENV}")
        path = Path(home) / MASTER_KEY_FILE
        if not path.exists():
            _create(path)
        text, where = _read(path), str(path)
        _warn_if_shared(path)
    try:
        key = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"the master key in {where} is not base64url: {exc}") from exc
    if len(key) != 32:
        raise InvalidInput(f"the master key in {where} must be 32 bytes, not {len(key)}")
    return key


def new_master_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read the master key file {path}: {exc}") from exc


def _warn_if_shared(path: Path) -> None:
    """Say so when other accounts may read the master key (it opens every sealed key and
    task event). Only said: a mounted secret (a Kubernetes volume, say) may be 0644 by
    default, and refusing would stop a deployment that is otherwise sound."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return
    if mode & 0o077:
        log.warning(
            "the master key file %s can be read by other accounts (mode %o): make it the "
            "owner's alone (chmod 600)",
            path,
            mode,
        )


def _create(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return
    with os.fdopen(fd, "w") as file:
        file.write(new_master_key() + "\n")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    key: ECKey
    activate_at: float
    retire_at: float | None
    at_once: bool  # made to sign from the moment it was made (no publication lead)

    def verifies_at(self, now: float) -> bool:
        return self.retire_at is None or now < self.retire_at


class Keyring:
    """The signing keys, decrypted in memory, reloaded when another process rotates them.

    `max_token_ttl` + 2 x `skew` + `REFRESH` + `EARLY_READ` is how long a replaced key must
    keep verifying."""

    def __init__(
        self,
        store: Store,
        master_key: bytes,
        *,
        max_token_ttl: float,
        skew: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._aead = AESGCM(master_key)
        self._grace = max_token_ttl + 2 * skew + REFRESH + EARLY_READ
        # A pending key this close to its activation may be signing already somewhere: on a
        # process whose clock is ahead (each may be `skew` off, so two are up to twice that
        # apart), or that has not reread the keys since (REFRESH), while the rotating caller's
        # `now` may be a little old (EARLY_READ).
        self._may_have_signed = 2 * skew + REFRESH + EARLY_READ
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, SigningKey] = {}
        self._loaded_at = float("-inf")
        self._reload()

    def signing_key(self, now: float) -> SigningKey:
        """The newest key that may sign at `now` and is not being retired; the first key is
        made on first use."""
        self._maybe_reload(now)
        key = self._signer(now)
        if key is None:
            with self._lock:
                self._reload()
                key = self._signer(now) or self._add(now, lead=0.0)
        return key

    def _signer(self, now: float) -> SigningKey | None:
        ready = [
            k
            for k in self._keys.values()
            if (k.activate_at <= now or k.at_once) and k.verifies_at(now)
        ]
        # A key with a retirement date has a successor: it signs only while no successor can.
        # Then the one retiring last signs: the last rotation gave the signer of its time (and
        # a pending key that may have been signing too) the latest retirement; older keys kept
        # the earlier one their own successor gave them.
        current = [k for k in ready if k.retire_at is None] or ready
        return max(current, key=_signing_order) if current else None

    def verification_key(self, kid: str, now: float) -> SigningKey | None:
        """The key `kid` names if it is published and not retired at `now`."""
        key = self._keys.get(kid)
        # Rotated elsewhere, maybe (or the first key made elsewhere): read again, but not for
        # every made-up kid a caller sends.
        if key is None and (not self._keys or now - self._loaded_at >= 1.0):
            with self._lock:
                self._reload()
        else:
            self._maybe_reload(now)
        key = self._keys.get(kid)  # as read again, if it was: a rotation may have moved its end
        return key if key is not None and key.verifies_at(now) else None

    def rotate(self, now: float, lead: float = JWKS_MAX_AGE) -> SigningKey:
        """Publish a new key now, signing from `now + lead`; the keys it replaces retire once
        every token they could still sign by then has expired."""
        if not 0 <= lead <= 86400:
            raise InvalidInput("the publication lead must be between 0 and 86400 seconds")
        with self._lock:
            self._reload()
            return self._add(now, lead)

    def jwks(self, now: float) -> dict[str, Any]:
        """The JWKS document verifiers fetch: every key published and not retired."""
        self._maybe_reload(now)
        keys = sorted(
            (k for k in self._keys.values() if k.verifies_at(now)), key=lambda k: k.activate_at
        )
        return {
            "keys": [
                {**public_jwk(k.key), "kid": k.kid, "use": "sig", "alg": ALGORITHM} for k in keys
            ]
        }

    def all_keys(self) -> list[SigningKey]:
        return sorted(self._keys.values(), key=lambda k: k.activate_at)

    # -- internals -----------------------------------------------------------------------------

    def _maybe_reload(self, now: float) -> None:
        if now - self._loaded_at >= REFRESH or now < self._loaded_at:
            with self._lock:
                self._reload()

    def _reload(self) -> None:
        self._keys = {r.kid: self._decrypt(r) for r in self._store.credentials.signing_keys()}
        self._loaded_at = self._clock()

    def _add(self, now: float, lead: float) -> SigningKey:
        key = ECKey.generate_key(CURVE)
        kid = key.thumbprint()
        pem = key.as_pem(private=True)
        nonce = secrets.token_bytes(12)
        sealed = base64.urlsafe_b64encode(nonce + self._aead.encrypt(nonce, pem, kid.encode()))
        activate_at = now + lead
        retire = self._retirements(now, activate_at)
        record = SigningKeyRecord(
            kid=kid,
            public_jwk=public_jwk(key),
            private_key=sealed.decode(),
            created_at=now,
            activate_at=activate_at,
        )
        self._store.credentials.add_signing_key(record, retire=retire)
        self._reload()
        return self._keys[kid]

    def _retirements(self, now: float, activate_at: float) -> dict[str, float]:
        """When each key retires once a new key signs from `activate_at`. A pending key
        (published, and too far from its activation for anyone to have signed with it) is
        withdrawn now. The key signing now goes on signing until then, so it verifies until
        every token it signs meanwhile has expired: later than a pending key it had been due
        to hand over to said, if that key is withdrawn with a longer lead. Older keys keep the
        earlier retirement their own successor gave them."""
        signer = self._signer(now)
        signing = signer.kid if signer is not None else None
        retire, handover = {}, activate_at + self._grace
        for k in self._keys.values():
            if not k.at_once and k.activate_at > now + self._may_have_signed:
                retire[k.kid] = now  # published, never signed, and now superseded
            elif k.kid == signing or k.retire_at is None or k.retire_at > handover:
                retire[k.kid] = handover
        return retire

    def _decrypt(self, record: SigningKeyRecord) -> SigningKey:
        sealed = base64.urlsafe_b64decode(record.private_key)
        try:
            pem = self._aead.decrypt(sealed[:12], sealed[12:], record.kid.encode())
        except InvalidTag as exc:
            raise TetherError(
                f"signing key {record.kid} cannot be decrypted: is this the master key it was "
                f"sealed with? Every process on one store needs the same master key "
                f"({MASTER_KEY_ENV} or {MASTER_KEY_FILE_ENV})"
            ) from exc
        return SigningKey(
            kid=record.kid,
            key=ECKey.import_key(pem),
            activate_at=record.activate_at,
            retire_at=record.retire_at,
            at_once=record.activate_at <= record.created_at,
        )


def _signing_order(key: SigningKey) -> tuple[float, float]:
    return key.retire_at if key.retire_at is not None else math.inf, key.activate_at
