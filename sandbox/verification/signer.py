"""Signing many receipts at once: a small pool of signer processes.

An Ed25519 signature costs ~50-100 µs here and ``cryptography`` holds the GIL while it signs, so
a 10,000-line batch spends most of a second signing in one thread. Large batches are therefore
signed by ``processes`` spawned worker processes holding the current receipt key, in chunks, while
the server process builds the next documents. Small jobs (a single verification) sign in the
server process. The pool starts on the first large batch and is closed with the app.

The workers import nothing but ``cryptography``; they hold the same private key as the server
process (same host, same user) and sign only what they are sent.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["CHUNK", "Signer"]

log = logging.getLogger(__name__)

CHUNK: Final = 500  # messages per job; also the smallest job worth sending to the pool

_worker_keys: dict[bytes, Ed25519PrivateKey] = {}  # in a signer process: the keys it was sent


def _sign_chunk(raw: bytes, messages: list[bytes]) -> list[bytes]:
    key = _worker_keys.get(raw)
    if key is None:  # a new key (the first, or one rotated in): keep only the latest
        _worker_keys.clear()
        key = _worker_keys[raw] = Ed25519PrivateKey.from_private_bytes(raw)
    return [key.sign(m) for m in messages]


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


class Signer:
    """Signs with ``key`` (or the key a job names: the current one of a rotated ring):
    in-process for small jobs, in a process pool for large ones."""

    def __init__(self, key: Ed25519PrivateKey, processes: int) -> None:
        self._key = key
        self._processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _executor(self) -> ProcessPoolExecutor | None:
        if self._processes < 1:
            return None
        with self._lock:
            if self._closed:
                return None
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self._processes,
                    mp_context=multiprocessing.get_context("spawn"),
                )
                log.info("receipt signer pool started with %d processes", self._processes)
            return self._pool

    def submit(
        self, messages: Sequence[bytes], key: Ed25519PrivateKey | None = None
    ) -> Future[list[bytes]]:
        """Signatures of ``messages`` by ``key`` (default: the signer's), in order (a future:
        large jobs run in the pool)."""
        key = key if key is not None else self._key
        pool = self._executor() if len(messages) >= CHUNK else None
        if pool is not None:
            try:
                return pool.submit(_sign_chunk, _raw(key), list(messages))
            except RuntimeError:  # shut down meanwhile, or broken (a worker died): sign here
                self._discard(pool)
        done: Future[list[bytes]] = Future()
        done.set_result([key.sign(m) for m in messages])
        return done

    def failed(self) -> None:
        """A job of the pool failed (e.g. a signer process died): start afresh next time."""
        with self._lock:
            pool = self._pool
        if pool is not None:
            self._discard(pool)

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        """Forget a broken pool (the next large job starts a new one)."""
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
