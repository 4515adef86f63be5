"""The state store: schema, connections and migrations, prepared statements."""
