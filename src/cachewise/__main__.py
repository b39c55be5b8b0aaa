"""``python -m cachewise``: the same command line as the ``cachewise`` script."""

from cachewise.cli import main

raise SystemExit(main())
