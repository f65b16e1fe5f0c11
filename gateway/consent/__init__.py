"""Consent: the eligibility rules (pure) and the operations over the store."""
