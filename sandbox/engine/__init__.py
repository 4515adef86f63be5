"""The engine: locked-down DuckDB workspaces and the pool of worker processes that query them."""
