"""The dataset versions a verification is answered on: pinned with the decision, cached parsed.

A call pins each template's dataset to its current version in the decision's read transaction,
so the decision, the query and the receipt all name the same version. A version never changes
once loaded, so only its number is read per call; its path and parsed policy come from a cache
of :class:`~sandbox.catalog.DatasetVersion` filled outside any transaction (:meth:`load`).
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import Connection, Engine, bindparam, select

from sandbox import catalog
from sandbox.clock import now
from sandbox.errors import NotFound, ZoneNotAuthorised
from sandbox.store.schema import datasets, zone_authorisations
from sandbox.store.statements import Prepared
from sandbox.verification.lines import Line

__all__ = ["PinnedVersions"]

_CACHED_VERSIONS: Final = 256  # dataset versions kept parsed (they never change)
_CURRENT_VERSIONS = Prepared(
    select(
        datasets.c.id,
        datasets.c.current_version,
        zone_authorisations.c.state,
        zone_authorisations.c.scope,
        zone_authorisations.c.term_start,
        zone_authorisations.c.term_end,
    )
    .outerjoin(zone_authorisations, zone_authorisations.c.zone_id == datasets.c.zone_id)
    .where(datasets.c.id.in_(bindparam("ids", expanding=True)))
)


class PinnedVersions:
    """Pins lines to their datasets' current versions, from a cache of parsed versions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._versions: dict[tuple[str, int], catalog.DatasetVersion] = {}

    def pin(self, con: Connection, lines: list[Line]) -> set[str]:
        """Pin each line to its dataset's current version, as ``con``'s transaction sees it. A
        version never changes once loaded, so its path and policy come from a cache; returns
        the datasets whose current version is not cached yet (and pins nothing then)."""
        wanted = sorted({line.template.dataset for line in lines if line.template is not None})
        rows = _CURRENT_VERSIONS.execute(con, {"ids": wanted}).all()
        at = now()
        refused = {  # the zone's operator is not authorised: nothing is decided or charged
            row.id: reason
            for row in rows
            if (
                reason := catalog.authorisation_refusal(
                    None if row.state is None else row, row.id, "verification", at
                )
            )
        }
        pinned = {
            row.id: self._versions.get((row.id, row.current_version))
            for row in rows
            if row.current_version is not None and row.id not in refused
        }
        missing = {dataset for dataset, version in pinned.items() if version is None}
        if missing:
            return missing
        for line in lines:
            assert line.template is not None
            version = pinned.get(line.template.dataset)
            if line.template.dataset in refused:
                line.error = ZoneNotAuthorised(refused[line.template.dataset])
            elif version is None:
                line.error = NotFound(f"no dataset {line.template.dataset!r}")
            else:
                line.version = version
        return set()

    def load(self, dataset: str) -> None:
        """Cache the dataset's current version (the next read pins it)."""
        try:
            found = catalog.current(self.engine, dataset)
        except NotFound:
            return  # the next read finds no current version and says so
        if len(self._versions) >= _CACHED_VERSIONS:
            self._versions.clear()
        self._versions[(dataset, found.version)] = found
