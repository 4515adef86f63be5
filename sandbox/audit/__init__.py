"""The audit log: hash-chained, MAC-ed and sealed entries, signed checkpoints, verification."""
