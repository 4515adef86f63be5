"""The key directory: the receipt signing key ring, the zone secret, the master key ring and
the audit log's keys (HMAC ring and checkpoint signing ring, :mod:`sandbox.keys.audit`).

``<key_dir>/receipt-signing.pem`` (current Ed25519 key, PKCS#8, mode 0600),
``<key_dir>/receipt-retired/<key_id>.pem`` (retired public keys, still published) and
``<key_dir>/zone-secret`` (32 random bytes, mode 0600: keys subject references and claim
fingerprints). Both are created on first start. Creation and rotation hold an exclusive lock on
``<key_dir>/.lock``, so several server processes starting at once agree on one key and one secret.

The master and audit HMAC rings may instead come from ``VEIL_MASTER_KEY`` and
``VEIL_AUDIT_HMAC_KEY``. Callers pass ``settings.master_key`` and ``settings.audit_hmac_key``
(``None``: the directory's): the arguments have no default, so that no caller forgets them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from pydantic import SecretStr

from sandbox.keys.audit import AuditKeys, HmacRing, load_hmac_ring, rotate_hmac_ring
from sandbox.keys.master import MasterKeyRing, load_master_keys, rotate_master_key
from sandbox.keys.signing import KeyRing, load_key_ring, rotate_key_ring

__all__ = [
    "ZONE_SECRET_BYTES",
    "ZONE_SECRET_FILE",
    "audit_keys",
    "master_keys",
    "open_keys",
    "rotate",
    "rotate_audit_hmac",
    "rotate_audit_signing",
    "rotate_master",
]

ZONE_SECRET_FILE: Final = "zone-secret"  # noqa: S105 (a file name)
ZONE_SECRET_BYTES: Final = 32


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _zone_secret(directory: Path, *, create: bool = True) -> bytes:
    path = directory / ZONE_SECRET_FILE
    if not path.exists() and not create:
        raise FileNotFoundError(f"no zone secret at {path}")
    if not path.exists():
        tmp = directory / f".{ZONE_SECRET_FILE}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(ZONE_SECRET_BYTES))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    secret = path.read_bytes()
    if len(secret) < ZONE_SECRET_BYTES:
        raise ValueError(f"{path} must hold at least {ZONE_SECRET_BYTES} bytes")
    return secret


def open_keys(directory: Path, *, create: bool = True) -> tuple[KeyRing, bytes]:
    """The key ring and the zone secret, each created if missing (``create``; without, a
    missing one is an error)."""
    with _locked(directory):
        ring = load_key_ring(directory, create=create)
        return ring, _zone_secret(directory, create=create)


def rotate(directory: Path) -> KeyRing:
    """Retire the current signing key (its public half stays published) and start a new one.

    Running servers pick up the new key (:mod:`sandbox.keys.live`)."""
    with _locked(directory):
        load_key_ring(directory, create=True)
        return rotate_key_ring(directory)


def master_keys(directory: Path, *, master_key: SecretStr | None) -> MasterKeyRing:
    """The master key ring: ``master_key`` (``VEIL_MASTER_KEY``) if set, else
    ``<directory>/master``, created if missing."""
    with _locked(directory):
        return load_master_keys(directory, master_key)


def rotate_master(directory: Path) -> MasterKeyRing:
    """Start a new current master key; data keys wrapped before still open with the old ones."""
    with _locked(directory):
        return rotate_master_key(directory)


def audit_keys(
    directory: Path,
    *,
    master_key: SecretStr | None,
    hmac_key: SecretStr | None,
    create: bool = True,
) -> AuditKeys:
    """The audit log's keys: master ring, HMAC ring and checkpoint signing ring (``master_key``
    and ``hmac_key``, when set, replace the directory's rings). With ``create`` (a server
    starting) missing keys are made; without (``veil audit verify``) a missing key is an error,
    so that verification never runs against fresh keys."""
    with _locked(directory):
        return AuditKeys(
            master=load_master_keys(directory, master_key, create=create),
            hmac=load_hmac_ring(directory, hmac_key, create=create),
            signing=load_key_ring(directory, create=create, name="audit"),
        )


def rotate_audit_signing(directory: Path) -> KeyRing:
    """Retire the checkpoint signing key (its public half stays published for old
    checkpoints) and start a new one."""
    with _locked(directory):
        load_key_ring(directory, create=True, name="audit")
        return rotate_key_ring(directory, name="audit")


def rotate_audit_hmac(directory: Path) -> HmacRing:
    """Start a new current audit HMAC key; entries MAC'd before keep verifying."""
    with _locked(directory):
        return rotate_hmac_ring(directory)
