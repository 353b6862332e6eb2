"""The Kubernetes manifests, checked statically: every file parses, each kustomization names
files that exist, the Deployment has what the reconciler needs, and the TOML the ConfigMaps
carry is a valid state file and a valid configuration."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from tei_reconciler.desired.statefile import parse_state
from tei_reconciler.settings import Settings, load_settings

from support import kustomize

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
BASE = MANIFESTS / "base"
OVERLAYS = ["gitops", "api-managed"]


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def one(path: Path) -> dict[str, Any]:
    (doc,) = docs(path)
    return doc


def generated_files(directory: Path, name: str) -> Path:
    """The file a kustomization's configMapGenerator `name` takes its data from."""
    kustomization = one(directory / "kustomization.yaml")
    for generator in kustomization.get("configMapGenerator", []):
        if generator["name"] == name:
            (file_,) = generator["files"]
            return directory / str(file_)
    raise AssertionError(f"{directory} generates no ConfigMap {name}")


def settings_of(directory: Path) -> Settings:
    for candidate in (directory, BASE):
        try:
            path = generated_files(candidate, "tei-reconciler-config")
        except AssertionError:
            continue
        return load_settings({}, {}, path)
    raise AssertionError("no config ConfigMap")


def deployment() -> dict[str, Any]:
    return one(BASE / "deployment.yaml")


def container(spec: dict[str, Any]) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in spec["containers"] if c["name"] == "tei-reconciler"]
    (main,) = found
    return main


def test_every_manifest_parses_and_names_its_kind() -> None:
    files = sorted(MANIFESTS.rglob("*.yaml"))
    assert len(files) >= 10
    for path in files:
        for doc in docs(path):
            assert doc.get("apiVersion"), path
            assert doc.get("kind"), path


