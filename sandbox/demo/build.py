"""Build the demo zone into a data directory: idempotent, deterministic given a seed.

The zone, its datasets and their policies are files in ``sandbox/demo/data/``; the enterprise
data are generated, cps1988 is a real public extract shipped with its attribution. Four demo
members (an admin, an analyst, a verifier, and a subject speaking for one demo enterprise) get API
keys,
written once to ``DATA_DIR/demo-keys.json`` with the subject's credit code and the verifier's
tenant id (what the subject names when it grants a consent).

The workspaces are stored sealed like any other (:mod:`sandbox.vault`): the generated sources and
the plain workspaces exist only in the build area while the zone is built.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tomllib
from datetime import date
from importlib import resources
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import Engine, select

from connectors.sink import build_workspace, within_row_caps
from policies.accounting import MICRO, PICO, Accounting
from policies.loader import parse_policy
from sandbox import catalog
from sandbox.access.members import create_member
from sandbox.access.model import Actor, MemberRole
from sandbox.access.tenants import create_tenant
from sandbox.audit.log import AuditLog, require_log
from sandbox.demo import synthetic as demo_data
from sandbox.errors import Conflict
from sandbox.keys import directory as keystore
from sandbox.keys.master import MasterKeyRing
from sandbox.ledger.grants import Grants
from sandbox.store.schema import zones
from sandbox.vault.sealed import build_area, build_name, seal, sealed_path

DEMO_FILES = resources.files("sandbox") / "demo" / "data"
KEYS_FILE = "demo-keys.json"
DEMO_BUDGET = 10.0
DEMO_DELTA = 1e-5
DEMO_QUERY_CAP = 2.0


def build_demo(
    engine: Engine,
    data_dir: Path,
    *,
    rows: int = demo_data.DEFAULT_DEMO_ROWS,
    seed: int = demo_data.DEFAULT_SEED,
    master_keys: MasterKeyRing | None = None,
    audit: AuditLog,
) -> dict[str, str]:
    """Create the demo zone unless it exists; returns the demo API keys. Every change is in
    ``audit``, made by the local administrator, like any other.

    ``master_keys`` seal the workspaces; default: those of ``DATA_DIR/keys`` (the default key
    directory; never ``VEIL_MASTER_KEY``, which only the caller's settings hold), created if
    missing."""
    keys_path = data_dir / KEYS_FILE
    zone_doc = tomllib.loads((DEMO_FILES / "zone.toml").read_text(encoding="utf-8"))
    with engine.connect() as con:
        exists = con.execute(select(zones.c.id).where(zones.c.id == zone_doc["id"])).first()
    if exists is not None:
        if not keys_path.exists():
            raise Conflict(
                f"the demo zone exists but {KEYS_FILE} is missing; use a fresh data directory"
            )
        keys: dict[str, str] = json.loads(keys_path.read_text(encoding="utf-8"))
        return keys
    require_log(audit, "the demo build")
    actor = Actor.local()
    catalog.create_zone(
        engine,
        audit,
        actor,
        catalog.Zone(
            id=zone_doc["id"],
            kind=zone_doc["kind"],
            title=zone_doc["title"],
            operator=zone_doc["operator"],
            description=zone_doc.get("description", ""),
        ),
    )
    if master_keys is None:
        master_keys = keystore.master_keys(data_dir / "keys", master_key=None)
    workspaces = data_dir / "workspaces"
    area = build_area(workspaces)
    scratch = area / f"{os.getpid()}-{secrets.token_hex(4)}-demo-sources"  # swept if we die
    dataset_ids = []
    registry: Path | None = None
    try:
        for entry in zone_doc["datasets"]:
            policy_text = (DEMO_FILES / entry["policy"]).read_text(encoding="utf-8")
            policy = parse_policy(policy_text, f"sandbox/demo/data/{entry['policy']}")
            tables = _source_tables(entry["source"], policy.privacy_unit, scratch, rows, seed)
            if entry["source"] == "synthetic:enterprise":
                registry = scratch / "enterprise"
            plain = area / build_name(policy.dataset, 1)
            stored = sealed_path(workspaces, policy.dataset, 1)
            try:
                counts = build_workspace(plain, tables, cluster_by=policy.privacy_unit)
                capped = within_row_caps(plain, policy)
                seal(plain, stored, master_keys, policy.dataset, 1)
            finally:
                plain.unlink(missing_ok=True)
            catalog.add_version(
                engine,
                audit,
                actor,
                zone_doc["id"],
                policy_text,
                stored,
                counts,
                entry["policy"],
                expect_version=1,
                within_row_caps=capped,
            )
            dataset_ids.append(policy.dataset)
        subject = _demo_subject(registry) if registry else None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    keys = _demo_members(engine, audit, actor, dataset_ids, subject)
    tmp = keys_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(keys, indent=2) + "\n", encoding="utf-8")
    os.chmod(tmp, 0o600)
    os.replace(tmp, keys_path)
    return keys


def _source_tables(
    source: str, unit: str, scratch: Path, rows: int, seed: int
) -> dict[str, pa.Table | Path]:
    if source == "synthetic:enterprise":
        out = scratch / "enterprise"
        return dict(demo_data.write_parquet(out, rows, seed=seed))
    table = pq.read_table(str(DEMO_FILES / source))
    ids = pa.array(range(1, table.num_rows + 1), type=pa.int64())
    name = Path(source).stem
    return {name: table.append_column(unit, ids)}


def _demo_subject(source: Path) -> str:
    """A demo enterprise to speak for: in business, and filed tax in each of the last 12 months
    (so the revenue templates give a definite answer). The first such one in register order."""
    tax = pq.read_table(source / "tax.parquet", columns=["credit_code", "month"])
    last = pc.max(tax.column("month")).as_py()
    index = last.year * 12 + last.month - 12  # eleven months before ``last``, 0-based months
    first = date(index // 12, index % 12 + 1, 1)
    recent = tax.filter(pc.greater_equal(tax.column("month"), pa.scalar(first)))
    counts = recent.group_by("credit_code").aggregate([("month", "count_distinct")])
    full = set(
        counts.filter(pc.equal(counts.column("month_count_distinct"), 12))
        .column("credit_code")
        .to_pylist()
    )
    registry = pq.read_table(source / "registry.parquet", columns=["credit_code", "status"])
    for code, status in zip(
        registry.column("credit_code").to_pylist(),
        registry.column("status").to_pylist(),
        strict=True,
    ):
        if status == "in_business" and code in full:
            return str(code)
    raise Conflict("the demo data hold no enterprise in business with 12 months of tax filings")


def _demo_members(
    engine: Engine, audit: AuditLog, actor: Actor, dataset_ids: list[str], subject_id: str | None
) -> dict[str, str]:
    def tenant(name: str, kind: str, purpose_class: str) -> str:
        return create_tenant(engine, audit, actor, name, kind, purpose_class)

    def member(tenant: str, name: str, role: MemberRole, subject: str | None = None) -> str:
        _, key = create_member(engine, audit, actor, tenant, name, role, subject_id=subject)
        return key

    operator = tenant("Zone operator (demo)", "government", "public_welfare")
    bank = tenant("Demo Commercial Bank", "bank", "commercial")
    institute = tenant("Demo Economics Institute", "research", "public_welfare")
    admin_key = member(operator, "demo admin", MemberRole.ADMIN)
    analyst_key = member(institute, "demo analyst", MemberRole.ANALYST)
    verifier_key = member(bank, "demo verifier", MemberRole.VERIFIER)
    grants = Grants(engine, audit)
    for dataset in dataset_ids:
        grants.create_grant(
            actor,
            institute,
            dataset,
            Accounting.PURE,
            budget_micro=int(DEMO_BUDGET * MICRO),
            delta_pico=int(DEMO_DELTA * PICO),
            per_query_cap_micro=int(DEMO_QUERY_CAP * MICRO),
        )
    keys = {"admin": admin_key, "analyst": analyst_key, "verifier": verifier_key}
    if subject_id is not None:
        enterprise = tenant("Demo Enterprise (subject)", "other", "public_welfare")
        subject_key = member(
            enterprise, "demo enterprise representative", MemberRole.SUBJECT, subject_id
        )
        keys.update({"subject": subject_key, "subject_id": subject_id, "verifier_tenant": bank})
    return keys
