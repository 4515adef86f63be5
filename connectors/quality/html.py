"""The quality report as a self-contained HTML page, for the provider and the operator."""

from __future__ import annotations

import html
from typing import Final

from connectors.quality.report import QualityReport

__all__ = ["render_html"]

_CSS: Final = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#1d2330;max-width:72rem}
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}
th,td{border:1px solid #ccd;padding:.25rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}
.passed{color:#176b2c}.failed{color:#a4161a;font-weight:600}
.muted{color:#667}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.2f}%"


def render_html(report: QualityReport) -> str:
    """A self-contained HTML page of the report; every text is escaped."""
    status = report.status
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Quality report: {_e(report.dataset)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Quality report: {_e(report.dataset)}</h1>",
        "<p>",
        f"Status: <span class='{_e(status)}'>{_e(status)}</span><br>",
        f"Source: {_e(report.source)}<br>",
        f"Loaded: {_e(report.created_at.isoformat(timespec='seconds'))}",
        "</p>",
    ]
    if report.error is not None:
        error = report.error
        parts.append("<h2>Load failed</h2><table>")
        for key in ("code", "detail", "file", "line", "row", "column", "rule"):
            if error.get(key) is not None:
                parts.append(f"<tr><th>{_e(key)}</th><td>{_e(error[key])}</td></tr>")
        parts.append("</table>")
    if report.rules:
        parts.append("<h2>Quality rules</h2><table>")
        parts.append(
            "<tr><th>rule</th><th>table</th><th>column</th><th>limit</th><th>actual</th>"
            "<th>result</th><th>detail</th></tr>"
        )
        for r in report.rules:
            result = "passed" if r.passed else "failed"
            parts.append(
                f"<tr><td>{_e(r.rule)}</td><td>{_e(r.table)}</td><td>{_e(r.column)}</td>"
                f"<td>{_e(r.limit)}</td><td>{_e(_fmt(r.actual))}</td>"
                f"<td class='{result}'>{result}</td><td>{_e(r.message)}</td></tr>"
            )
        parts.append("</table>")
    for t in report.tables:
        parts.append(f"<h2>Table {_e(t.name)}</h2><p>")
        parts.append(f"Rows: {_e(t.rows)}")
        if t.previous_rows is not None:
            rate = "" if t.row_change_rate is None else f", {_signed_pct(t.row_change_rate)}"
            parts.append(
                f" (previous version: {_e(t.previous_rows)}, "
                f"change {_e(_signed(t.row_change))}{_e(rate)})"
            )
        if t.units is not None:
            parts.append(
                f"<br>Privacy units: {_e(t.units)}; in more than one row: "
                f"{_e(t.duplicate_units)} ({_e(t.duplicate_unit_rows)} extra rows); above the "
                f"contribution bound: {_e(t.units_over_bound)}"
            )
        parts.append("</p><table>")
        parts.append(
            "<tr><th>column</th><th>type</th><th>role</th><th>nulls</th><th>null rate</th>"
            "<th>missing codes (made null)</th><th>conversion failures</th>"
            "<th>outside clamp bounds</th><th>outside public keys</th>"
            "<th>date range</th><th>freshness (days)</th></tr>"
        )
        for c in t.columns:
            date_range = (
                f"{c.date_min.isoformat()} – {c.date_max.isoformat()}"
                if c.date_min is not None and c.date_max is not None
                else ""
            )
            oob = (
                f"{c.out_of_bounds} ({_pct(c.out_of_bounds_share)})"
                if c.out_of_bounds is not None
                else ""
            )
            keys = (
                f"{c.keys_outside} ({c.distinct_keys_outside} distinct)"
                if c.keys_outside is not None
                else ""
            )
            parts.append(
                f"<tr><td>{_e(c.name)}</td><td>{_e(c.type)}</td><td>{_e(c.role)}</td>"
                f"<td>{_e(c.nulls)}</td><td>{_e(_pct(c.null_rate))}</td>"
                f"<td>{_e(c.missing_codes)}</td><td>{_e(c.conversion_failures)}</td><td>{_e(oob)}</td><td>{_e(keys)}</td>"
                f"<td>{_e(date_range)}</td><td>{_e(c.freshness_days)}</td></tr>"
            )
        parts.append("</table>")
    parts.append(
        "<p class='muted'>Aggregate counts and rates only; shown to the provider and the "
        "operator.</p></body></html>"
    )
    return "\n".join(parts)


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def _signed_pct(value: float) -> str:
    return f"{value * 100:+.2f}%"


def _signed(value: int | None) -> str:
    return "" if value is None else f"{value:+d}"
