"""The key directory as a running server sees it: every ring, following rotation by others.

``veil keys rotate`` (or another server process, or a deployment) may change the key directory
while a server runs. :class:`LiveKeys` holds the rings read at start and reads them again when
the directory changed: it compares the files a rotation replaces (each ring's ``current`` file
or current key, and the directories retired or older keys go to) at most every
:data:`RECHECK_S` seconds, and at once when a master or audit HMAC key id turns up that the ring
lacks (a version sealed, or an audit entry written, under a key made after the ring was read).
A ring is read under the key directory's lock, so it is never half-rotated.

What a server builds its services with: :attr:`LiveKeys.master` (:class:`MasterKeys`: the vault
and loads), :attr:`LiveKeys.receipt` (:class:`SigningKeys`: receipts and ``GET /v1/keys``),
:attr:`LiveKeys.audit` (:class:`AuditKeys`: the audit log) and :attr:`LiveKeys.audit_signing`
(checkpoints). Each use asks for the ring once and keeps it for that use, so a key id written
into a document and the key that signs it always belong together.

Rings from ``VEIL_MASTER_KEY`` or ``VEIL_AUDIT_HMAC_KEY`` come from the process environment,
which does not change: rotating those takes a restart.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Generic, TypeVar

from pydantic import SecretStr

from sandbox.keys import directory as keystore
from sandbox.keys.audit import HMAC_DIR, AuditKeys, AuditRings, HmacRing
from sandbox.keys.master import MASTER_DIR, MasterKeyRing
from sandbox.keys.signing import KeyRing

__all__ = ["RECHECK_S", "LiveKeys"]

log = logging.getLogger("veil.keys")

RECHECK_S: Final = 0.5  # how stale a ring may be when no unknown key id forces a re-read
_FORCED_S: Final = 1.0  # an unknown key id re-reads an unchanged directory at most this often

T = TypeVar("T")
_Stamp = tuple[tuple[int, int, int] | None, ...]


@dataclass(frozen=True)
class _Rings:
    receipt: KeyRing
    master: MasterKeyRing
    audit: AuditRings


class Following(Generic[T]):
    """One ring of :class:`LiveKeys`: :meth:`ring` is that ring as it is now."""

    def __init__(self, now: Callable[[], T]) -> None:
        self._now = now

    def ring(self) -> T:
        return self._now()


class LiveKeys:
    """The rings of the key directory ``directory`` (with ``master_key`` and ``hmac_key``, the
    settings' rings that replace the directory's), read again when the directory changes.

    Built once by the server; reading the directory the first time creates missing keys and
    refuses exposed key files (``key_file_exposed``), like :func:`keystore.open_keys`. A later
    re-read never creates a key; one that fails (a key file made readable to others, a key
    gone missing) keeps the rings held and is logged, and an unknown key id stays an error."""

    def __init__(
        self, directory: Path, *, master_key: SecretStr | None, hmac_key: SecretStr | None
    ) -> None:
        self.directory = directory
        self._master_key = master_key
        self._hmac_key = hmac_key
        self._lock = threading.Lock()
        self._stamp = self._fingerprint()
        self._rings, self.zone_secret = self._read(create=True)
        self._checked = self._forced = time.monotonic()
        self.master: Following[MasterKeyRing] = Following(lambda: self._current().master)
        self.receipt: Following[KeyRing] = Following(lambda: self._current().receipt)
        self.audit_signing: Following[KeyRing] = Following(lambda: self._current().audit.signing)
        self.audit = AuditKeys.following(lambda: self._current().audit)

    # -- reading ----------------------------------------------------------------------------------

    def _fingerprint(self) -> _Stamp:
        """What a rotation changes: each ring's current file and the directory of its keys."""
        d = self.directory
        paths = (
            d / "receipt-signing.pem",
            d / "receipt-retired",
            d / "audit-signing.pem",
            d / "audit-retired",
            d / MASTER_DIR,
            d / MASTER_DIR / "current",
            d / HMAC_DIR,
            d / HMAC_DIR / "current",
        )
        stamp: list[tuple[int, int, int] | None] = []
        for path in paths:
            try:
                info = os.stat(path)
            except OSError:
                stamp.append(None)
            else:
                stamp.append((info.st_ino, info.st_mtime_ns, info.st_size))
        return tuple(stamp)

    def _read(self, *, create: bool) -> tuple[_Rings, bytes]:
        """Every ring; ``create`` (the first read only) makes missing keys. A re-read never
        does: a key that went missing is an error, not a new key."""
        receipt, zone_secret = keystore.open_keys(self.directory, create=create)
        audit = keystore.audit_keys(
            self.directory, master_key=self._master_key, hmac_key=self._hmac_key, create=create
        )
        master = replace(audit.master, reload=self._reload_master)
        hmac = replace(audit.hmac, reload=self._reload_hmac)
        return _Rings(receipt, master, AuditRings(master, hmac, audit.signing)), zone_secret

    def _current(self) -> _Rings:
        """The rings, read again first if the directory changed (checked at most every
        :data:`RECHECK_S` seconds)."""
        if time.monotonic() - self._checked < RECHECK_S:
            return self._rings
        return self._refresh(force=False)

    def _refresh(self, *, force: bool) -> _Rings:
        with self._lock:
            moment = time.monotonic()
            self._checked = moment
            stamp = self._fingerprint()
            if stamp == self._stamp and not (force and moment - self._forced >= _FORCED_S):
                return self._rings
            if force:
                self._forced = moment
            try:
                rings, _ = self._read(create=False)
            except Exception as exc:  # keep serving with the rings held; say why
                log.error("the key directory could not be read again: %s", exc)
                return self._rings
            before = self._rings
            self._rings, self._stamp = rings, stamp
        for name, old, new in (
            ("receipt", before.receipt.current_id, rings.receipt.current_id),
            ("master", before.master.current_id, rings.master.current_id),
            ("audit-hmac", before.audit.hmac.current_id, rings.audit.hmac.current_id),
            ("audit", before.audit.signing.current_id, rings.audit.signing.current_id),
        ):
            if old != new:
                log.info("key rotation picked up ring=%s current=%s", name, new)
        return rings

    def _reload_master(self) -> MasterKeyRing:
        return self._refresh(force=True).master

    def _reload_hmac(self) -> HmacRing:
        return self._refresh(force=True).audit.hmac
