"""The audit log's keys: the HMAC key ring, and the bundle the log works with.

Every entry carries an HMAC-SHA256 of its hash under the current *audit HMAC key*, named by its
id in the entry. Someone who can write to the database but not read the key directory can then
edit an entry and even recompute the whole hash chain after it, but cannot recompute the MACs.
Rotating the HMAC key starts a new current key; old keys stay in the ring, so old entries keep
verifying, and nothing is rewritten.

Where the HMAC keys come from, first match wins (the same scheme as the master key,
:mod:`sandbox.keys.master`):

* ``VEIL_AUDIT_HMAC_KEY`` (``Settings.audit_hmac_key``, handed in by the caller): ``kid:base64``
  entries separated by commas, the first one current;
* ``<key_dir>/audit-hmac/<kid>.key`` (32 raw bytes, mode 0600) with ``<key_dir>/audit-hmac/current``
  naming the current one; created on first start.

The checkpoint signing keys are an Ed25519 ring like the receipt keys
(``<key_dir>/audit-signing.pem``, ``<key_dir>/audit-retired/<key_id>.pem``); the master key ring
wraps the data keys that seal entries' sensitive members. :mod:`sandbox.keys.directory` loads all
three under the key directory lock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pydantic import SecretStr

from sandbox.clock import now
from sandbox.errors import MasterKeyError
from sandbox.keys.master import KEY_BYTES, KEY_ID, MasterKeyRing, check_private
from sandbox.keys.master import write_private as _write_private
from sandbox.keys.signing import KeyRing

__all__ = [
    "HMAC_DIR",
    "HMAC_ENV_VAR",
    "AuditKeys",
    "AuditRings",
    "HmacRing",
    "load_hmac_ring",
    "rotate_hmac_ring",
]

HMAC_ENV_VAR: Final = "VEIL_AUDIT_HMAC_KEY"  # named in error messages; read by sandbox.config
HMAC_DIR: Final = "audit-hmac"
CURRENT_FILE: Final = "current"


@dataclass(frozen=True)
class HmacRing:
    """HMAC keys by id; ``current_id`` MACs new entries, every key checks old ones."""

    current_id: str
    keys: Mapping[str, bytes]
    # The ring as the key directory holds it now (set by sandbox.keys.live): asked once for a
    # key id this ring lacks.
    reload: Callable[[], HmacRing] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.current_id not in self.keys:
            raise MasterKeyError(f"current audit HMAC key {self.current_id!r} is not in the ring")
        for kid, key in self.keys.items():
            if not KEY_ID.match(kid) or len(key) != KEY_BYTES:
                raise MasterKeyError(f"audit HMAC key {kid!r} is malformed (need 32 bytes)")

    def mac(self, kid: str, digest: bytes) -> str | None:
        """Hex HMAC-SHA256 of ``digest`` under key ``kid``; ``None`` if the ring lacks it."""
        key = self.keys.get(kid)
        if key is None and self.reload is not None:
            fresh = self.reload()  # rotated by another process since this ring was read?
            if kid in fresh.keys:
                return fresh.mac(kid, digest)
        if key is None:
            return None
        return hmac.new(key, digest, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class AuditRings:
    """The three rings the audit log works with, as read at one moment."""

    master: MasterKeyRing
    hmac: HmacRing
    signing: KeyRing


class AuditKeys:
    """What the audit log needs: master keys (wrap data keys), HMAC keys, checkpoint keys.

    Each attribute is a ring as it is now: fixed rings (``AuditKeys(master, hmac, signing)``),
    or, with :meth:`following`, the rings of a source that follows the key directory (the
    server's, :mod:`sandbox.keys.live`). Read an attribute once per use: two reads may fall on
    either side of a rotation."""

    __slots__ = ("_now",)

    def __init__(self, master: MasterKeyRing, hmac: HmacRing, signing: KeyRing) -> None:
        fixed = AuditRings(master, hmac, signing)
        self._now: Callable[[], AuditRings] = lambda: fixed

    @classmethod
    def following(cls, now: Callable[[], AuditRings]) -> AuditKeys:
        """Keys that are ``now()`` at every read."""
        keys = cls.__new__(cls)
        keys._now = now
        return keys

    @property
    def master(self) -> MasterKeyRing:
        return self._now().master

    @property
    def hmac(self) -> HmacRing:
        return self._now().hmac

    @property
    def signing(self) -> KeyRing:
        return self._now().signing


def _from_env(value: str) -> HmacRing:
    keys: dict[str, bytes] = {}
    order: list[str] = []
    for part in value.split(","):
        kid, sep, encoded = part.strip().partition(":")
        if not sep or not KEY_ID.match(kid):
            raise MasterKeyError(f"{HMAC_ENV_VAR} must be 'kid:base64' entries separated by commas")
        try:
            keys[kid] = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise MasterKeyError(f"{HMAC_ENV_VAR}: key {kid!r} is not valid base64") from None
        order.append(kid)
    return HmacRing(order[0], keys)


def _new_key_id() -> str:
    return f"hk-{now():%Y%m%d}-{secrets.token_hex(3)}"


def _add_key(directory: Path) -> None:
    kid = _new_key_id()
    _write_private(directory / HMAC_DIR / f"{kid}.key", secrets.token_bytes(KEY_BYTES))
    _write_private(directory / HMAC_DIR / CURRENT_FILE, kid.encode())


def _from_dir(directory: Path, *, create: bool) -> HmacRing:
    ring_dir = directory / HMAC_DIR
    current_file = ring_dir / CURRENT_FILE
    if not current_file.exists():
        if not create:
            raise MasterKeyError(f"no audit HMAC key at {ring_dir}")
        _add_key(directory)
    check_private(ring_dir)
    keys: dict[str, bytes] = {}
    for path in sorted(ring_dir.glob("*.key")):
        check_private(path)
        keys[path.stem] = path.read_bytes()
    check_private(current_file)
    return HmacRing(current_file.read_text().strip(), keys)


def load_hmac_ring(directory: Path, secret: SecretStr | None, *, create: bool = True) -> HmacRing:
    """The ring from ``secret`` (``VEIL_AUDIT_HMAC_KEY``) if set and not empty, else from
    ``<directory>/audit-hmac``."""
    if secret is not None and secret.get_secret_value():
        return _from_env(secret.get_secret_value())
    return _from_dir(directory, create=create)


def rotate_hmac_ring(directory: Path) -> HmacRing:
    """Add a new current HMAC key in ``<directory>/audit-hmac``; old keys stay for checking.

    Callers hold the key directory lock (:mod:`sandbox.keys.directory`)."""
    _from_dir(directory, create=True)
    _add_key(directory)
    return _from_dir(directory, create=False)
