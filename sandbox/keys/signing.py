"""Ed25519 signing keys in a key directory: the current key and the retired ones (kept, so what
they signed still checks), their key ids, and the published public key document.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sandbox.canonical import b64url_decode, b64url_encode
from sandbox.errors import MalformedReceipt
from sandbox.keys.master import check_private, write_private


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """First 16 hex digits of SHA-256 over the raw 32-byte public key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def save_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM, mode 0600, atomically (replaces ``path``)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(path, pem)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def save_public_key(path: Path, key: Ed25519PublicKey) -> None:
    """Write ``key`` as SubjectPublicKeyInfo PEM."""
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(pem)
    os.replace(tmp, path)


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} does not hold an Ed25519 public key")
    return key


@dataclass(frozen=True)
class KeyRing:
    """The current receipt signing key and the retired public keys that stay published."""

    current: Ed25519PrivateKey
    retired: tuple[Ed25519PublicKey, ...] = ()

    @property
    def current_id(self) -> str:
        return key_id(self.current)

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """key id -> public key, current and retired: what :func:`verify` needs."""
        keys = {key_id(k): k for k in self.retired}
        keys[self.current_id] = self.current.public_key()
        return keys

    def ring(self) -> KeyRing:
        """A fixed ring is its own current state (:class:`SigningKeys`)."""
        return self


class SigningKeys(Protocol):
    """Where a signing ring comes from: :meth:`ring` is the ring as it is now (a fixed
    :class:`KeyRing`, or the server's view of the key directory, which follows rotation). Ask
    once per document: the key id written and the key that signs must be the same ring's."""

    def ring(self) -> KeyRing: ...


CURRENT_KEY_FILE: Final = "receipt-signing.pem"
RETIRED_DIR: Final = "receipt-retired"


def load_key_ring(directory: Path, *, create: bool = False, name: str = "receipt") -> KeyRing:
    """Read ``<directory>/<name>-signing.pem`` (the current private key, which must not be
    accessible to group or others) and ``<directory>/<name>-retired/*.pem`` (retired public
    keys). With ``create``, a missing current key is generated and saved (mode 0600). ``name``
    keeps rings apart: ``receipt`` signs receipts, ``audit`` the audit log's checkpoints."""
    current_path = directory / f"{name}-signing.pem"
    if not current_path.exists():
        if not create:
            raise FileNotFoundError(f"no {name} signing key at {current_path}")
        save_private_key(current_path, generate_key())
    check_private(current_path)
    current = load_private_key(current_path)
    retired_dir = directory / f"{name}-retired"
    retired = tuple(load_public_key(p) for p in sorted(retired_dir.glob("*.pem")))
    current_id = key_id(current)
    return KeyRing(current, tuple(k for k in retired if key_id(k) != current_id))


def rotate_key_ring(directory: Path, name: str = "receipt") -> KeyRing:
    """Retire the current key (its public half stays published) and start a new one."""
    ring = load_key_ring(directory, name=name)
    old = ring.current.public_key()
    save_public_key(directory / f"{name}-retired" / f"{key_id(old)}.pem", old)
    save_private_key(directory / f"{name}-signing.pem", generate_key())
    return load_key_ring(directory, name=name)


def public_key_document(keys: KeyRing) -> dict[str, object]:
    """The body of ``GET /v1/keys``: every key that may have signed a live receipt."""
    entries: list[dict[str, object]] = [
        _key_entry(keys.current.public_key(), "current"),
        *(_key_entry(k, "retired") for k in keys.retired),
    ]
    return {"keys": entries}


def _key_entry(public: Ed25519PublicKey, status: str) -> dict[str, object]:
    return {
        "key_id": key_id(public),
        "algorithm": "Ed25519",
        "public_key": b64url_encode(_raw(public)),
        "status": status,
    }


def public_keys_from_document(document: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """Parse a ``GET /v1/keys`` body (checking each key id) into what :func:`verify` needs."""
    entries = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        raise MalformedReceipt("a key document has a 'keys' list")
    keys: dict[str, Ed25519PublicKey] = {}
    for entry in entries:
        if not isinstance(entry, Mapping) or entry.get("algorithm") != "Ed25519":
            raise MalformedReceipt("each key is an Ed25519 entry")
        try:
            raw = b64url_decode(str(entry.get("public_key", "")))
            public = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise MalformedReceipt("a public key is not 32 bytes of base64url") from None
        if entry.get("key_id") != key_id(public):
            raise MalformedReceipt("a key id does not match its key")
        keys[key_id(public)] = public
    return keys
