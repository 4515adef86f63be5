"""Prometheus metrics of a server: counters the HTTP edge keeps, and the live state (ledger
totals, executor pool, facts index) read when scraped. See docs/operations.md."""
