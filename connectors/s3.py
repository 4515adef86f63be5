"""S3-compatible object storage, through PyArrow's ``S3FileSystem``.

``s3://bucket/key`` names one object; ``s3://bucket/prefix/*.parquet`` (``*`` and ``?`` within one
path segment, ``**`` across segments) names many, read in key order. The format comes from the key's
extension or ``format=``; every option of a file source (:mod:`connectors.files.connector`)
applies. Storage options: ``endpoint_url`` (e.g. ``http://127.0.0.1:9000`` for MinIO or a test
server), ``region``, ``anonymous`` (``true`` for public buckets), and ``access_key``/``secret_key``
— better left to the standard ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` environment, which
is used by default. :class:`S3Storage` lists and opens the objects; the format readers are those
of local files.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Final
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from connectors.errors import InvalidSource, SourceNotFound, SourceUnreachable
from connectors.files.connector import FileConnector
from connectors.files.storage import FileStorage
from connectors.source import SourceSpec, option_bool

__all__ = ["S3_OPTIONS", "S3Connector", "S3Storage", "s3_filesystem"]

S3_OPTIONS: Final = ("endpoint_url", "region", "anonymous", "access_key", "secret_key")
_GLOB: Final = re.compile(r"[*?\[]")


def s3_filesystem(options: dict[str, str] | None = None) -> pafs.S3FileSystem:
    """An ``S3FileSystem`` from source options, failing fast on an unreachable endpoint."""
    options = options or {}
    kwargs: dict[str, object] = {
        "connect_timeout": 5,
        "request_timeout": 60,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=2),
    }
    endpoint = options.get("endpoint_url")
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidSource("endpoint_url is http(s)://host[:port]")
        kwargs["endpoint_override"] = parts.netloc
        kwargs["scheme"] = parts.scheme
    if options.get("region"):
        kwargs["region"] = options["region"]
    if option_bool(options, "anonymous", False):
        kwargs["anonymous"] = True
    elif options.get("access_key") or options.get("secret_key"):
        if not (options.get("access_key") and options.get("secret_key")):
            raise InvalidSource("give both access_key and secret_key, or neither")
        kwargs["access_key"] = options["access_key"]
        kwargs["secret_key"] = options["secret_key"]
    return pafs.S3FileSystem(**kwargs)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(ch))
            else:
                out.append("[" + pattern[i + 1 : end].replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z")


class S3Storage(FileStorage):
    """Objects in an S3-compatible bucket, named by an ``s3://`` location and storage options."""

    options = S3_OPTIONS

    def __init__(self, spec: SourceSpec) -> None:
        if not spec.location.startswith("s3://"):
            raise InvalidSource("not an s3:// source")
        super().__init__(spec.location)
        self.source_options = dict(spec.options)
        self.key = spec.location[len("s3://") :]  # bucket/key, the filesystem's path

    @cached_property
    def filesystem(self) -> pafs.FileSystem:
        return s3_filesystem(self.source_options)

    @property
    def is_local(self) -> bool:
        return False

    def display(self, path: str) -> str:
        return f"s3://{path}"

    def expand(self) -> list[tuple[str, int]]:
        fs = self.filesystem
        try:
            match = _GLOB.search(self.key)
            if match is None:
                info = fs.get_file_info(self.key)
                if info.type == pafs.FileType.File:
                    return [(self.key, int(info.size or 0))]
                if info.type == pafs.FileType.Directory:
                    selector = pafs.FileSelector(self.key, recursive=False)
                    found = [
                        (i.path, int(i.size or 0))
                        for i in fs.get_file_info(selector)
                        if i.type == pafs.FileType.File and not i.base_name.startswith(("_", "."))
                    ]
                    if found:
                        return sorted(found)
                raise SourceNotFound("no such object", file=self.location)
            base = self.key[: match.start()].rpartition("/")[0]
            if not base:
                raise InvalidSource("a glob needs a bucket name before it", file=self.location)
            regex = _glob_regex(self.key)
            selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
            found = [
                (i.path, int(i.size or 0))
                for i in fs.get_file_info(selector)
                if i.type == pafs.FileType.File and regex.match(i.path)
            ]
            if not found:
                raise SourceNotFound("no object matches the pattern", file=self.location)
            return sorted(found)
        except OSError as exc:
            raise SourceUnreachable(
                f"the object store cannot be reached or refused the listing ({type(exc).__name__})",
                file=self.location,
            ) from None


class S3Connector(FileConnector):
    """Files in an S3-compatible bucket."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec, S3Storage(spec))
