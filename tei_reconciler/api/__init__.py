"""The REST API: desired state and status of TEI instances over HTTP (DESIGN.md section 6)."""

from __future__ import annotations

from tei_reconciler.api.app import create_app
from tei_reconciler.api.schemas import PlannedAction
from tei_reconciler.api.serve import serve_api

__all__ = ["PlannedAction", "create_app", "serve_api"]
