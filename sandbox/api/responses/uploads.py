"""Uploads (``/v1/zones/{zone}/datasets/{dataset}/uploads``): the wire form of
:class:`sandbox.onboarding.uploads.Upload`."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from sandbox.api.responses.base import View
from sandbox.onboarding import uploads


class Upload(View):
    mirrors = uploads.Upload

    id: str
    zone: str
    dataset: str
    provider: str | None = Field(description="The provider whose folder holds the file.")
    name: str | None = Field(description="The file name the client gave (Upload-Name), if any.")
    state: str = Field(description="receiving (send more chunks) or complete.")
    length: int | None = Field(description="The file's length in bytes, as declared or received.")
    received: int = Field(description="Bytes received: the next chunk's Upload-Offset.")
    sha256: str | None = Field(description="SHA-256 of the file, once complete.")
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = Field(
        description="When an unfinished upload is deleted unless a chunk comes first."
    )
    source: str = Field(description="What a load names as its source: upload:<id>.")


class UploadList(View):
    uploads: list[Upload]
