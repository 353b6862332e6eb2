"""`[models."org/name"]` tables: validated like instances (file:line:col, "did you mean"),
their revision inherited by instances that set none, and declared or undeclared through the
state file's locked edit with everything else kept as written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tei_reconciler.desired.spec import ModelSpec
from tei_reconciler.desired.statefile import StateFile, parse_state
from tei_reconciler.errors import SpecError

GOOD = b"""\
# models kept on this host
[models."BAAI/bge-small-en-v1.5"]
revision = "v1.5"   # pinned
keep = true

[models."/srv/models/minilm"]

[instances.bge]
model_id = "BAAI/bge-small-en-v1.5"

[instances.pinned]
model_id = "BAAI/bge-small-en-v1.5"
revision = "main"
"""


def problems(text: str) -> list[tuple[int, int, str, str]]:
    with pytest.raises(SpecError) as caught:
        parse_state(text.encode(), "state.toml")
    return [(p.line, p.column, p.field, p.message) for p in caught.value.problems]


def test_declared_models_are_read_and_their_revision_is_inherited() -> None:
    state = parse_state(GOOD)
    assert state.models == {
        "BAAI/bge-small-en-v1.5": ModelSpec(
            model_id="BAAI/bge-small-en-v1.5", revision="v1.5", keep=True
        ),
        "/srv/models/minilm": ModelSpec(model_id="/srv/models/minilm"),
    }
    assert state.instances["bge"].revision == "v1.5"
    assert state.instances["pinned"].revision == "main"


def test_an_unknown_key_is_located_and_gets_a_suggestion() -> None:
    found = problems('[models."org/name"]\nkeeep = true\n')
    assert found == [(2, 1, "models.org/name.keeep", "unknown key 'keeep' (did you mean 'keep'?)")]


def test_an_instance_field_in_a_model_table_is_explained() -> None:
    ((_, _, field, message),) = problems('[models."org/name"]\npooling = "cls"\n')
    assert field == "models.org/name.pooling"
    assert "a [models] table holds revision and keep" in message


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ('[models."org/name"]\nkeep = "yes"\n', (2, 1), "keep must be true or false"),
        ('[models."org/name"]\nrevision = ""\n', (2, 1), "revision must be a non-empty string"),
        ('[models."not an id"]\n', (1, 9), "must be a Hugging Face model id"),
        ('[models."hash/384"]\n', (1, 9), "must be a Hugging Face model id"),
        ("models = 3\n", (1, 1), "models must be a table"),
    ],
)
def test_bad_values_are_located(text: str, where: tuple[int, int], says: str) -> None:
    ((line, column, _, message),) = problems(text)
    assert (line, column) == where
    assert says in message


def test_a_model_is_declared_and_undeclared_with_the_rest_of_the_file_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.toml"
    path.write_bytes(GOOD)
    statefile = StateFile(path)
    state, created = statefile.declare_model("org/new", {"keep": True, "revision": None})
    assert created
    assert state.models["org/new"] == ModelSpec(model_id="org/new", keep=True)
    _, again = statefile.declare_model("org/new", {"revision": "v2"})
    assert not again
    assert parse_state(path.read_bytes()).models["org/new"] == ModelSpec(
        model_id="org/new", revision="v2", keep=True
    )
    statefile.undeclare_model("org/new")
    statefile.undeclare_model("org/never-declared")
    assert path.read_bytes() == GOOD


def test_removing_the_only_table_leaves_a_file_that_says_so(tmp_path: Path) -> None:
    path = tmp_path / "state.toml"
    path.write_text('[models."org/name"]\nkeep = true\n')
    state = StateFile(path).undeclare_model("org/name")
    assert state.models == {}
    assert path.read_text() == "[instances]\n"
