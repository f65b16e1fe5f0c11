"""The PostgreSQL backend, one module per section of the store."""