@pytest.mark.parametrize(
    "directory", [BASE, *(MANIFESTS / "overlays" / o for o in OVERLAYS), MANIFESTS / "monitoring"]
)
def test_each_kustomization_names_files_that_exist(directory: Path) -> None:
    kustomization = one(directory / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    named = [*kustomization.get("resources", [])]
    named += [p["path"] for p in kustomization.get("patches", [])]
    named += [f for g in kustomization.get("configMapGenerator", []) for f in g["files"]]
    for entry in named:
        assert (directory / entry).exists(), f"{directory.name}: {entry} is missing"


def test_the_base_holds_every_kind_the_reconciler_needs() -> None:
    kinds = {one(BASE / r)["kind"] for r in one(BASE / "kustomization.yaml")["resources"]}
    assert kinds == {"Deployment", "Service", "PersistentVolumeClaim", "ServiceAccount"}
    generated = {g["name"] for g in one(BASE / "kustomization.yaml")["configMapGenerator"]}
    assert generated == {"tei-reconciler-config", "tei-reconciler-state"}


def test_the_deployment_runs_one_gpu_pod_at_a_time_with_probes() -> None:
    spec = deployment()["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    main = container(pod)
    assert main["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert main["livenessProbe"]["httpGet"]["path"] == "/health"
    assert main["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert main["args"][-2:] == ["--config", "/etc/tei-reconciler/config.toml"]
    for overlay in ["base", *OVERLAYS]:
        directory = BASE if overlay == "base" else MANIFESTS / "overlays" / overlay
        stop_grace = settings_of(directory).stop_grace_secs
        assert pod["terminationGracePeriodSeconds"] > stop_grace, overlay


def test_the_service_exposes_the_configured_rest_and_grpc_ports() -> None:
    ports = {p["name"]: p["port"] for p in one(BASE / "service.yaml")["spec"]["ports"]}
    settings = settings_of(BASE)
    assert ports == {"http": settings.api_port, "grpc": settings.grpc_port}
    container_ports = {
        p["name"]: p["containerPort"]
        for p in container(deployment()["spec"]["template"]["spec"])["ports"]
    }
    assert container_ports == ports
    assert settings.api_host == "0.0.0.0"


def test_the_state_configmap_is_mounted_as_a_directory_the_config_points_into() -> None:
    mounts = {
        m["name"]: m for m in container(deployment()["spec"]["template"]["spec"])["volumeMounts"]
    }
    state = mounts["state"]
    assert "subPath" not in state, "a subPath mount never sees ConfigMap updates"
    for directory in (BASE, MANIFESTS / "overlays" / "gitops"):
        state_file = Path(settings_of(directory).state_file)
        assert state_file.parent == Path(state["mountPath"])
        assert state_file.name == generated_files(BASE, "tei-reconciler-state").name
    generator = next(
        g
        for g in one(BASE / "kustomization.yaml")["configMapGenerator"]
        if g["name"] == "tei-reconciler-state"
    )
    assert generator["options"]["disableNameSuffixHash"] is True


def test_the_api_managed_overlay_keeps_state_on_the_pvc_and_seeds_it_only_when_absent() -> None:
    directory = MANIFESTS / "overlays" / "api-managed"
    settings = settings_of(directory)
    mounts = {
        m["name"]: m["mountPath"]
        for m in container(deployment()["spec"]["template"]["spec"])["volumeMounts"]
    }
    assert Path(settings.state_file).is_relative_to(mounts["data"])
    assert Path(settings.runtime_dir).is_relative_to(mounts["data"])
    patch = one(directory / "deployment-patch.yaml")
    (init,) = patch["spec"]["template"]["spec"]["initContainers"]
    script = init["command"][-1]
    assert f"test -e {settings.state_file} ||" in script
    assert script.endswith(f"cp /seed/state.toml {settings.state_file}")
    assert {m["name"] for m in init["volumeMounts"]} == {"state", "data"}


@pytest.mark.parametrize(
    "directory", [BASE, *(MANIFESTS / "overlays" / o for o in OVERLAYS)], ids=lambda p: p.name
)
def test_the_shipped_state_and_config_toml_are_valid(directory: Path) -> None:
    settings = settings_of(directory)
    try:
        state = generated_files(directory, "tei-reconciler-state")
    except AssertionError:
        state = generated_files(BASE, "tei-reconciler-state")
    desired = parse_state(state.read_bytes(), str(state), reserved_ports=settings.reserved_ports)
    assert desired.instances
    lo, hi = settings.instance_port_range
    assert all(s.port is None or lo <= s.port < hi for s in desired.instances.values())


def is_loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


CONFIGS = {
    "base": BASE,
    **{o: MANIFESTS / "overlays" / o for o in OVERLAYS},
}


@pytest.mark.parametrize("name", [*CONFIGS, "container"])
def test_every_config_that_listens_beyond_loopback_requires_a_token_or_a_client_cert(
    name: str,
) -> None:
    if name == "container":
        settings = load_settings({}, {}, MANIFESTS / "container" / "config.toml")
    else:
        settings = settings_of(CONFIGS[name])
    exposed = [h for h in (settings.api_host, settings.grpc_host) if not is_loopback(h)]
    if not exposed:
        return
    auth = settings.auth
    assert auth.providers, f"{name}: listens on {exposed} without [auth]"
    if "token" in auth.providers:
        assert auth.token.tokens_file, f"{name}: tokens belong in a Secret, not in the config"
        assert not auth.token.tokens
    if name == "container":
        assert auth.token.tokens_file is not None
        assert auth.token.tokens_file.startswith("/run/secrets/")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_tokens_file_comes_from_a_secret_and_the_probes_need_no_token(name: str) -> None:
    settings = settings_of(CONFIGS[name])
    pod = deployment()["spec"]["template"]["spec"]
    main = container(pod)
    for probe in ("livenessProbe", "readinessProbe"):
        path = main[probe]["httpGet"]["path"]
        assert path in settings.auth.exempt_paths, f"{name}: the kubelet gets 401 on {path}"
    assert settings.auth.token.tokens_file is not None
    tokens_dir = str(Path(settings.auth.token.tokens_file).parent)
    (mount,) = [m for m in main["volumeMounts"] if m["mountPath"] == tokens_dir]
    assert "subPath" not in mount, "a subPath mount never sees a rotated Secret"
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "tei-reconciler-tokens"


def test_the_image_config_is_a_valid_configuration() -> None:
    settings = load_settings({}, {}, MANIFESTS / "container" / "config.toml")
    assert settings.state_file == "/data/state.toml"


def built(overlay: str) -> list[dict[str, Any]]:
    """The overlay as `kubectl kustomize` renders it, or the Python renderer without kubectl:
    never skipped."""
    return kustomize.render(MANIFESTS / "overlays" / overlay)


def without_hash_suffix(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects with generated ConfigMap names' content hash cut off (each renderer hashes
    its own way), sorted by kind and name."""

    def cut(name: str) -> str:
        return re.sub(r"-[a-z0-9]{10}$", "", name)

    for obj in objects:
        if obj["kind"] == "ConfigMap":
            obj["metadata"]["name"] = cut(obj["metadata"]["name"])
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                volume["configMap"]["name"] = cut(volume["configMap"]["name"])
    return sorted(objects, key=lambda o: (o["kind"], o["metadata"]["name"]))


@pytest.mark.parametrize("directory", [BASE, *(MANIFESTS / "overlays" / o for o in OVERLAYS)])
def test_the_python_renderer_renders_our_manifests_as_kubectl_kustomize_does(
    directory: Path,
) -> None:
    if kustomize.kubectl() is None:
        pytest.skip("kubectl is not installed: the overlay tests use the Python renderer alone")
    python = without_hash_suffix(kustomize.render_in_python(directory))
    assert python == without_hash_suffix(kustomize.render(directory))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_builds_into_one_consistent_deployment(overlay: str) -> None:
    objects = built(overlay)
    named = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    (deploy,) = [o for o in objects if o["kind"] == "Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    images = {c["image"] for c in [*pod["containers"], *pod.get("initContainers", [])]}
    assert len(images) == 1
    assert images != {"tei-reconciler"}, "the image name was not set"
    assert ("ConfigMap", "tei-reconciler-state") in named, "the state ConfigMap keeps its name"
    config_maps = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"}
    for volume in pod["volumes"]:
        if "configMap" in volume:
            assert volume["configMap"]["name"] in config_maps
    state_data = named[("ConfigMap", "tei-reconciler-state")]["data"]["state.toml"]
    parse_state(state_data.encode(), "state.toml")
    mounts = {m["mountPath"] for m in container(pod)["volumeMounts"]}
    state_file = settings_of(MANIFESTS / "overlays" / overlay).state_file
    if overlay == "gitops":
        assert str(Path(state_file).parent) in mounts
    else:
        assert "/etc/tei-reconciler/state" not in mounts
        assert pod["initContainers"][0]["name"] == "seed-state"
