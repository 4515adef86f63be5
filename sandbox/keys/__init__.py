"""The key directory: the master key, the receipt and audit signing keys, the audit HMAC keys."""
