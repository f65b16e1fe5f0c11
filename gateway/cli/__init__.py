"""The ``mailgate`` command: one module per command group."""
