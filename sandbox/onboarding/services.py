"""The onboarding services, built together once: by the server in its lifespan, or by a ``veil``
command on a data directory.

None holds per-request state: the acting member is an argument of each call (``None`` for the
local administrator), so one set serves every request and thread. They share the state store
(``engine``); loads also need the workspace directory, the load quota and the master keys that
seal versions; issues need the zone secret that keys subject references like receipts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from sandbox.keys.master import MasterKeyRing
from sandbox.onboarding.issues import Issues
from sandbox.onboarding.loads import Loads
from sandbox.onboarding.providers import Providers
from sandbox.onboarding.versions import Versions
from sandbox.onboarding.zones import Zones

__all__ = ["Onboarding"]


@dataclass(frozen=True)
class Onboarding:
    """Zones, providers, loads, versions (with quality reports) and issues."""

    zones: Zones
    providers: Providers
    loads: Loads
    versions: Versions
    issues: Issues

    @classmethod
    def build(
        cls,
        engine: Engine,
        workspace_dir: Path,
        *,
        quota_bytes: int | None = None,
        zone_secret: bytes | None = None,
        master_keys: MasterKeyRing | None = None,
    ) -> Onboarding:
        """The services over ``engine`` and ``workspace_dir``; see :class:`Loads` and
        :class:`Issues` for the keyword arguments."""
        return cls(
            zones=Zones(engine),
            providers=Providers(engine),
            loads=Loads(engine, workspace_dir, quota_bytes=quota_bytes, master_keys=master_keys),
            versions=Versions(engine),
            issues=Issues(engine, zone_secret=zone_secret),
        )
