"""The built-in TEI-compatible server, `tei-reconciler engine`.

Not every host has TEI's `text-embeddings-router`; this package speaks the same wire protocol
(gRPC build by default, HTTP build with `--http`) and accepts the same flags, so the reconciler
launches and probes it exactly like TEI. It stands alone, like TEI: it imports nothing of the
reconciler except the generated `tei.v1` stubs.
"""
