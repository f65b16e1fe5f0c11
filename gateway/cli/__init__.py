"""The ``mailgate`` command: one module per command group, named after the group.

``main`` builds the parser from every group's ``register`` and is the one place a failure
becomes an exit code (``common.EXIT_CODES``). Shared by the groups: ``common`` (the settings
loader and the settings file search, exit codes, ``--json``, who acts, the progress bar),
``store`` (offline commands open only a store that exists; ``serve`` and ``init`` create
one), ``client`` (the admin API client behind ``mailgate admin``), ``offline`` (how
``dealers``, ``suppress``, ``held`` and ``queue ls`` run the admin operations on the store
when no gateway runs), ``render`` (the human form of the API's JSON, printed by both) and
``manual`` (the parser walked: the manual page and the completion scripts).
"""
