"""The Veil client: :class:`Client` (``from sandbox.client import Client``).

The researcher's calls — :meth:`Client.datasets`, :meth:`Client.dataset`, :meth:`Client.preview`,
:meth:`Client.query`, :meth:`Client.budgets` — return the plain results of
:mod:`sandbox.client.results`; the administration and onboarding calls (which the command line's
``--url`` mode uses) return the server's JSON. Every call retries as
:mod:`sandbox.client.transport` says, and every refusal is a typed
:class:`~sandbox.client.errors.ApiError`. See docs/client.md.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote

from sandbox.client.results import Budget, Dataset, Preview, QueryResult
from sandbox.client.transport import Retries, Transport, new_key

UPLOAD_CHUNK_BYTES: Final = 8 * 2**20  # below the server's default body cap (32 MiB)


class Client:
    """A client of the Veil server at ``url``, calling with the API key ``key``.

    ``retries`` says how often a call is tried again (connection errors, 503, 429 with
    ``Retry-After``); ``Retries(attempts=1)`` never retries. Use it as a context manager, or
    call :meth:`close`.
    """

    def __init__(
        self, url: str, key: str, timeout: float = 60.0, retries: Retries | None = None
    ) -> None:
        self.transport = Transport(url, key, timeout, retries or Retries())

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def call(
        self, method: str, path: str, idempotency_key: str | None = None, **kwargs: Any
    ) -> Any:
        """One API call: its JSON (or text) answer; a refusal raises its typed error."""
        return self.transport.request(method, path, idempotency_key, **kwargs).body

    # --- the researcher's calls ---------------------------------------------------------------
    def datasets(self) -> list[Dataset]:
        """The datasets of the catalogue the key may see."""
        return [Dataset.of(d) for d in self.call("GET", "/v1/datasets")["datasets"]]

    def dataset(self, dataset: str) -> Dataset:
        """One dataset, with its public policy (tables, columns, roles; never data)."""
        return Dataset.of(self.call("GET", f"/v1/datasets/{quote(dataset, safe='')}"))

    def preview(
        self,
        dataset: str,
        sql: str,
        epsilon: float | None = None,
        rho: float | None = None,
        delta: float | None = None,
    ) -> Preview:
        """What ``sql`` would cost and the half-widths to expect. Free: touches no data."""
        body = _query_body(dataset, sql, epsilon, rho, delta)
        return Preview.of(self.call("POST", "/v1/queries/preview", new_key(), json=body))

    def query(
        self,
        dataset: str,
        sql: str,
        epsilon: float | None = None,
        rho: float | None = None,
        delta: float | None = None,
        idempotency_key: str | None = None,
    ) -> QueryResult:
        """Run ``sql`` on ``dataset``, spending ``epsilon`` (or ``rho`` on a zCDP grant).

        The call carries one Idempotency-Key (``idempotency_key``, or a new one) on every
        attempt: a retry after a lost answer gets the first answer back, charged once.
        """
        body = _query_body(dataset, sql, epsilon, rho, delta)
        reply = self.transport.request(
            "POST", "/v1/queries", idempotency_key or new_key(), json=body
        )
        return QueryResult.of(reply.body, replayed=reply.replayed)

    def budgets(self, dataset: str | None = None) -> list[Budget]:
        """The caller's tenant's grants (only those on ``dataset``, if given)."""
        found = [Budget.of(b) for b in self.call("GET", "/v1/budgets")["budgets"]]
        return [b for b in found if dataset is None or b.dataset == dataset]

    # --- administration (same names and results as sandbox.access.admin) --------------------
    def create_tenant(self, name: str, kind: str, purpose_class: str) -> dict[str, Any]:
        body = {"name": name, "kind": kind, "purpose_class": purpose_class}
        result: dict[str, Any] = self.call("POST", "/v1/tenants", json=body)
        return result

    def list_tenants(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", "/v1/tenants")["tenants"]
        return result

    def create_member(
        self, tenant: str, name: str, role: str, subject: str | None = None
    ) -> dict[str, Any]:
        path = f"/v1/tenants/{tenant}/members"
        body: dict[str, Any] = {"name": name, "role": role}
        if subject is not None:
            body["subject"] = subject
        result: dict[str, Any] = self.call("POST", path, json=body)
        return result

    def list_members(self, tenant: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", f"/v1/tenants/{tenant}/members")["members"]
        return result

    def issue_key(self, tenant: str, member: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("POST", f"/v1/tenants/{tenant}/members/{member}/keys")
        return result

    def revoke_key(self, tenant: str, member: str, key_id: str) -> None:
        self.call("DELETE", f"/v1/tenants/{tenant}/members/{member}/keys/{key_id}")

    def create_grant(self, tenant: str, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.call("POST", f"/v1/tenants/{tenant}/grants", json=fields)
        return result

    def list_grants(self, tenant: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", f"/v1/tenants/{tenant}/grants")["grants"]
        return result

    def set_sub_budget(self, tenant: str, grant: str, member: str, budget: float) -> dict[str, Any]:
        path = f"/v1/tenants/{tenant}/grants/{grant}/members/{member}"
        result: dict[str, Any] = self.call("PUT", path, json={"budget": budget})
        return result

    def ledger(self, tenant: str | None, dataset: str | None, csv: bool) -> Any:
        params = {"tenant": tenant, "dataset": dataset, "format": "csv" if csv else "json"}
        return self.call("GET", "/v1/ledger", params={k: v for k, v in params.items() if v})

    # --- onboarding (same names and results as the sandbox.onboarding services) -------------
    # ``idempotency_key``: sent as the Idempotency-Key header (a new one when not given), so a
    # retry replays the first answer.
    def post(self, path: str, body: Any = None, idempotency_key: str | None = None) -> Any:
        return self.call("POST", path, idempotency_key or new_key(), json=body)

    def create_zone(
        self, zone: dict[str, str], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.post("/v1/zones", zone, idempotency_key)
        return result

    def list_zones(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", "/v1/zones")["zones"]
        return result

    def get_authorisation(self, zone: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/v1/zones/{zone}/authorisation")
        return result

    def authorise_zone(self, zone: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.call("PUT", f"/v1/zones/{zone}/authorisation", json=body)
        return result

    def zone_transition(
        self, zone: str, action: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """``action``: suspend, resume or exit (with ``{"confirm": zone}``)."""
        result: dict[str, Any] = self.post(f"/v1/zones/{zone}/authorisation/{action}", body)
        return result

    def create_provider(
        self, provider: dict[str, str], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.post("/v1/providers", provider, idempotency_key)
        return result

    def list_providers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", "/v1/providers")["providers"]
        return result

    def add_provider_member(
        self, provider: str, member: str, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        path = f"/v1/providers/{provider}/members"
        result: dict[str, Any] = self.post(path, {"member": member}, idempotency_key)
        return result

    def start_load(
        self, zone: str, dataset: str, load: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Start a load (``load``: policy text, source or sources, provider, cluster_by)."""
        path = f"/v1/zones/{zone}/datasets/{dataset}/versions"
        body = {k: v for k, v in load.items() if v is not None}
        result: dict[str, Any] = self.post(path, body, idempotency_key)
        return result

    def upload(
        self, zone: str, dataset: str, path: Path, chunk_bytes: int = UPLOAD_CHUNK_BYTES
    ) -> dict[str, Any]:
        """Send a local file as an upload, in chunks of ``chunk_bytes`` (each read when it is
        sent), with its length, name and SHA-256; each chunk starts at the bytes the server
        says it has. Returns the complete upload's view."""
        size = path.stat().st_size
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while block := f.read(2**20):
                digest.update(block)
        url = f"/v1/zones/{zone}/datasets/{dataset}/uploads"
        headers = {
            "Upload-Length": str(size),
            "Upload-Name": quote(path.name),
            "Upload-Sha256": digest.hexdigest(),
            "Content-Type": "application/octet-stream",
        }
        with path.open("rb") as f:
            first = f.read(min(chunk_bytes, size))
            view: dict[str, Any] = self.call("POST", url, content=first, headers=headers)
            while view["state"] != "complete":
                f.seek(int(view["received"]))
                piece = f.read(chunk_bytes)
                view = self.call(
                    "PATCH",
                    f"{url}/{view['id']}",
                    content=piece,
                    headers={"Upload-Offset": str(view["received"]),
                             "Content-Type": "application/octet-stream"},
                )  # fmt: skip
        return view

    def get_version(self, zone: str, dataset: str, version: int) -> dict[str, Any]:
        path = f"/v1/zones/{zone}/datasets/{dataset}/versions/{version}"
        result: dict[str, Any] = self.call("GET", path)
        return result

    def get_load(self, zone: str, dataset: str, load: str) -> dict[str, Any]:
        path = f"/v1/zones/{zone}/datasets/{dataset}/loads/{load}"
        result: dict[str, Any] = self.call("GET", path)
        return result

    def list_versions(self, zone: str, dataset: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/v1/zones/{zone}/datasets/{dataset}/versions")
        return result

    def activate(
        self, zone: str, dataset: str, version: int, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        path = f"/v1/zones/{zone}/datasets/{dataset}/versions/{version}/activate"
        result: dict[str, Any] = self.post(path, None, idempotency_key)
        return result

    def quality(
        self,
        dataset: str,
        version: int | None = None,
        html: bool = False,
        load: str | None = None,
    ) -> Any:
        params: dict[str, Any] = {"format": "html" if html else "json"}
        if version is not None:
            params["version"] = version
        if load is not None:
            params["load"] = load
        return self.call("GET", f"/v1/datasets/{dataset}/quality", params=params)

    def raise_issue(
        self, dataset: str, issue: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        body = {k: v for k, v in issue.items() if v is not None}
        result: dict[str, Any] = self.post(f"/v1/datasets/{dataset}/issues", body, idempotency_key)
        return result

    def list_issues(self, dataset: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", f"/v1/datasets/{dataset}/issues")["issues"]
        return result

    def get_issue(self, dataset: str, number: int) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/v1/datasets/{dataset}/issues/{number}")
        return result

    def answer_issue(
        self, dataset: str, number: int, answer: str, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        path = f"/v1/datasets/{dataset}/issues/{number}/answer"
        result: dict[str, Any] = self.post(path, {"answer": answer}, idempotency_key)
        return result

    def resolve_issue(
        self,
        dataset: str,
        number: int,
        resolution: dict[str, Any],
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        path = f"/v1/datasets/{dataset}/issues/{number}/resolve"
        body = {k: v for k, v in resolution.items() if v is not None}
        result: dict[str, Any] = self.post(path, body, idempotency_key)
        return result


def _query_body(
    dataset: str, sql: str, epsilon: float | None, rho: float | None, delta: float | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"dataset": dataset, "sql": sql}
    for name, value in (("epsilon", epsilon), ("rho", rho), ("delta", delta)):
        if value is not None:
            body[name] = float(value)
    return body
