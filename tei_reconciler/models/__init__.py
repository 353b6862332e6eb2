"""Models: the Hugging Face cache made to match the models the state file wants.

`inspect` and `support` read a model's files and say whether a binary can serve it (pure but
for file reads); `select` picks the files worth fetching; `cache` reads and evicts the cache;
`hub` fetches one model through huggingface_hub; `registry` runs the fetches in the background
and keeps every model's status.
"""
