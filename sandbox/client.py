"""A small Python client for the Veil HTTP API (used by the CLI's ``--url`` mode)."""

from __future__ import annotations

from typing import Any

import httpx

from sandbox.errors import VeilError


class RemoteError(VeilError):
    """A problem document returned by a Veil server, re-raised with its code and status."""

    def __init__(self, body: dict[str, Any]) -> None:
        extra = {k: v for k, v in body.items() if k not in ("detail", "status", "code", "title")}
        super().__init__(str(body.get("detail", "")), **extra)
        self.remote_code = str(body.get("code", "remote_error"))
        self.remote_status = int(body.get("status", 500))

    @property
    def error_code(self) -> str:
        return self.remote_code


class Client:
    def __init__(self, url: str, key: str, timeout: float = 60.0) -> None:
        self.http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"detail": response.text[:200], "status": response.status_code}
            raise RemoteError(body)
        if response.status_code == 204:
            return None
        if response.headers.get("content-type", "").startswith("text/csv"):
            return response.text
        return response.json()

    # --- administration (same names and results as sandbox.admin) ---------------------------
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

    # --- queries ------------------------------------------------------------------------------
    def query(self, dataset: str, sql: str, **budget: float) -> dict[str, Any]:
        result: dict[str, Any] = self.call(
            "POST", "/v1/queries", json={"dataset": dataset, "sql": sql, **budget}
        )
        return result
