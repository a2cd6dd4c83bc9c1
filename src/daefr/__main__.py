"""``python -m daefr`` runs the ``daefr`` command."""

from daefr.cli import main

raise SystemExit(main())
