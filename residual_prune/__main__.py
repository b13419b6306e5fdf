"""``python -m residual_prune``: the command line."""

from .cli import main

raise SystemExit(main())
