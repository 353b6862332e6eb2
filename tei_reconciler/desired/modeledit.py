"""Edit one `[models."<id>"]` table of a state file, keeping everything else as written.

tomlkit round-trips the document, so comments, order and layout of the other tables stay as
they were; the edited table is replaced whole (its own comments go with it).
"""

from __future__ import annotations

from collections.abc import Mapping

import tomlkit
from tomlkit.items import Table


def rewrite_model(text: str, model_id: str, fields: Mapping[str, object] | None) -> str:
    """`text` with the model's table set to `fields` (None: removed)."""
    doc = tomlkit.parse(text)
    models = doc.get("models")
    if fields is None:
        if isinstance(models, Table) and model_id in models:
            del models[model_id]
            if not models:
                del doc["models"]
        return tomlkit.dumps(doc)
    if not isinstance(models, Table):
        models = tomlkit.table(is_super_table=True)
        doc["models"] = models
    table = tomlkit.table()
    for key, value in fields.items():
        if value is not None:
            table[key] = value
    models[model_id] = table
    return tomlkit.dumps(doc)
