"""`env` refuses the variables that would let a state writer run code in the child."""

from __future__ import annotations

from pathlib import Path

import pytest

from tei_reconciler.desired.statefile import parse_state
from tei_reconciler.desired.unsafe_env import UNSAFE_ENV
from tei_reconciler.errors import SpecError

OK = '[instances.a]\nmodel_id = "org/model"\n'

#: One or more members of each refused family, and the words the error uses for it.
FAMILIES = [
    (["LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "LD_BIND_NOW", "GCONV_PATH", "GLIBC_TUNABLES"],
     "the dynamic loader and the C library read it"),
    (["PATH"], "it chooses the programs the child starts"),
    (["BASH_ENV", "ENV", "SHELLOPTS", "BASH_FUNC_ls%%"], "shells read it at start"),
    (["PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONWARNINGS", "HOME"],
     "Python reads it at start"),
    (["PERL5LIB", "PERL5OPT", "PERLLIB"], "Perl reads it at start"),
    (["RUBYOPT", "RUBYLIB"], "Ruby reads it at start"),
    (["NODE_OPTIONS", "NODE_PATH"], "Node.js reads it at start"),
    (["JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS"], "the Java runtime reads it at start"),
    (["LUA_INIT"], "Lua reads it at start"),
    (["CUDA_INJECTION64_PATH"], "the CUDA driver loads the library it names"),
    (["OPENSSL_CONF", "OPENSSL_MODULES"], "OpenSSL loads the configuration or modules it names"),
]  # fmt: skip


def messages(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_state(text.encode(), "state.toml")
    return [p.message for p in caught.value.problems]


def test_every_refused_family_is_exercised_here() -> None:
    assert {reader for _, reader in FAMILIES} == {family.reader for family in UNSAFE_ENV}


@pytest.mark.parametrize(("names", "reader"), FAMILIES, ids=[r for _, r in FAMILIES])
def test_env_refuses_each_loader_and_interpreter_variable_naming_who_reads_it(
    names: list[str], reader: str
) -> None:
    for name in names:
        (message,) = messages(f'{OK}env = {{ "{name}" = "/tmp/x" }}\n')
        assert message.startswith(f"env may not set {name}: {reader}, so it could run code")


def test_env_refuses_them_in_defaults_too_and_in_any_letter_case() -> None:
    found = messages(f'[defaults]\nenv = {{ ld_preload = "/x.so" }}\n{OK}')
    assert found == [
        "env may not set ld_preload: the dynamic loader and the C library read it, so it could "
        "run code of the writer's choosing"
    ]


def test_env_says_what_to_use_instead_of_path_and_home() -> None:
    assert (
        "(the binary is the manager's tei_binary setting)"
        in messages(f'{OK}env = {{ PATH = "/x" }}\n')[0]
    )
    home = messages(f'{OK}env = {{ HOME = "/x" }}\n')[0]
    assert "(set HF_HOME to choose the model cache)" in home


def test_env_still_takes_model_cache_tokens_and_runtime_tuning() -> None:
    env = {"HF_HOME": "/models", "HF_HUB_OFFLINE": "1", "RUST_LOG": "info", "OMP_NUM_THREADS": "4"}
    inner = ", ".join(f'{k} = "{v}"' for k, v in env.items())
    assert parse_state(f"{OK}env = {{ {inner} }}\n".encode()).instances["a"].env == env


def test_the_readme_lists_every_refused_name_and_prefix() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for family in UNSAFE_ENV:
        for name in family.names:
            assert f"`{name}`" in readme, name
        for prefix in family.prefixes:
            assert f"`{prefix}*`" in readme, prefix
