"""The HTTP listener: metrics, health and (later) the admin API."""
