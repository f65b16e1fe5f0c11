"""Allow ``python -m gateway`` as an alias of the ``mailgate`` command."""

from gateway.cli.main import main

raise SystemExit(main())
