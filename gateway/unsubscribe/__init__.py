"""One-click unsubscribe: the links and tokens, and what a click does."""
