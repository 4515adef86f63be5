"""Missing-value codes: the values a policy declares as "no answer" (``missing = [98, 99]``),
made NULL by the load and counted for the quality report.

The codes are values of the column's declared type, so they are compared after conversion,
whatever the source (CSV text ``"098"`` and a Parquet ``int32`` 98 are both the integer 98).
:func:`connectors.load.ingest` applies them to every table's stream.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import pyarrow as pa
import pyarrow.compute as pc

from connectors.convert import arrow_type
from policies.model import Table

__all__ = ["apply_missing", "missing_codes"]


def missing_codes(table: Table) -> dict[str, pa.Array]:
    """Each column of ``table`` with missing codes, and the codes as an array of its type."""
    return {
        col.name: pa.array(list(col.missing), type=arrow_type(col.type))
        for col in table.columns
        if col.missing
    }


def apply_missing(
    batch: pa.RecordBatch, codes: Mapping[str, pa.Array], counts: MutableMapping[str, int]
) -> pa.RecordBatch:
    """``batch`` with every value equal to one of its column's ``codes`` made NULL; the number of
    values so made NULL is added to ``counts`` per column."""
    arrays = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        value_set = codes.get(name)
        if value_set is not None:
            hit = pc.is_in(column, value_set=value_set)  # NULL is no code: false
            found = pc.sum(hit).as_py() or 0
            if found:
                counts[name] = counts.get(name, 0) + found
                column = pc.if_else(hit, pa.scalar(None, column.type), column)
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)
