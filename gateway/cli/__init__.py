"""The ``mailgate`` command: one module per command group, named after the group.

``main`` builds the parser from every group's ``register``. Shared by the groups:
``common`` (the settings loader, exit codes, who acts, the progress bar), ``client`` (the
admin API client behind ``mailgate admin``), ``offline`` (how ``dealers``, ``suppress``,
``held`` and ``queue ls`` run the admin operations on the store when no gateway runs) and
``render`` (the human form of the API's JSON, printed by both).
"""
