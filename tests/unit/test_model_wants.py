"""Which models a desired state wants fetched: every instance's, kept declared ones, at the
right revision and with the weights the binary reads; never what the built-in engine ships."""

from __future__ import annotations

from tei_reconciler.desired.spec import DesiredRun, DesiredState, InstanceSpec, ModelSpec
from tei_reconciler.models.select import Flavour
from tei_reconciler.models.wants import Want, wanted_models

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
    wants = wanted_models(desired, flavour=Flavour.ONNX, served_without_cache=builtin_ships)
    assert wants == {
        "BAAI/bge": Want(
            model_id="BAAI/bge",
            revision="v2",
            flavours=frozenset({Flavour.ONNX}),
            used_by=("a", "b"),
        ),
        "/srv/model": Want(
            model_id="/srv/model", flavours=frozenset({Flavour.ONNX}), used_by=("l",), local=True
        ),
    }


def test_a_declared_model_is_wanted_alone_only_when_kept() -> None:
    desired = state(
        kept=ModelSpec(model_id="org/kept", revision="v1", keep=True),
        pinned=ModelSpec(model_id="org/pinned", revision="v1"),
    )
    wants = wanted_models(desired, flavour=Flavour.SAFETENSORS, served_without_cache=builtin_ships)
    assert list(wants) == ["org/kept"]
    assert wants["org/kept"].keep
    assert wants["org/kept"].revision == "v1"
    assert wants["org/kept"].used_by == ()


def test_tei_fetches_the_packaged_models_id_like_any_other() -> None:
    desired = state(InstanceSpec(name="m", model_id=PACKAGED))
    wants = wanted_models(
        desired, flavour=Flavour.SAFETENSORS, served_without_cache=lambda _: False
    )
    assert wants[PACKAGED].flavours == frozenset({Flavour.SAFETENSORS})
