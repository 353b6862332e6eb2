"""Editing the state file on disk: layout kept, validation first, locks, revisions, GitOps."""

from __future__ import annotations

import os
import shutil
import stat
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tei_reconciler.desired.spec import DesiredRun
from tei_reconciler.desired.statefile import StateFile, load_state, revision_of
from tei_reconciler.errors import (
    InstanceExists,
    InstanceNotFound,
    RevisionConflict,
    SpecError,
    StateFileError,
    StateReadOnly,
)

GOLDEN = Path(__file__).parent.parent / "golden"
INPUT = GOLDEN / "statefile_input.toml"
BGE = {"model_id": "BAAI/bge-small-en-v1.5", "gpu": 1, "port": 8080, "pooling": "cls"}
MINILM = {
    "model_id": "sentence-transformers/all-MiniLM-L6-v2",
    "gpu": (0, 1),
    "restarted_at": datetime(2024, 5, 1, 12, tzinfo=UTC),
    "env": {"A": "1"},
}

EDITS: dict[str, Callable[[StateFile], object]] = {
    "set_field": lambda sf: sf.set_field("splade", "state", "running"),
    "remove": lambda sf: sf.remove_instance("bge-small"),
    "add": lambda sf: sf.add_instance("minilm", MINILM),
    "apply": lambda sf: sf.apply_instance("bge-small", BGE),
}


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    path = tmp_path / "state.toml"
    shutil.copy(INPUT, path)
    return path


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edit_changes_only_its_instance_table_byte_for_byte(state_path: Path, edit: str) -> None:
    EDITS[edit](StateFile(state_path))
    assert state_path.read_bytes() == (GOLDEN / f"statefile_after_{edit}.toml").read_bytes()


def test_the_text_around_an_edited_table_is_untouched(state_path: Path) -> None:
    before = state_path.read_text()
    StateFile(state_path).set_field("splade", "pooling", "mean")
    after = state_path.read_text()
    head = before[: before.index('[instances."splade"]')]
    tail = before[before.index("# a comment at the end of the env table") :]
    assert after.startswith(head)
    assert after.endswith(tail)
    assert 'pooling = "mean"   # sparse' in after


def test_an_edit_returns_the_new_validated_state_with_its_revision(state_path: Path) -> None:
    state = StateFile(state_path).set_field("splade", "state", "running")
    assert state.instances["splade"].state is DesiredRun.RUNNING
    assert state.revision == revision_of(state_path.read_bytes())
    assert state == load_state(state_path)


def test_added_datetimes_and_tuples_are_written_as_toml_datetimes_and_arrays(
    state_path: Path,
) -> None:
    StateFile(state_path).add_instance("minilm", MINILM)
    data = tomllib.loads(state_path.read_text())["instances"]["minilm"]
    assert data["restarted_at"] == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert data["gpu"] == [0, 1]


def test_a_restarted_at_given_as_iso_text_is_written_as_a_datetime(state_path: Path) -> None:
    state = StateFile(state_path).set_field("gte", "restarted_at", "2024-06-01T00:00:00+00:00")
    assert state.instances["gte"].restarted_at == datetime(2024, 6, 1, tzinfo=UTC)
    assert "restarted_at = 2024-06-01T00:00:00Z\n# a trailing" in state_path.read_text()


def test_setting_a_field_to_none_removes_the_key(state_path: Path) -> None:
    state = StateFile(state_path).set_field("bge-small", "port", None)
    assert state.instances["bge-small"].port is None
    assert "# pinned" not in state_path.read_text()


def test_adding_an_existing_instance_raises_instance_exists(state_path: Path) -> None:
    with pytest.raises(InstanceExists):
        StateFile(state_path).add_instance("gte", {"model_id": "o/m"})
    assert state_path.read_bytes() == INPUT.read_bytes()


def test_editing_a_missing_instance_raises_instance_not_found(state_path: Path) -> None:
    sf = StateFile(state_path)
    with pytest.raises(InstanceNotFound):
        sf.remove_instance("nope")
    with pytest.raises(InstanceNotFound):
        sf.set_field("nope", "port", 9000)


