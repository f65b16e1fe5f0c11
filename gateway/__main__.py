"""Allow ``python -m gateway`` as an alias of the ``mailgate`` command."""

from gateway.cli import main

raise SystemExit(main())
