"""The master key ring: wraps and unwraps the data keys of encrypted artefacts (envelope keys).

Stored datasets and the sensitive fields of audit entries are encrypted with AES-256-GCM *data
keys*; a data key is stored only *wrapped* (AES-256-GCM under a master key, with the master key's
id and the data key's purpose as associated data). Rotating the master key starts a new current
key; old keys stay in the ring so that everything wrapped before still opens, and nothing is
rewritten.

Where the keys come from, first match wins:

* ``VEIL_MASTER_KEY`` (``Settings.master_key``, handed in by the caller): ``kid:base64`` entries
  separated by commas, the first one current (for deployments that inject secrets through the
  environment; rotation is then theirs to do);
* ``<key_dir>/master/<kid>.key`` (32 raw bytes, mode 0600) with ``<key_dir>/master/current``
  naming the current one; created on first start.

Key files and their directories must not be readable by group or others: a key directory that
is, is refused with an error naming the file (:class:`KeyFileExposed`).

A ring is a snapshot. What needs the ring *as it is now* takes a :class:`MasterKeys` — a fixed
ring is one, and so is the server's view of the key directory, which follows rotation by other
processes (:mod:`sandbox.keys.live`); it asks for :meth:`MasterKeys.ring` once per use. A ring
made by that view also re-reads the directory when asked to unwrap under a key id it lacks.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

from sandbox.clock import now
from sandbox.errors import KeyFileExposed, MasterKeyError

__all__ = [
    "ENV_VAR",
    "KEY_BYTES",
    "MasterKeyRing",
    "MasterKeys",
    "check_private",
    "load_master_keys",
    "rotate_master_key",
    "write_private",
]

ENV_VAR: Final = "VEIL_MASTER_KEY"  # named in error messages; read by sandbox.config only
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
MASTER_DIR: Final = "master"
CURRENT_FILE: Final = "current"
KEY_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_private(path: Path) -> None:
    """Refuse a key file (or directory) that group/others can access or that another user owns."""
    info = path.stat()
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        mode = "700" if path.is_dir() else "600"
        raise KeyFileExposed(
            f"{path} has mode {stat.S_IMODE(info.st_mode):o}; "
            f"it must not be accessible to group or others (chmod {mode})"
        )
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise KeyFileExposed(f"{path} belongs to another user (uid {info.st_uid})")


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (no window where it is readable)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)  # whatever the umask took away from the mode above
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class MasterKeyRing:
    """Master keys by id; ``current_id`` wraps new data keys, every key unwraps."""

    current_id: str
    keys: Mapping[str, bytes]
    # The ring as the key directory holds it now (set by sandbox.keys.live): asked once when a
    # key id is not in this ring, before that is an error.
    reload: Callable[[], MasterKeyRing] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.current_id not in self.keys:
            raise MasterKeyError(f"current master key {self.current_id!r} is not in the ring")
        for kid, key in self.keys.items():
            if not KEY_ID.match(kid) or len(key) != KEY_BYTES:
                raise MasterKeyError(f"master key {kid!r} is malformed (need {KEY_BYTES} bytes)")

    def wrap(self, data_key: bytes, purpose: str) -> tuple[str, bytes]:
        """``(master key id, nonce + ciphertext)`` of ``data_key``, bound to ``purpose``."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.keys[self.current_id]).encrypt(
            nonce, data_key, _aad(self.current_id, purpose)
        )
        return self.current_id, nonce + sealed

    def unwrap(self, kid: str, wrapped: bytes, purpose: str) -> bytes:
        """The data key wrapped by :meth:`wrap`; fails if the key, purpose or bytes differ."""
        key = self.keys.get(kid)
        if key is None and self.reload is not None:
            fresh = self.reload()  # rotated by another process since this ring was read?
            if kid in fresh.keys:
                return fresh.unwrap(kid, wrapped, purpose)
        if key is None:
            raise MasterKeyError(f"master key {kid!r} is not in the ring")
        try:
            return AESGCM(key).decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _aad(kid, purpose)
            )
        except InvalidTag:
            raise MasterKeyError(f"a data key wrapped by {kid!r} failed to open") from None

    @staticmethod
    def new_data_key() -> bytes:
        return AESGCM.generate_key(bit_length=8 * KEY_BYTES)

    def ring(self) -> MasterKeyRing:
        """A fixed ring is its own current state (:class:`MasterKeys`)."""
        return self


class MasterKeys(Protocol):
    """Where the master key ring comes from: :meth:`ring` is the ring as it is now (a fixed
    :class:`MasterKeyRing`, or the server's view of the key directory)."""

    def ring(self) -> MasterKeyRing: ...


def _aad(kid: str, purpose: str) -> bytes:
    return f"veil-wrap\x00{kid}\x00{purpose}".encode()


def _from_env(value: str) -> MasterKeyRing:
    keys: dict[str, bytes] = {}
    order: list[str] = []
    for part in value.split(","):
        kid, sep, encoded = part.strip().partition(":")
        if not sep or not KEY_ID.match(kid):
            raise MasterKeyError(f"{ENV_VAR} must be 'kid:base64' entries separated by commas")
        try:
            keys[kid] = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise MasterKeyError(f"{ENV_VAR}: key {kid!r} is not valid base64") from None
        order.append(kid)
    return MasterKeyRing(order[0], keys)


def _new_key_id() -> str:
    return f"mk-{now():%Y%m%d}-{secrets.token_hex(3)}"


def _from_dir(directory: Path, *, create: bool) -> MasterKeyRing:
    master = directory / MASTER_DIR
    current_file = master / CURRENT_FILE
    if not current_file.exists():
        if not create:
            raise MasterKeyError(f"no master key at {master}")
        kid = _new_key_id()
        write_private(master / f"{kid}.key", MasterKeyRing.new_data_key())
        write_private(current_file, kid.encode())
    check_private(master)
    keys: dict[str, bytes] = {}
    for path in sorted(master.glob("*.key")):
        check_private(path)
        keys[path.stem] = path.read_bytes()
    check_private(current_file)
    return MasterKeyRing(current_file.read_text().strip(), keys)


def load_master_keys(
    directory: Path, secret: SecretStr | None, *, create: bool = True
) -> MasterKeyRing:
    """The ring from ``secret`` (``VEIL_MASTER_KEY``) if set and not empty, else from
    ``<directory>/master`` (see module)."""
    if secret is not None and secret.get_secret_value():
        return _from_env(secret.get_secret_value())
    return _from_dir(directory, create=create)


def rotate_master_key(directory: Path) -> MasterKeyRing:
    """Add a new current master key in ``<directory>/master``; old keys stay for unwrapping.

    Callers hold the key directory lock (:mod:`sandbox.keys.directory`)."""
    _from_dir(directory, create=True)
    kid = _new_key_id()
    write_private(directory / MASTER_DIR / f"{kid}.key", MasterKeyRing.new_data_key())
    write_private(directory / MASTER_DIR / CURRENT_FILE, kid.encode())
    return _from_dir(directory, create=False)
