"""The interactive API docs work in an air-gapped zone: ``/docs`` and ``/redoc`` name no outside
host, and every asset they load is served by Veil itself."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

# Any absolute or protocol-relative URL: a page that names one loads (or links) outside Veil.
OUTSIDE = re.compile(r"(?:https?:)?//[A-Za-z0-9.-]+", re.IGNORECASE)
LOADED = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


def _assets(client: TestClient, page: str) -> set[str]:
    answer = client.get(page)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    html = answer.text
    assert OUTSIDE.findall(html) == [], f"{page} names an outside host"
    assert "/openapi.json" in html
    loaded = set(LOADED.findall(html))
    for url in loaded:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        suffix = url[url.rindex(".") :]
        assert TYPES[suffix] in asset.headers["content-type"], url
        assert len(asset.content) > 1000, url
    return loaded


def test_the_docs_pages_load_nothing_from_outside(client: TestClient) -> None:
    swagger = _assets(client, "/docs")
    assert {u.rsplit("/", 1)[1] for u in swagger} == {
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "favicon.png",
    }
    redoc = _assets(client, "/redoc")
    assert {u.rsplit("/", 1)[1] for u in redoc} == {"redoc.standalone.js", "favicon.png"}
    redirect = client.get("/docs/oauth2-redirect")
    assert redirect.status_code == 200
    assert OUTSIDE.findall(redirect.text) == []
