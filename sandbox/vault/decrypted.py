"""The runtime vault: each current version decrypted once per process into a RAM-backed runtime
directory, leased to queries, and removed when no longer current or at shutdown.

The locked-down workers open these copies read-only exactly like any workspace; a stored
(sealed) file is never opened by the engine (docs/security.md).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Self

from sandbox.errors import (
    ServiceUnavailable,
)
from sandbox.keys.master import MasterKeys
from sandbox.vault.sealed import StoredVersion, _name, _sweep, open_sealed, seal

log = logging.getLogger("veil.vault")
_RUNTIME_PREFIX: Final = "veil-runtime-"


def runtime_root(configured: Path | None) -> Path:
    """The directory that holds the per-process runtime directories of decrypted workspaces:
    ``configured``, else ``/dev/shm`` (RAM), else the system temp directory (with a warning)."""
    if configured is not None:
        configured.mkdir(parents=True, exist_ok=True)
        return configured
    shm = Path("/dev/shm")  # noqa: S108 (RAM-backed on Linux; that is the point)
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm
    fallback = Path(tempfile.gettempdir())
    log.warning(
        "no RAM-backed /dev/shm: decrypted workspaces go to %s, which may be on disk "
        "(set VEIL_RUNTIME_DIR to a tmpfs)",
        fallback,
    )
    return fallback


@dataclass
class _Copy:
    """One decrypted version in the runtime directory and the requests that use it."""

    path: Path
    ready: threading.Event
    leases: int = 0
    error: BaseException | None = None


class Vault:
    """Holds the master keys (``keys``: the ring as it is now, so a server follows rotation)
    and the decrypted copies of the versions this process serves.

    :meth:`lease` decrypts a version the first time it is asked for (concurrent requests for it
    wait for that one decryption) and keeps it until another version of the same dataset is
    leased and no request holds it any more, or until :meth:`close`. Thread-safe. The runtime
    directory is new per process (mode 0700) and removed on close; directories of dead
    processes are removed when the next vault starts.
    """

    def __init__(self, keys: MasterKeys, runtime_dir: Path | None = None) -> None:
        self.keys = keys
        root = runtime_root(runtime_dir)
        _sweep(root, prefix=_RUNTIME_PREFIX)
        self.runtime_dir = Path(
            tempfile.mkdtemp(prefix=f"{_RUNTIME_PREFIX}{os.getpid()}-", dir=root)
        )
        self._lock = threading.Lock()
        self._copies: dict[tuple[str, int], _Copy] = {}
        self._latest: dict[str, int] = {}
        self._closed = False
        self._warmer: threading.Thread | None = None

    def seal(self, plain: Path, stored: Path, dataset: str, version: int) -> None:
        seal(plain, stored, self.keys, dataset, version)

    @contextlib.contextmanager
    def lease(self, version: StoredVersion) -> Iterator[Path]:
        """The path of the decrypted workspace of ``version``, valid inside the ``with``."""
        key = (version.dataset, version.version)
        copy = self._acquire(version)
        try:
            yield copy.path
        finally:
            self._release(key, copy)

    def _acquire(self, version: StoredVersion) -> _Copy:
        key = (version.dataset, version.version)
        with self._lock:
            if self._closed:
                raise ServiceUnavailable("the workspace vault is closed")
            copy = self._copies.get(key)
            owner = copy is None
            if copy is None:
                name = f"{version.dataset}-v{version.version}-{secrets.token_hex(4)}.duckdb"
                copy = self._copies[key] = _Copy(self.runtime_dir / name, threading.Event())
            copy.leases += 1
            self._latest[version.dataset] = version.version
            stale = self._drop_unused(version.dataset)
        _remove(stale)
        if owner:
            try:
                self._decrypt(version, copy.path)
            except BaseException as exc:
                with self._lock:
                    copy.error = exc
                    copy.leases -= 1
                    if self._copies.get(key) is copy:
                        del self._copies[key]
                copy.ready.set()
                raise
            copy.ready.set()
            return copy
        copy.ready.wait()
        if copy.error is not None:
            with self._lock:
                copy.leases -= 1
            raise copy.error
        return copy

    def _release(self, key: tuple[str, int], copy: _Copy) -> None:
        with self._lock:
            copy.leases -= 1
            stale = self._drop_unused(key[0])
        _remove(stale)

    def _drop_unused(self, dataset: str) -> list[Path]:
        """Forget the ready, unleased copies of ``dataset`` other than its latest (lock held)."""
        latest = self._latest.get(dataset)
        gone = [
            k
            for k, c in self._copies.items()
            if k[0] == dataset and k[1] != latest and c.leases == 0 and c.ready.is_set()
        ]
        return [self._copies.pop(k).path for k in gone]

    def _decrypt(self, version: StoredVersion, target: Path) -> None:
        part = target.with_name(f".{target.name}.part")
        started = time.perf_counter()
        try:
            size = open_sealed(
                version.path,
                part,
                self.keys,
                version.dataset,
                version.version,
                cancelled=lambda: self._closed,
            )
        except OSError as exc:
            part.unlink(missing_ok=True)
            reason = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
            raise ServiceUnavailable(
                f"the workspace of {_name(version.dataset, version.version)} could not be "
                f"decrypted into the runtime directory ({reason})"
            ) from None
        os.chmod(part, 0o400)
        os.replace(part, target)
        log.info(
            "workspace decrypted dataset=%s version=%d bytes=%d ms=%.0f",
            version.dataset,
            version.version,
            size,
            (time.perf_counter() - started) * 1000,
        )

    def warm(self, versions: Iterable[StoredVersion]) -> None:
        """Decrypt ``versions`` ahead of their first request; failures are logged by code only
        (the request that needs the version gets the error)."""
        for version in versions:
            if self._closed:
                return
            try:
                with self.lease(version):
                    pass
            except Exception as exc:
                code = getattr(exc, "error_code", type(exc).__name__)
                log.warning(
                    "workspace not decrypted ahead dataset=%s version=%d code=%s",
                    version.dataset,
                    version.version,
                    code,
                )

    def warm_in_background(self, versions: Callable[[], Iterable[StoredVersion]]) -> None:
        """:meth:`warm` on a daemon thread; :meth:`close` waits for it."""

        def run() -> None:
            try:
                self.warm(versions())
            except Exception as exc:
                log.warning("warming the vault failed: %s", type(exc).__name__)

        self._warmer = threading.Thread(target=run, name="veil-vault-warm", daemon=True)
        self._warmer.start()

    def close(self) -> None:
        """Stop decrypting and remove every decrypted copy. Idempotent."""
        with self._lock:
            self._closed = True
            self._copies.clear()
        if self._warmer is not None:
            self._warmer.join(timeout=30)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def leased(vault: Vault | None, version: StoredVersion) -> Iterator[Path]:
    """``vault.lease(version)``; without a vault, the stored path itself (plain workspaces that
    tools and tests build for themselves)."""
    if vault is None:
        yield version.path
    else:
        with vault.lease(version) as path:
            yield path


def _remove(paths: Iterable[Path]) -> None:
    """Unlink decrypted copies; a worker that still has one open keeps reading its inode."""
    for path in paths:
        path.unlink(missing_ok=True)
