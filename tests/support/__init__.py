"""Helpers shared by every test directory, one home for each: `net` (free ports), `waiting`
(the deadline and polling with it), `engines` (real built-in engine processes).

Test modules import them as `support.<module>` (pytest puts `tests/` on the path)."""
