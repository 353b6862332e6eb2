"""Helpers shared by every test directory, one home for each: `net` (free ports), `waiting`
(the deadline and polling with it), `engines` (real built-in engine processes), `hub` (a local
Hugging Face Hub), `model_files` (model repositories made by tests).

Test modules import them as `support.<module>` (pytest puts `tests/` on the path)."""
