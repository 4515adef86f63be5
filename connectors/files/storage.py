"""Where a file source's files are: listed, sized and opened, on the local disk.

A :class:`FileStorage` turns a source location — one file, a directory (its files, hidden and
``_``-prefixed ones left out), or a glob — into the files it names, in name order with their
sizes, and opens them for the format readers, turning filesystem failures into
``SourceError``s that name the file. Object storage is a subclass
(:class:`connectors.s3.S3Storage`).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any, ClassVar

import pyarrow.fs as pafs

from connectors.errors import SourceNotFound, SourceUnreachable

__all__ = ["FileStorage"]


class FileStorage:
    """Files on the local disk (or, subclassed, any Arrow filesystem)."""

    options: ClassVar[tuple[str, ...]] = ()
    """The source options this storage takes (besides the file options)."""

    def __init__(self, location: str) -> None:
        self.location = location

    @property
    def filesystem(self) -> pafs.FileSystem:
        return pafs.LocalFileSystem()

    @property
    def is_local(self) -> bool:
        """Whether the files are local paths that DuckDB can read itself."""
        return True

    def display(self, path: str) -> str:
        """A file's name in messages."""
        return path

    def expand(self) -> list[tuple[str, int]]:
        """(path, size) of every file of the source, in name order."""
        pattern = os.path.expanduser(self.location)
        try:
            if glob.has_magic(pattern):
                paths = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
                if not paths:
                    raise SourceNotFound("no file matches the pattern", file=pattern)
            elif os.path.isdir(pattern):
                paths = sorted(
                    str(p) for p in Path(pattern).iterdir() if p.is_file() and p.name[0] not in "._"
                )
                if not paths:
                    raise SourceNotFound("the directory holds no files", file=pattern)
            elif os.path.isfile(pattern):
                paths = [pattern]
            elif os.path.exists(pattern):
                raise SourceNotFound("not a regular file", file=pattern)
            else:
                raise SourceNotFound("the file does not exist", file=pattern)
            out = []
            for p in paths:
                path = os.path.abspath(p)
                if not os.access(path, os.R_OK):
                    raise SourceUnreachable(
                        "the file cannot be read (permission denied)", file=path
                    )
                out.append((path, os.path.getsize(path)))
            return out
        except OSError as exc:
            raise SourceUnreachable(
                f"the files cannot be listed ({type(exc).__name__})", file=pattern
            ) from None

    def input_file(self, path: str) -> Any:
        """``path`` opened for random access."""
        try:
            return self.filesystem.open_input_file(path)
        except FileNotFoundError:
            raise SourceNotFound("the file does not exist", file=self.display(path)) from None
        except OSError as exc:
            raise SourceUnreachable(
                f"the file cannot be opened ({type(exc).__name__})", file=self.display(path)
            ) from None

    def input_stream(self, path: str) -> Any:
        """``path`` opened for reading front to back."""
        try:
            return self.filesystem.open_input_stream(path)
        except FileNotFoundError:
            raise SourceNotFound("the file does not exist", file=self.display(path)) from None
        except OSError as exc:
            raise SourceUnreachable(
                f"the file cannot be opened ({type(exc).__name__})", file=self.display(path)
            ) from None
