"""An instance whose model is not on disk waits (Pending, Downloading) or fails with the fetch's
reason, and is started once its model is complete; a running process is never stopped for it."""

from __future__ import annotations

import pytest

from tei_reconciler.desired.spec import InstanceSpec, spec_hash
from tei_reconciler.planner.model_status import ModelGate
from tei_reconciler.planner.observed import ObservedInstance, ProcessView
from tei_reconciler.planner.plan import Start, assess, plan_one
from tei_reconciler.planner.policy import Policy
from tei_reconciler.settings import Settings

POLICY = Policy.of(Settings())
NOW = 1000.0
SPEC = InstanceSpec(name="a", model_id="BAAI/bge-small-en-v1.5")
DOWNLOADING = ModelGate(reason="Downloading", message="12.0 MiB of 90.0 MiB (13%), 2 of 7 files")
MISSING = ModelGate(reason="RepoNotFound", message="no model BAAI/bge-small-en-v1.5", failed=True)
RUNNING = ProcessView(pid=7, spec_hash=spec_hash(SPEC), started_at=NOW - 5)


@pytest.mark.parametrize(
    ("gate", "phase", "reason", "message"),
    [
        (DOWNLOADING, "Pending", "Downloading", DOWNLOADING.message),
        (MISSING, "Failed", "RepoNotFound", MISSING.message),
    ],
)
def test_an_instance_waits_for_its_model_and_says_why(
    gate: ModelGate, phase: str, reason: str, message: str
) -> None:
    observed = ObservedInstance(name="a", model=gate)
    action, again = plan_one(SPEC, observed, NOW, POLICY)
    assert action is None
    assert again is None  # the registry asks for a pass when the model changes
    shown = assess(SPEC, observed, NOW, POLICY)
    assert (shown.phase, shown.reason, shown.message) == (phase, reason, message)


def test_the_instance_starts_once_its_model_is_complete() -> None:
    action, _ = plan_one(SPEC, ObservedInstance(name="a"), NOW, POLICY)
    assert action == Start(name="a", spec=SPEC)


def test_a_running_process_is_left_alone_while_its_model_is_refetched() -> None:
    observed = ObservedInstance(
        name="a", process=RUNNING, startup_ok=True, ready=True, model=DOWNLOADING
    )
    action, _ = plan_one(SPEC, observed, NOW, POLICY)
    assert action is None
    assert assess(SPEC, observed, NOW, POLICY).phase == "Running"
