"""The kubectl-style client of a running reconciler's REST API (`tei-reconciler get`, ...).

Entry points are `tei_reconciler.client.cli.main_<command>`; nothing here is imported by the
server, so the client stays light (httpx and anyio only).
"""
