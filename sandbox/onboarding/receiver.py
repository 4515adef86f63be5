"""The file side of an upload: one request's bytes written to the upload's file, all or nothing.

A :class:`Receiver` is opened by :class:`~sandbox.onboarding.uploads.Uploads` for one request
(the first bytes of a new upload, or one more chunk) after every check that needs no bytes. The
HTTP edge hands it the body as it streams (:meth:`Receiver.write`), never holding more than one
piece in memory, then calls :meth:`Receiver.finish` (the bytes are synced to disk and recorded)
or, on any failure, :meth:`Receiver.abort`: a new upload's file is removed, a chunk's bytes are
cut off again, so a refused request leaves nothing behind. Past ``limit`` bytes it refuses
(``upload_too_large``); a full disk is ``insufficient_storage``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Final

from sandbox.errors import InsufficientStorage, UploadTooLarge

__all__ = ["MIN_FREE_BYTES", "Receiver", "check_free_space", "file_sha256"]

MIN_FREE_BYTES: Final = 64 * 2**20  # left free on the uploads' disk after an upload's bytes
_BLOCK: Final = 2**20


def check_free_space(directory: Path, needed: int) -> None:
    """Refuse (``insufficient_storage``) unless ``needed`` bytes fit on ``directory``'s disk
    with :data:`MIN_FREE_BYTES` to spare."""
    free = shutil.disk_usage(directory).free
    if free - needed < MIN_FREE_BYTES:
        raise InsufficientStorage(
            "not enough free disk space on the server for this upload", needed=needed
        )


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read block by block."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


class Receiver:
    """Writes one request's bytes at ``start`` of ``path`` (a new file when ``new``), at most
    ``limit`` of them; ``finish`` and ``abort`` are the service's (record it / forget it)."""

    def __init__(
        self,
        path: Path,
        *,
        new: bool,
        start: int,
        limit: int,
        limit_reason: str,
        on_finish: Callable[[Receiver], Any],
        on_abort: Callable[[Receiver], None],
    ) -> None:
        self.path = path
        self.new = new
        self.start = start
        self.limit = limit
        self.limit_reason = limit_reason
        self.received = 0
        self.digest = hashlib.sha256()  # of this request's bytes (the whole file when new)
        self._on_finish = on_finish
        self._on_abort = on_abort
        self._file: BinaryIO | None
        if new:
            self._file = path.open("xb")
        else:
            self._file = path.open("r+b")
            self._file.truncate(start)  # bytes past what was recorded: a chunk cut short
            self._file.seek(start)

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self.received + len(data) > self.limit:
            raise UploadTooLarge(self.limit_reason, limit=self.start + self.limit)
        assert self._file is not None, "written after it was closed"
        try:
            self._file.write(data)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage("the server's disk is full") from None
            raise
        self.received += len(data)
        self.digest.update(data)

    def _close(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            finally:
                self._file.close()
                self._file = None

    def finish(self) -> Any:
        """Sync the bytes to disk and record them (the service's answer); on failure, abort."""
        try:
            self._close()
            return self._on_finish(self)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Forget this request's bytes: remove a new file, or cut a chunk off again."""
        try:
            if self._file is not None:
                self._file.close()
                self._file = None
        finally:
            if self.new:
                self.path.unlink(missing_ok=True)
            elif self.path.exists():
                os.truncate(self.path, self.start)
            self._on_abort(self)
