"""Which models a desired state names and which it wants fetched: every instance's, kept
declared ones, at the right revision; declared ones nothing uses are only listed, and what the
built-in engine ships is never fetched."""

from __future__ import annotations

from tei_reconciler.desired.spec import DesiredRun, DesiredState, InstanceSpec, ModelSpec
from tei_reconciler.models.wants import Need, Want, named_models

PACKAGED = "sentence-transformers/all-MiniLM-L6-v2"


def builtin_ships(model_id: str) -> bool:
    return model_id.startswith("hash/") or model_id == PACKAGED


def state(*instances: InstanceSpec, **models: ModelSpec) -> DesiredState:
    return DesiredState(
        instances={i.name: i for i in instances},
        models={m.model_id: m for m in models.values()},
    )


def test_instances_models_are_wanted_with_their_users_and_revision() -> None:
    desired = state(
        InstanceSpec(name="b", model_id="BAAI/bge", revision="v2"),
        InstanceSpec(name="a", model_id="BAAI/bge", revision="v2", state=DesiredRun.STOPPED),
        InstanceSpec(name="h", model_id="hash/384"),
        InstanceSpec(name="m", model_id=PACKAGED),
        InstanceSpec(name="l", model_id="/srv/model"),
    )
    named = named_models(desired, served_without_cache=builtin_ships)
    assert named == {
        "/srv/model": Want(model_id="/srv/model", used_by=("l",), local=True),
        "BAAI/bge": Want(model_id="BAAI/bge", revision="v2", used_by=("a", "b")),
        "hash/384": Want(model_id="hash/384", need=Need.SHIPPED, used_by=("h",)),
        PACKAGED: Want(model_id=PACKAGED, need=Need.SHIPPED, used_by=("m",)),
    }


def test_a_declared_model_is_wanted_alone_only_when_kept_and_listed_otherwise() -> None:
    desired = state(
        kept=ModelSpec(model_id="org/kept", revision="v1", keep=True),
        pinned=ModelSpec(model_id="org/pinned", revision="v1"),
    )
    named = named_models(desired, served_without_cache=builtin_ships)
    assert named == {
        "org/kept": Want(model_id="org/kept", revision="v1", declared=True, keep=True),
        "org/pinned": Want(model_id="org/pinned", revision="v1", need=Need.LISTED, declared=True),
    }


def test_tei_fetches_the_packaged_models_id_like_any_other() -> None:
    desired = state(InstanceSpec(name="m", model_id=PACKAGED))
    named = named_models(desired, served_without_cache=lambda _: False)
    assert named[PACKAGED].need is Need.FETCH
