"""The runtime: workspaces, the locked-down executor, noise, state, the HTTP API, the CLI."""