def test_apply_reports_whether_it_created_the_instance(state_path: Path) -> None:
    sf = StateFile(state_path)
    _, created = sf.apply_instance("bge-small", BGE)
    assert created is False
    state, created = sf.apply_instance("new", {"model_id": "o/m"})
    assert created is True
    assert "new" in state.instances


def test_an_edit_that_would_make_the_file_invalid_is_refused_and_nothing_is_written(
    state_path: Path,
) -> None:
    sf = StateFile(state_path)
    with pytest.raises(SpecError) as caught:
        sf.add_instance("clash", {"model_id": "o/m", "port": 8080})
    (problem,) = caught.value.problems
    assert (problem.code, problem.field) == ("port_conflict", "instances.clash.port")
    assert problem.path == str(state_path)
    assert problem.line > 0
    assert state_path.read_bytes() == INPUT.read_bytes()


def test_reserved_ports_are_enforced_on_edits(state_path: Path) -> None:
    sf = StateFile(state_path, reserved_ports=frozenset({9000}))
    with pytest.raises(SpecError) as caught:
        sf.set_field("gte", "port", 9000)
    assert caught.value.problems[0].code == "port_conflict"


def test_a_stale_expected_revision_raises_revision_conflict(state_path: Path) -> None:
    sf = StateFile(state_path)
    _, old = sf.read()
    sf.set_field("gte", "port", 8090, expected_revision=old)
    with pytest.raises(RevisionConflict) as caught:
        sf.set_field("gte", "port", 8091, expected_revision=old)
    assert caught.value.actual == revision_of(state_path.read_bytes())
    assert load_state(state_path).instances["gte"].port == 8090


def test_a_symlinked_state_file_is_gitops_owned_and_never_written(tmp_path: Path) -> None:
    data = tmp_path / "..data"
    data.mkdir()
    shutil.copy(INPUT, data / "state.toml")
    link = tmp_path / "state.toml"
    link.symlink_to(data / "state.toml")
    sf = StateFile(link)
    assert sf.is_read_only()
    with pytest.raises(StateReadOnly):
        sf.set_field("gte", "port", 8090)
    with pytest.raises(StateReadOnly):
        sf.replace(b"")
    assert link.is_symlink()
    assert (data / "state.toml").read_bytes() == INPUT.read_bytes()
    assert sf.load().instances.keys() == {"bge-small", "splade", "gte"}


def test_a_file_without_write_permission_is_read_only(state_path: Path) -> None:
    state_path.chmod(0o444)
    sf = StateFile(state_path)
    assert sf.is_read_only()
    with pytest.raises(StateReadOnly):
        sf.remove_instance("gte")


def test_a_writable_file_is_not_read_only(state_path: Path) -> None:
    assert not StateFile(state_path).is_read_only()


def test_a_missing_file_loads_as_empty_and_the_first_edit_creates_it(tmp_path: Path) -> None:
    path = tmp_path / "new.toml"
    sf = StateFile(path)
    assert sf.load().instances == {}
    state = sf.add_instance("a", {"model_id": "o/m", "state": DesiredRun.STOPPED})
    assert state.instances["a"].state is DesiredRun.STOPPED
    assert path.read_text() == '[instances.a]\nmodel_id = "o/m"\nstate = "stopped"\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_load_state_on_a_missing_file_raises_state_file_error(tmp_path: Path) -> None:
    with pytest.raises(StateFileError, match="no such file"):
        load_state(tmp_path / "missing.toml")


def test_an_edit_keeps_the_files_mode_and_leaves_no_temp_files(state_path: Path) -> None:
    state_path.chmod(0o600)
    StateFile(state_path).set_field("gte", "port", 8090)
    assert stat.S_IMODE(state_path.stat().st_mode) == 0o600
    names = sorted(os.listdir(state_path.parent))
    assert names == [".state.toml.lock", "state.toml"]


def test_replace_writes_a_valid_document_and_refuses_an_invalid_one(state_path: Path) -> None:
    sf = StateFile(state_path)
    with pytest.raises(SpecError):
        sf.replace(b'[instances.a]\nmodel_id = "x"\n')
    assert state_path.read_bytes() == INPUT.read_bytes()
    state = sf.replace(b'[instances.a]\nmodel_id = "o/m"\n')
    assert state.instances.keys() == {"a"}


