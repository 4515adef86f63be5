"""Uploads over HTTP: a file sent for a dataset, whole or in chunks, then loaded by naming it.

The logic is :mod:`sandbox.onboarding.uploads`; see docs/onboarding.md#uploads. The two routes
that take bytes stream the body to the upload's file piece by piece as it arrives (never whole
in memory), each piece written from a worker thread; whatever fails, the request's bytes are
removed again.
"""

from __future__ import annotations

from typing import Annotated, Final
from urllib.parse import unquote

from anyio import to_thread
from fastapi import APIRouter, Header, Path, Request, Response

from sandbox.api.deps import ActorDep, ServicesDep
from sandbox.api.responses import uploads as views
from sandbox.api.responses.base import ViewRoute
from sandbox.errors import InvalidRequest
from sandbox.onboarding.receiver import Receiver

router = APIRouter(prefix="/v1", tags=["onboarding"], route_class=ViewRoute)

UPLOADS: Final = "/zones/{zone}/datasets/{dataset}/uploads"
UploadId = Annotated[str, Path(max_length=64)]


class StreamedRoute(ViewRoute):
    """A route whose body is the upload's bytes: streamed, never read whole (its
    ``Idempotency-Key`` covers these headers instead of the bytes)."""

    streamed_headers: Final = ("content-length", "upload-length", "upload-offset",
                               "upload-sha256", "upload-name")  # fmt: skip


_BODY = {
    "requestBody": {
        "required": False,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _whole(value: str | None, header: str) -> int | None:
    """A header that holds a whole number of bytes."""
    if value is None:
        return None
    if not value.isdigit() or len(value) > 19:
        raise InvalidRequest(
            f"{header} is a whole number of bytes", field=f"header.{header.lower()}"
        )
    return int(value)


async def _stream(request: Request, receiver: Receiver) -> object:
    """Write the body to ``receiver`` as it arrives; finish it, or abort it on any failure."""
    try:
        async for piece in request.stream():
            if piece:
                await to_thread.run_sync(receiver.write, piece)
    except BaseException:
        await to_thread.run_sync(receiver.abort)
        raise
    return await to_thread.run_sync(receiver.finish)


async def create_upload(
    zone: str,
    dataset: str,
    request: Request,
    response: Response,
    actor: ActorDep,
    services: ServicesDep,
    upload_length: Annotated[
        str | None,
        Header(
            description="The file's length in bytes: send it in chunks (PATCH) after this "
            "request's first bytes. Without it, this request's body is the whole file."
        ),
    ] = None,
    upload_name: Annotated[
        str | None,
        Header(
            description="The file's name (percent-encoded UTF-8): its extension tells the "
            "format. Shown only; the server names the stored file."
        ),
    ] = None,
    upload_sha256: Annotated[
        str | None,
        Header(description="SHA-256 of the whole file (hex): checked once it is complete."),
    ] = None,
) -> views.Upload:
    """Start an upload for a dataset (its staff, or a member of the provider that owns it): the
    body is the file, or its first bytes when ``Upload-Length`` is given."""
    length = _whole(upload_length, "Upload-Length")
    try:
        name = unquote(upload_name, errors="strict") if upload_name is not None else None
    except UnicodeDecodeError:
        raise InvalidRequest(
            "Upload-Name is percent-encoded UTF-8", field="header.upload-name"
        ) from None
    receiver = await to_thread.run_sync(
        lambda: services.onboarding.uploads.receive_new(
            actor, zone, dataset, length=length, name=name, sha256=upload_sha256
        )
    )
    upload = await _stream(request, receiver)
    shown = views.Upload.of(upload)
    response.headers["Location"] = f"/v1/zones/{zone}/datasets/{dataset}/uploads/{shown.id}"
    response.headers["Upload-Offset"] = str(shown.received)
    return shown


async def append_upload(
    zone: str,
    dataset: str,
    upload: UploadId,
    request: Request,
    response: Response,
    actor: ActorDep,
    services: ServicesDep,
    upload_offset: Annotated[
        str | None,
        Header(description="Where this chunk starts: the bytes the upload has received."),
    ] = None,
) -> views.Upload:
    """Send the next chunk of an upload: all of it is kept, or none (send it again)."""
    offset = _whole(upload_offset, "Upload-Offset")
    receiver = await to_thread.run_sync(
        lambda: services.onboarding.uploads.receive_more(actor, zone, dataset, upload, offset)
    )
    shown = views.Upload.of(await _stream(request, receiver))
    response.headers["Upload-Offset"] = str(shown.received)
    return shown


router.add_api_route(
    UPLOADS,
    create_upload,
    methods=["POST"],
    status_code=201,
    response_model=views.Upload,
    route_class_override=StreamedRoute,
    openapi_extra=_BODY,
)
router.add_api_route(
    UPLOADS + "/{upload}",
    append_upload,
    methods=["PATCH"],
    response_model=views.Upload,
    route_class_override=StreamedRoute,
    openapi_extra=_BODY,
)


@router.get(UPLOADS, response_model=views.UploadList)
def list_uploads(
    zone: str, dataset: str, actor: ActorDep, services: ServicesDep
) -> views.UploadList:
    """The dataset's uploads (a provider member sees its own provider's)."""
    found = services.onboarding.uploads.list_uploads(actor, zone, dataset)
    return views.UploadList(uploads=[views.Upload.of(u) for u in found])


@router.get(UPLOADS + "/{upload}", response_model=views.Upload)
def get_upload(
    zone: str, dataset: str, upload: UploadId, actor: ActorDep, services: ServicesDep
) -> views.Upload:
    """One upload: how many bytes it has (where to resume), its state and SHA-256."""
    return views.Upload.of(services.onboarding.uploads.get(actor, zone, dataset, upload))


@router.delete(UPLOADS + "/{upload}", status_code=204)
def delete_upload(
    zone: str, dataset: str, upload: UploadId, actor: ActorDep, services: ServicesDep
) -> Response:
    """Delete an upload and its file."""
    services.onboarding.uploads.delete(actor, zone, dataset, upload)
    return Response(status_code=204)
