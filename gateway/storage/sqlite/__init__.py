"""The SQLite backend, one module per section of the store."""
