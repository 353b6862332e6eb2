"""The pure layer: status records, observed state, the planner and crash backoff.

No I/O, no clock, no event loop: everything here is decided from its arguments.
"""
