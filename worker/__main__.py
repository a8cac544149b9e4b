"""``python -m worker`` is the same as the ``crmsync`` command."""

from worker.cli import main

raise SystemExit(main())
