"""`python -m tei_reconciler` is the `tei-reconciler` console script."""

from tei_reconciler.cli import main

raise SystemExit(main())
