"""What dealers and recipients reach over HTTP: status pages, unsubscribe, metrics, health."""
