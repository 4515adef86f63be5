"""Access: tenants, members, API keys, and the administration of them."""
