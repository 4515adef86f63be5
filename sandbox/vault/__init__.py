"""Encryption at rest: the sealed format of stored workspaces, their decrypted runtime copies."""
