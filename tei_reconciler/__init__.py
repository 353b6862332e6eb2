"""tei-reconciler: run many TEI embedding servers on one host from a declarative state file."""

__version__ = "0.1.0"
