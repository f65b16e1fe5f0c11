"""Duplicate detection: fingerprints (pure) and the per-recipient send log (I/O)."""
