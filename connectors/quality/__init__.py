"""Data quality at ingest: the rules a policy may set, the profile of a loaded workspace, the
report of a load, and its HTML page.

:mod:`~connectors.quality.report` is the report model (aggregate counts and rates only — never a
row or another value; for the provider and the operator, not for tenants);
:mod:`~connectors.quality.profile` computes it over a freshly written workspace;
:mod:`~connectors.quality.rules` reads the policy's quality rules and checks them against it;
:mod:`~connectors.quality.html` renders it as a page.
"""