def test_replace_repairs_a_file_that_no_longer_parses(state_path: Path) -> None:
    state_path.write_text("[instances.a\n")
    sf = StateFile(state_path)
    with pytest.raises(SpecError):
        sf.set_field("a", "port", 8080)
    assert sf.replace(b"").instances == {}


def test_an_instance_written_with_dotted_keys_is_still_edited_correctly(tmp_path: Path) -> None:
    path = tmp_path / "state.toml"
    path.write_text('# top\ninstances.a.model_id = "o/m"\ninstances.b = { model_id = "o/n" }\n')
    sf = StateFile(path)
    sf.set_field("a", "port", 8080)
    state = sf.set_field("b", "gpu", 0)
    assert (state.instances["a"].port, state.instances["b"].gpu) == (8080, 0)
    assert path.read_text().startswith("# top\n")
    state = sf.remove_instance("a")
    assert state.instances.keys() == {"b"}


def test_a_value_toml_cannot_hold_is_a_spec_error(state_path: Path) -> None:
    with pytest.raises(SpecError):
        StateFile(state_path).set_field("gte", "extra_args", [object()])
    assert state_path.read_bytes() == INPUT.read_bytes()


def test_a_windows_file_keeps_its_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "state.toml"
    path.write_bytes(
        b'# x\r\n[instances.a]\r\nmodel_id = "o/m"\r\n\r\n[instances.b]\r\nmodel_id = "o/n"\r\n'
    )
    StateFile(path).set_field("a", "port", 8080)
    StateFile(path).add_instance("c", {"model_id": "o/c"})
    data = path.read_bytes()
    assert b"port = 8080\r\n" in data
    assert data.count(b"\n") == data.count(b"\r\n")


def test_a_header_inside_a_multiline_string_is_not_mistaken_for_a_table(tmp_path: Path) -> None:
    path = tmp_path / "state.toml"
    path.write_text(
        '[instances.a]\nmodel_id = "o/m"\nextra_args = ["""\n[instances.b]\n"""]\n'
        '[instances.c]\nmodel_id = "o/n"\n'
    )
    state = StateFile(path).set_field("a", "port", 8080)
    assert state.instances["a"].extra_args == ("[instances.b]\n",)
    assert path.read_text().endswith('\n[instances.c]\nmodel_id = "o/n"\n')


def test_an_env_sub_table_elsewhere_in_the_file_is_edited_in_place(tmp_path: Path) -> None:
    path = tmp_path / "state.toml"
    text = '[instances.a]\nmodel_id = "o/m"\n[instances.b]\nmodel_id = "o/n"\n[instances.a.env]\n'
    path.write_text(text + 'X = "1"\n')
    state = StateFile(path).set_field("a", "env", {"Y": "2"})
    assert state.instances["a"].env == {"Y": "2"}
    assert path.read_text() == text + 'Y = "2"\n'


def test_removing_the_last_instance_leaves_a_valid_file_without_instances(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.toml"
    path.write_text('# kept\n[instances.a]\nmodel_id = "o/m"\n')
    assert StateFile(path).remove_instance("a").instances == {}
    assert path.read_text() == "# kept\n"


def test_removing_the_only_instance_writes_an_explicitly_empty_instances_table(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.toml"
    path.write_text('[instances.a]\nmodel_id = "o/m"\n')
    assert StateFile(path).remove_instance("a").instances == {}
    assert path.read_text() == "[instances]\n"


def test_several_fields_change_in_one_write_with_one_new_revision(state_path: Path) -> None:
    sf = StateFile(state_path)
    _, before = sf.read()
    name = next(iter(sf.load().instances))
    state = sf.set_fields(name, {"state": "stopped", "max_batch_tokens": 1234})
    spec = state.instances[name]
    assert (spec.state, spec.max_batch_tokens) == ("stopped", 1234)
    assert state.revision != before
    assert sf.read()[1] == state.revision
