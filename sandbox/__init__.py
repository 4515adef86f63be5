"""The runtime: workspaces, the locked-down executor, noise, the state store, the HTTP API, the CLI."""
