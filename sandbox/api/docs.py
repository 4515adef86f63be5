"""The interactive API docs, served whole by Veil: Swagger UI at ``/docs`` and ReDoc at ``/redoc``
load their script, style sheet and icon from ``/docs/assets/``, never from a CDN, so that they
work in an air-gapped zone. Both read the app's OpenAPI document (``/openapi.json``).

The assets are the builds shipped in the pinned ``fastapi-offline`` package (1.7.7, MIT):
Swagger UI 5.32.6 (swagger-ui-dist, Apache-2.0) and ReDoc 2.5.3 (MIT). Only its files are used;
the pages are FastAPI's own, pointed at them.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from sandbox.api.bodies import BodyRoute

SWAGGER = "/docs"
REDOC = "/redoc"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
ASSETS = "/docs/assets"
FILES = Path(fastapi_offline.__file__).parent / "static"
SWAGGER_JS, SWAGGER_CSS, REDOC_JS, FAVICON = (
    "swagger-ui-bundle.js",
    "swagger-ui.css",
    "redoc.standalone.js",
    "favicon.png",
)
HTML: dict[int | str, dict[str, object]] = {200: {"content": {"text/html": {}}}}
# Every path of the docs: requests for them are not recorded in the audit log.
PATHS = frozenset(
    {SWAGGER, REDOC, OAUTH2_REDIRECT}
    | {f"{ASSETS}/{name}" for name in (SWAGGER_JS, SWAGGER_CSS, REDOC_JS, FAVICON)}
)


def install(app: FastAPI) -> None:
    """Serve the docs pages and their assets; ``app`` is built with ``docs_url=None`` and
    ``redoc_url=None`` (FastAPI's own pages load from a CDN)."""
    app.mount(ASSETS, StaticFiles(directory=FILES), name="docs-assets")
    router = APIRouter(route_class=BodyRoute)  # like every route of the app

    def urls(request: Request) -> tuple[str, str]:
        root = str(request.scope.get("root_path", ""))
        return root + str(app.openapi_url), root + ASSETS

    @router.get(SWAGGER, include_in_schema=False, response_class=HTMLResponse, responses=HTML)
    def swagger(request: Request) -> HTMLResponse:
        openapi, assets = urls(request)
        return get_swagger_ui_html(
            openapi_url=openapi,
            title=f"{app.title} - API docs",
            oauth2_redirect_url=OAUTH2_REDIRECT,
            swagger_js_url=f"{assets}/{SWAGGER_JS}",
            swagger_css_url=f"{assets}/{SWAGGER_CSS}",
            swagger_favicon_url=f"{assets}/{FAVICON}",
            swagger_ui_parameters={"validatorUrl": None},  # no badge from validator.swagger.io
        )

    @router.get(
        OAUTH2_REDIRECT, include_in_schema=False, response_class=HTMLResponse, responses=HTML
    )
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @router.get(REDOC, include_in_schema=False, response_class=HTMLResponse, responses=HTML)
    def redoc(request: Request) -> HTMLResponse:
        openapi, assets = urls(request)
        return get_redoc_html(
            openapi_url=openapi,
            title=f"{app.title} - API reference",
            redoc_js_url=f"{assets}/{REDOC_JS}",
            redoc_favicon_url=f"{assets}/{FAVICON}",
            with_google_fonts=False,
        )

    app.include_router(router)
