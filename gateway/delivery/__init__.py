"""Delivery: the worker pool that relays queued mail, its retry schedule and its DSNs."""
