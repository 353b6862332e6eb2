"""`tei-reconciler validate`, run the way GitOps CI runs it: a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
BAD = '[instances.a]\nmodel_id = "o/m"\nprot = 8080\n\n[instances.b]\nmodel_id = "x"\n'


def validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tei_reconciler", "validate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    return path


def test_the_shipped_examples_are_valid_and_exit_0() -> None:
    examples = sorted(str(p) for p in (ROOT / "examples").glob("*.toml"))
    assert len(examples) >= 2
    result = validate(*examples)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [f"{p}: ok" for p in examples]


def test_an_invalid_file_exits_1_with_one_located_line_per_problem(bad: Path) -> None:
    result = validate(str(bad))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{bad}:3:1: instances.a.prot: unknown key 'prot' (did you mean 'port'?)",
        f"{bad}:6:1: instances.b.model_id: model_id must be a Hugging Face model id "
        "('org/name') or an absolute path, got \"x\"",
    ]


def test_json_output_lists_every_problem_with_its_code(bad: Path) -> None:
    result = validate("--format", "json", str(bad))
    assert result.returncode == 1
    problems = json.loads(result.stdout)
    assert [(p["line"], p["column"], p["field"], p["code"]) for p in problems] == [
        (3, 1, "instances.a.prot", "unknown_key"),
        (6, 1, "instances.b.model_id", "invalid"),
    ]
    assert {p["path"] for p in problems} == {str(bad)}
    assert all(p["message"] for p in problems)


def test_json_output_for_valid_files_is_an_empty_list(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[instances.a]\nmodel_id = "o/m"\n')
    result = validate("--format", "json", str(good))
    assert (result.returncode, json.loads(result.stdout)) == (0, [])


def test_valid_and_invalid_files_together_exit_1_and_report_both(tmp_path: Path, bad: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[instances.a]\nmodel_id = "o/m"\n')
    result = validate(str(good), str(bad))
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == f"{good}: ok"


def test_a_syntax_error_exits_1_at_its_position(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[instances.a]\nmodel_id = "o/m\n')
    result = validate(str(path))
    assert result.returncode == 1
    assert result.stdout.startswith(f"{path}:2:")
    assert ": syntax: invalid TOML" in result.stdout


def test_an_unreadable_file_exits_2_with_the_reason_on_stderr(tmp_path: Path) -> None:
    result = validate(str(tmp_path / "missing.toml"))
    assert result.returncode == 2
    assert "no such file" in result.stderr
    assert result.stdout == ""


def test_usage_errors_exit_2() -> None:
    assert validate().returncode == 2
    assert validate("--format", "yaml", "x.toml").returncode == 2
