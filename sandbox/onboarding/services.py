"""The onboarding services, built together once: by the server in its lifespan, or by a ``veil``
command on a data directory.

None holds per-request state: the :class:`~sandbox.access.model.Actor` is an argument of each
call that acts for someone, so one set serves every request and thread. They share the state
store (``engine``) and its audit log, which every change is recorded in (a service refuses to be
built without it); loads also need the workspace directory, the load quota and the master keys
that seal versions; issues need the zone secret that keys subject references like receipts;
uploads need their folder (``<data_dir>/uploads``), their size cap and their expiry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine

from sandbox.audit.log import AuditLog, require_log
from sandbox.keys.master import MasterKeys
from sandbox.keys.signing import SigningKeys
from sandbox.onboarding.authority import Authority
from sandbox.onboarding.issues import Issues
from sandbox.onboarding.loads import Loads
from sandbox.onboarding.providers import Providers
from sandbox.onboarding.uploads import Uploads
from sandbox.onboarding.versions import Versions
from sandbox.onboarding.zones import Zones

__all__ = ["Onboarding"]


@dataclass(frozen=True)
class Onboarding:
    """Zones, providers, uploads, loads, versions (with quality reports) and issues."""

    zones: Zones
    providers: Providers
    loads: Loads
    versions: Versions
    issues: Issues
    uploads: Uploads
    authority: Authority

    @classmethod
    def build(
        cls,
        engine: Engine,
        audit: AuditLog,
        workspace_dir: Path,
        *,
        quota_bytes: int | None = None,
        zone_secret: bytes | None = None,
        master_keys: MasterKeys | None = None,
        upload_max_bytes: int = 2**30,
        upload_expiry: timedelta = timedelta(days=1),
        signing: SigningKeys | None = None,
    ) -> Onboarding:
        """The services over ``engine``, recording in ``audit``, and ``workspace_dir`` (uploads
        in ``uploads`` beside it); see :class:`Loads`, :class:`Issues` and :class:`Uploads` for
        the keyword arguments."""
        audit = require_log(audit, "onboarding")
        uploads = Uploads(
            engine,
            audit,
            workspace_dir.parent / "uploads",
            max_bytes=upload_max_bytes,
            expiry=upload_expiry,
        )
        return cls(
            zones=Zones(engine, audit),
            providers=Providers(engine, audit),
            loads=Loads(
                engine,
                audit,
                workspace_dir,
                quota_bytes=quota_bytes,
                master_keys=master_keys,
                uploads=uploads,
            ),
            versions=Versions(engine, audit),
            issues=Issues(engine, audit, zone_secret=zone_secret),
            uploads=uploads,
            authority=Authority(engine, audit, workspace_dir, signing),
        )
