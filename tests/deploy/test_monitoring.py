"""manifests/monitoring: the Grafana dashboard and the alert rules query only what a real
`tei-reconciler run` exports, the rules pass promtool, and the alerts fire when they should."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families

from tei_reconciler.protos.tei.v1 import tei_pb2, tei_pb2_grpc
from tei_reconciler.traffic import SERVER_ERROR_CODES

from support.reconciler import Reconciler
from support.waiting import wait_until

MONITORING = Path(__file__).resolve().parents[2] / "manifests" / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
RULES = MONITORING / "prometheusrule.yaml"

#: Series and labels Prometheus itself adds: not the reconciler's to export.
PROMETHEUS_SERIES = {"up"}
TARGET_LABELS = {"namespace", "pod", "job", "service", "endpoint", "container", "le"}
_METRIC = re.compile(r"\b(tei_reconciler_[a-z0-9_]+|up)\b(\s*\{([^}]*)\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_CODES = re.compile(r'code=~"([A-Z_|]+)"')


def dashboard_queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    queries += [v["definition"] for v in doc["templating"]["list"] if v.get("definition")]
    return queries


def rules() -> list[dict[str, Any]]:
    (doc,) = [d for d in yaml.safe_load_all(RULES.read_text()) if d]
    assert doc["kind"] == "PrometheusRule"
    return [rule for group in doc["spec"]["groups"] for rule in group["rules"]]


def used(queries: list[str]) -> dict[str, set[str]]:
    """Every series a query selects, with the label names its matchers use."""
    found: dict[str, set[str]] = {}
    for query in queries:
        for match in _METRIC.finditer(query):
            labels = set(_MATCHER.findall(match.group(3) or ""))
            found.setdefault(match.group(1), set()).update(labels)
    return found


class Exported:
    """What a scrape of /metrics offers: sample names, and label names per sample name."""

    def __init__(self, text: str) -> None:
        self.labels: dict[str, set[str] | None] = {}
        for family in text_string_to_metric_families(text):
            suffixes = {
                "counter": ("_total", "_created"),
                "histogram": ("_bucket", "_count", "_sum", "_created"),
                "gauge": ("",),
            }.get(family.type, ("",))
            for suffix in suffixes:
                self.labels.setdefault(family.name + suffix, None)  # exported, labels unseen
            for sample in family.samples:
                seen = self.labels.get(sample.name) or set()
                self.labels[sample.name] = seen | set(sample.labels)

    def check(self, series: dict[str, set[str]]) -> list[str]:
        problems = []
        for name, labels in sorted(series.items()):
            if name in PROMETHEUS_SERIES:
                continue
            if name not in self.labels:
                problems.append(f"{name} is not exported")
                continue
            known = self.labels[name]
            unknown = labels - TARGET_LABELS - (known or labels)
            if unknown:
                problems.append(f"{name} has no label {sorted(unknown)}")
        return problems


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    """/metrics of a real run with one Ready instance that served a call through the router."""
    running = Reconciler(tmp_path_factory.mktemp("monitoring"))
    running.state_file.write_text('[instances.metered]\nmodel_id = "hash/8"\ngpu = "none"\n')
    running.start()
    try:
        wait_until(
            lambda: (i := running.instance("metered")) is not None and i["ready"],
            what="metered Ready",
        )
        with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
            stub = tei_pb2_grpc.EmbedStub(channel)
            stub.Embed(
                tei_pb2.EmbedRequest(inputs="scraped"),
                metadata=[("x-tei-instance", "metered")],
                timeout=30,
            )
        with httpx.Client(base_url=running.url, timeout=30) as client:
            text = client.get("/metrics").text
        yield Exported(text)
    finally:
        running.stop()


def test_the_grafana_dashboard_is_valid_json_with_a_panel_per_question() -> None:
    doc = json.loads(DASHBOARD.read_text())
    titles = {p["title"] for p in doc["panels"]}
    assert {
        "Instances by phase",
        "Restarts",
        "Probe failures",
        "Reconcile duration",
        "State file validity",
        "Calls per instance",
        "Calls per model",
        "Error ratio per instance",
        "Error ratio per model",
        "Latency per instance (p50, p99)",
        "Latency per model (p50, p99)",
    } <= titles
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))


def test_every_series_the_dashboard_queries_is_one_a_real_run_exports(scraped: Exported) -> None:
    series = used(dashboard_queries())
    assert "tei_reconciler_instance_info" in series
    assert scraped.check(series) == []


def test_every_series_the_alerts_query_is_one_a_real_run_exports(scraped: Exported) -> None:
    series = used([r["expr"] for r in rules()])
    assert "tei_reconciler_instance_phase" in series
    assert scraped.check(series) == []


def test_router_errors_are_the_same_codes_everywhere() -> None:
    texts = [*dashboard_queries(), *(r["expr"] for r in rules())]
    sets = {frozenset(m.split("|")) for t in texts for m in _CODES.findall(t)}
    assert sets == {SERVER_ERROR_CODES}


def test_each_alert_says_what_to_look_at_and_how_bad_it_is() -> None:
    alerts = {r["alert"]: r for r in rules()}
    assert {
        "TeiInstanceCrashLooping",
        "TeiSpecInvalid",
        "TeiNoReadyInstanceForModel",
        "TeiRouterErrorRatioHigh",
        "TeiReconcileActionsFailing",
        "TeiRolloutFailing",
    } <= alerts.keys()
    assert alerts["TeiInstanceCrashLooping"]["for"] == "10m"
    assert alerts["TeiSpecInvalid"]["for"] == "15m"
    for rule in alerts.values():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return found


def groups_file(tmp_path: Path, *, annotations: bool = True) -> Path:
    """The rule groups of the PrometheusRule, as the plain rules file promtool reads."""
    (doc,) = [d for d in yaml.safe_load_all(RULES.read_text()) if d]
    if not annotations:  # for unit tests of when alerts fire, not of their wording
        for group in doc["spec"]["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations", None)
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(doc["spec"]))
    return path


def test_the_alert_rules_pass_promtool(tmp_path: Path) -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(groups_file(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 7 rules found" in done.stdout


def test_the_alerts_fire_when_they_should_and_not_otherwise(tmp_path: Path) -> None:
    groups_file(tmp_path, annotations=False)
    tests = tmp_path / "tests.yaml"
    tests.write_text((Path(__file__).parent / "alert_tests.yaml").read_text())
    done = subprocess.run(
        [promtool(), "test", "rules", str(tests)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
