"""Generated protobuf and gRPC stubs (`make proto`): TEI's tei.v1 and the tei_multiplexer.v1 router protocol.

Kept apart from the rest of the package so the built-in engine can import them without
importing anything of the reconciler.
"""
