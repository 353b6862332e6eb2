"""Helpers shared by every test directory, one home for each: `net` (free ports), `waiting`
(the deadline and polling with it), `engines` (real built-in engine processes), `hub` (a local
Hugging Face Hub), `model_files` (model repositories made by tests), `reconciler` (a whole
`tei-reconciler run`), `processes` (what carries a reconciler's markers), `traffic` (calls
through the router while a test changes something), `clock` (the fake clock), `kustomize`.

Test modules import them as `support.<module>` (pytest puts `tests/` on the path)."""
