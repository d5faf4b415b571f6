"""The deployment files under deploy/ and the Dockerfiles: they parse, hold what an operator
relies on, keep secrets out, and query only metrics edgeblur really exports.

Metric names are checked against the real ``edgeblur.metrics.Metrics`` exposition, so renaming
a metric breaks this test before it breaks a dashboard. ``docker compose config`` and
``kubectl kustomize`` run only where those tools work; otherwise those tests skip and say why.
"""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
ENV = {"CAM_USER": "viewer", "CAM_PASS": "test-only"}
PLACEHOLDER = re.compile(r"^(change-me|changeme|replace-me|example|viewer|)$", re.IGNORECASE)
METRIC = re.compile(r"\bedgeblur_[a-z0-9_]+\b")
SUFFIXES = ("_bucket", "_sum", "_count")
# Metrics the alerts or dashboards may use before edgeblur/metrics.py exports them (none now).
PENDING_METRICS: set[str] = set()


def _yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def _load_all(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def _load(path: Path) -> Any:
    (doc,) = _load_all(path)
    return doc


# --- everything parses ------------------------------------------------------------------------


def test_every_yaml_and_json_under_deploy_parses() -> None:
    files = _yaml_files()
    assert len(files) >= 15, files
    for path in files:
        docs = _load_all(path)
        assert docs, f"{path} is empty"
    jsons = sorted(DEPLOY.rglob("*.json"))
    assert jsons
    for path in jsons:
        json.loads(path.read_text(encoding="utf-8"))


# --- docker compose ---------------------------------------------------------------------------


def test_compose_runs_the_four_services() -> None:
    compose = _load(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert {"edgeblur", "mediamtx", "prometheus", "grafana"} <= set(services)
    assert services["mediamtx"]["image"].startswith("bluenviron/mediamtx:")
    edgeblur = services["edgeblur"]
    assert edgeblur["build"]["dockerfile"] == "Dockerfile"
    # Secrets only as references to deploy/.env, never literal values.
    for name, value in edgeblur["environment"].items():
        assert str(value).startswith("${"), f"edgeblur.environment.{name} must come from .env"
    assert (
        "${GRAFANA_ADMIN_PASSWORD"
        in services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    )
    # Operator ports only on the host's loopback.
    for svc in ("edgeblur", "prometheus", "grafana"):
        for port in services[svc].get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{svc} publishes {port} beyond loopback"


def test_compose_gpu_and_jetson_overrides() -> None:
    gpu = _load(DEPLOY / "compose.gpu.yaml")["services"]["edgeblur"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    jetson = _load(DEPLOY / "compose.jetson.yaml")["services"]["edgeblur"]
    assert jetson["runtime"] == "nvidia" and jetson["build"]["dockerfile"] == "Dockerfile.jetson"


def test_prometheus_scrapes_edgeblur_and_loads_the_alerts() -> None:
    prom = _load(DEPLOY / "prometheus" / "prometheus.yml")
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "edgeblur"]
    assert job["static_configs"][0]["targets"] == ["edgeblur:9108"]
    assert "/etc/prometheus/alerts.yml" in prom["rule_files"]


def test_grafana_is_provisioned_with_the_datasource_the_dashboard_uses() -> None:
    ds = _load(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")
    (source,) = ds["datasources"]
    text = (DEPLOY / "grafana" / "dashboards" / "edgeblur.json").read_text()
    dashboard = json.loads(text)
    # The data source is a variable (the provisioned default here, a choice on import): no
    # panel or variable names a uid of its own.
    uids = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    assert uids == {"${datasource}"} and source["isDefault"]
    assert f'"uid": "{source["uid"]}"' not in text
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"instance", "camera"} <= set(variables)
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    provider = _load(DEPLOY / "grafana" / "provisioning" / "dashboards" / "edgeblur.yaml")
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"


def test_mediamtx_lets_only_edgeblur_publish() -> None:
    mtx = _load(DEPLOY / "mediamtx.yml")
    compose = _load(DEPLOY / "compose.yaml")
    address = compose["services"]["edgeblur"]["networks"]["edgeblur"]["ipv4_address"]
    publishers = [
        u
        for u in mtx["authInternalUsers"]
        if any(p["action"] == "publish" for p in u["permissions"])
    ]
    assert publishers and all(u["ips"] == [f"{address}/32"] for u in publishers)


def test_env_example_holds_no_real_secret() -> None:
    values = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    assert {"CAM_USER", "CAM_PASS", "GRAFANA_ADMIN_PASSWORD"} <= set(values)
    for key in ("CAM_PASS", "GRAFANA_ADMIN_PASSWORD"):
        assert PLACEHOLDER.match(values[key]), f"{key} in .env.example must be a placeholder"


def _camera_files() -> list[Path]:
    return [
        DEPLOY / "cameras.yaml",
        DEPLOY / "cameras.jetson.yaml",
        K8S / "cameras.all.yaml",
        *sorted((K8S / "shards").glob("shard-*/cameras.yaml")),
    ]


@pytest.mark.parametrize("path", _camera_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_deploy_camera_configs_are_valid_and_reachable(path: Path) -> None:
    from edgeblur.config import load_service_config

    text = path.read_text()
    assert "${CAM_USER}" in text and "${CAM_PASS}" in text  # credentials only by reference
    cfg = load_service_config(path, env=ENV)
    assert cfg.http.bind == "0.0.0.0" and cfg.http.port == 9108  # Prometheus and probes reach it
    assert cfg.scheduler.max_batch <= cfg.runtime.max_batch
    for cam in cfg.cameras:
        assert cam.output.rtsp.reveal() == f"rtsp://mediamtx:8554/{cam.name}"


# --- kubernetes --------------------------------------------------------------------------------


def _k8s_objects() -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml" or path.name.startswith("cameras"):
            continue  # kustomize's own file and edgeblur configs, not Kubernetes objects
        out.extend((path, doc) for doc in _load_all(path))
    return out


def test_k8s_objects_have_api_version_kind_and_metadata() -> None:
    objects = _k8s_objects()
    kinds = {doc["kind"] for _p, doc in objects}
    assert {"StatefulSet", "Service", "ServiceMonitor", "Secret", "Namespace"} <= kinds
    assert {"NetworkPolicy", "Deployment"} <= kinds  # and MediaMTX
    for path, doc in objects:
        assert doc.get("apiVersion") and doc.get("kind"), path
        assert doc.get("metadata", {}).get("name"), path


def _statefulset() -> dict:
    return _load(K8S / "base" / "statefulset.yaml")


def test_k8s_statefulset_probes_gpu_and_secrets() -> None:
    dep = _statefulset()
    # At most one pod per shard, also during a node partition (README: "When a node fails").
    assert dep["kind"] == "StatefulSet" and dep["spec"]["replicas"] == 1
    assert dep["spec"]["serviceName"] == "edgeblur"
    pod = dep["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1800  # a first build
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert c["envFrom"][0]["secretRef"]["name"] == "edgeblur-camera-credentials"
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    notes = pod["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/port"] == "9108"
    service = _load(K8S / "base" / "service.yaml")
    assert service["spec"]["ports"][0]["port"] == 9108
    monitor = _load(K8S / "components" / "servicemonitor" / "servicemonitor.yaml")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["jobLabel"] in service["metadata"]["labels"]
    # Engines survive restarts and config edits: a node-local folder, not an emptyDir.
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["engines"]["hostPath"]["path"] == "/var/lib/edgeblur/engines"
    (init,) = pod["spec"]["initContainers"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}


def test_k8s_gpu_shards_never_fall_back_to_the_cpu() -> None:
    from edgeblur.config import load_service_config

    for path in [K8S / "cameras.all.yaml", *sorted((K8S / "shards").glob("shard-*/cameras.yaml"))]:
        cfg = load_service_config(path, env=ENV)
        assert cfg.runtime.backend == "tensorrt" and cfg.runtime.fallback is False, path


def test_k8s_mediamtx_lets_only_edgeblur_pods_publish() -> None:
    mtx = _load(K8S / "mediamtx" / "mediamtx.yml")
    # Every protocol that can publish, except RTSP, is off; RTSP is fenced by the policy.
    assert mtx["rtsp"] is True and not any(mtx[p] for p in ("webrtc", "rtmp", "srt"))
    policy = _load(K8S / "mediamtx" / "networkpolicy.yaml")
    rtsp = [r for r in policy["spec"]["ingress"] if {"port": 8554, "protocol": "TCP"} in r["ports"]]
    (rule,) = rtsp
    senders = [f["podSelector"]["matchLabels"] for f in rule["from"]]
    assert {"app.kubernetes.io/name": "edgeblur"} in senders
    assert all("namespaceSelector" not in f for f in rule["from"])
    assert all(
        8554 not in [p["port"] for p in r["ports"]]
        for r in policy["spec"]["ingress"]
        if r is not rule
    )
    service = _load(K8S / "mediamtx" / "service.yaml")
    assert service["metadata"]["name"] == "mediamtx"  # the host of every output.rtsp
    edgeblur = _load(K8S / "networkpolicy.yaml")
    assert [p["port"] for r in edgeblur["spec"]["ingress"] for p in r["ports"]] == [9108]


def test_k8s_secret_holds_no_real_password() -> None:
    secrets = [doc for _p, doc in _k8s_objects() if doc["kind"] == "Secret"]
    assert secrets
    for secret in secrets:
        assert "data" not in secret  # base64 would hide a real value from review
        for key, value in secret["stringData"].items():
            assert PLACEHOLDER.match(str(value)), f"Secret {key} must be a placeholder"


def test_k8s_shards_are_what_the_generator_writes(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_shards", K8S / "make_shards.py")
    assert spec and spec.loader
    make_shards = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_shards)
    committed = sorted(p.relative_to(K8S / "shards") for p in (K8S / "shards").rglob("*.yaml"))
    per_shard = len(_load(K8S / "shards" / "shard-0" / "cameras.yaml")["cameras"])
    out = tmp_path / "shards"
    source = str(K8S / "cameras.all.yaml")
    assert make_shards.main([source, "--per-shard", str(per_shard), "--out", str(out)]) == 0
    generated = sorted(p.relative_to(out) for p in out.rglob("*.yaml"))
    assert generated == committed
    for rel in generated:
        assert (out / rel).read_text() == (K8S / "shards" / rel).read_text(), rel
    # Fewer, larger shards: leftover shard folders are removed.
    make_shards.main([source, "--per-shard", "100", "--out", str(out)])
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["shard-0"]


def _kustomize(path: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed here; kustomize rendering not checked")
    result = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_k8s_servicemonitor_is_an_optional_component(tmp_path: Path) -> None:
    """The default render needs no Prometheus Operator CRD; the component adds the monitor."""
    docs = _kustomize(K8S)
    assert "ServiceMonitor" not in {d["kind"] for d in docs}
    assert not any(d["apiVersion"].startswith("monitoring.coreos.com/") for d in docs)
    site = tmp_path / "kubernetes"
    shutil.copytree(K8S, site)
    text = (site / "kustomization.yaml").read_text()
    enabled = text.replace(
        "# components:\n#   - components/servicemonitor",
        "components:\n  - components/servicemonitor",
    )
    assert enabled != text, "the commented-out component in kustomization.yaml moved"
    (site / "kustomization.yaml").write_text(enabled)
    (monitor,) = [d for d in _kustomize(site) if d["kind"] == "ServiceMonitor"]
    assert monitor["metadata"]["namespace"] == "edgeblur"


def test_k8s_kustomize_renders_one_statefulset_per_shard() -> None:
    docs = _kustomize(K8S)
    shards = sorted(p.name for p in (K8S / "shards").glob("shard-*"))
    deployments = [d for d in docs if d["kind"] == "StatefulSet"]
    assert len(deployments) == len(shards)
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"] == ["mediamtx"]
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    maps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    for dep in deployments:
        shard = dep["metadata"]["labels"]["edgeblur.io/shard"]
        assert dep["spec"]["selector"]["matchLabels"]["edgeblur.io/shard"] == shard
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        assert volumes["cameras"]["configMap"]["name"] in maps  # hashed name resolved
        assert dep["metadata"]["namespace"] == "edgeblur"
        assert dep["spec"]["serviceName"] in services  # the suffixed governing Service


# --- metric names used by the dashboard and the alerts ---------------------------------------


def _exported_metric_names() -> set[str]:
    from prometheus_client import generate_latest

    from edgeblur.live.metrics import Metrics

    metrics = Metrics()
    metrics.camera("gate")
    metrics.batch("centerface")  # the batch-size series exists once a model reports
    metrics.set_runtimes([("centerface", "centerface", "onnxruntime-cpu", "fp32")])  # at start
    # The schedule series exist once an inference group runs.
    metrics.schedule("centerface", 0, {"face": (1, 2, 640), "plate": (1, 1, 1280)})
    text = generate_latest(metrics.registry).decode()
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(_base(re.split(r"[{ ]", line, maxsplit=1)[0]))
    return names


def _base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _dashboard_queries() -> list[str]:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "edgeblur.json").read_text())
    queries = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "query", "definition") and isinstance(value, str):
                    queries.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dash)
    return queries


def _alert_queries() -> list[str]:
    alerts = _load(DEPLOY / "prometheus" / "alerts.yml")
    return [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]


def test_dashboard_and_alerts_use_only_exported_metrics() -> None:
    exported = _exported_metric_names()
    for source, queries in (("dashboard", _dashboard_queries()), ("alerts", _alert_queries())):
        used = {_base(m) for q in queries for m in METRIC.findall(q)}
        assert used, f"no edgeblur metric found in the {source}"
        missing = used - exported - PENDING_METRICS
        assert not missing, f"{source} queries metrics edgeblur does not export: {missing}"


def test_dashboard_and_alerts_cover_what_operators_need() -> None:
    dash = "\n".join(_dashboard_queries())
    for needed in (
        "rate(edgeblur_source_frames_total",
        'rate(edgeblur_frames_total{instance=~"$instance", camera=~"$camera", '
        'result="published"}[1m])',
        "edgeblur_latency_seconds_bucket",
        'sum by (group, le) (rate(edgeblur_stage_seconds_bucket{instance=~"$instance", '
        'stage="inference"}',
        "edgeblur_camera_up",
        "edgeblur_reconnects_total",
        "result!=",
    ):
        assert needed in dash, needed
    groups = _load(DEPLOY / "prometheus" / "alerts.yml")["groups"]
    alerts = {r["alert"]: r["expr"] for g in groups for r in g["rules"]}
    assert alerts["EdgeblurUncheckedFramePublished"].strip() == (
        "edgeblur_unchecked_frames_published_total > 0"
    )
    assert "edgeblur_camera_up == 0" in alerts["EdgeblurCameraDown"]
    assert "edgeblur_latency_seconds_bucket" in alerts["EdgeblurLatencyHigh"]


# --- systemd and images ---------------------------------------------------------------------------


def test_systemd_unit_restarts_and_is_hardened() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read(DEPLOY / "systemd" / "edgeblur.service")
    svc = unit["Service"]
    assert svc["Restart"] in ("always", "on-failure")
    assert svc["NoNewPrivileges"] == "yes" and svc["ProtectSystem"] == "strict"
    assert svc["PrivateTmp"] == "yes"
    assert "/var/cache/edgeblur" in svc["ReadWritePaths"]
    assert svc["EnvironmentFile"].startswith("/etc/edgeblur/")
    assert svc.get("User") == "edgeblur" or svc.get("DynamicUser") == "yes"
    assert "edgeblur serve -c" in svc["ExecStart"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.jetson"])
def test_dockerfiles_are_multistage_nonroot_and_healthchecked(name: str) -> None:
    text = (ROOT / name).read_text()
    assert text.count("\nFROM ") >= 3
    assert "edgeblur models pull" in text
    assert "--system-site-packages" in text
    assert re.search(r"^USER edgeblur$", text, re.MULTILINE)
    (health,) = re.findall(r"^HEALTHCHECK (?:.*\\\n)*.*", text, re.MULTILINE)
    assert "urllib.request" in health and "/healthz" in health and "curl" not in health
    assert not re.search(r"CAM_PASS\s*=|ENV\s+CAM_", text)  # no credentials in an image


def test_jetson_image_is_based_on_l4t_jetpack() -> None:
    text = (ROOT / "Dockerfile.jetson").read_text()
    assert re.search(r"ARG L4T_IMAGE=nvcr\.io/nvidia/l4t-jetpack:r36\.", text)
    assert "cuda-python" in text


def test_dockerignore_keeps_secrets_and_caches_out() -> None:
    lines = set((ROOT / ".dockerignore").read_text().splitlines())
    assert {"**/.env", ".venv", "**/*.engine", "**/*.onnx"} <= lines


def _docker_compose_usable() -> str | None:
    """None if `docker compose` and a Docker engine answer, else why not."""
    docker = shutil.which("docker")
    if docker is None:
        return "docker is not installed"
    version = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False
    )
    if version.returncode != 0:
        return "the docker compose plugin is not installed"
    info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30, check=False)
    if info.returncode != 0:
        return "no Docker engine is running"
    return None


def test_docker_compose_config_accepts_every_combination() -> None:
    reason = _docker_compose_usable()
    if reason:
        pytest.skip(f"docker compose config not run: {reason}")
    base = ["docker", "compose", "--env-file", ".env.example", "-f", "compose.yaml"]
    for extra in ([], ["-f", "compose.gpu.yaml"], ["-f", "compose.jetson.yaml"]):
        result = subprocess.run(
            [*base, *extra, "config", "--quiet"],
            cwd=DEPLOY,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.jetson"])
def test_images_carry_oci_labels(name: str) -> None:
    final = (ROOT / name).read_text().rsplit("\nFROM ", 1)[1]  # labels of the shipped stage
    for key in ("source", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}=" in final, key
    assert 'org.opencontainers.image.licenses="AGPL-3.0-or-later"' in final
    for arg in ("VERSION", "REVISION", "SOURCE_URL"):
        assert re.search(rf"^ARG {arg}=", final, re.MULTILINE), arg


def test_bake_builds_the_three_images_alike() -> None:
    """docker-bake.hcl, read without buildx (not installed here): targets, tags, version."""
    import tomllib

    text = (ROOT / "docker-bake.hcl").read_text()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert re.search(rf'variable "VERSION" {{\s*default = "{re.escape(version)}"', text)
    assert re.search(r'group "default" {\s*targets = \["cpu", "cuda", "jetson"\]', text)
    targets = dict(re.findall(r'target "(\w+)" {(.*?)\n}', text, re.DOTALL))
    for name, dockerfile in (
        ("cpu", "Dockerfile"),
        ("cuda", "Dockerfile"),
        ("jetson", "Dockerfile.jetson"),
    ):
        body = targets[name]
        assert 'inherits   = ["_common"]' in body and f'dockerfile = "{dockerfile}"' in body
        assert f'"${{REGISTRY}}:${{VERSION}}-{name}", "${{REGISTRY}}:{name}"' in body
        assert (ROOT / dockerfile).is_file()
    for arg in ("VERSION", "REVISION", "SOURCE_URL"):
        assert f"{arg} = {arg}" in " ".join(targets["_common"].split())
    assert 'VARIANT = "cpu"' in targets["cpu"] and 'VARIANT = "cuda"' in targets["cuda"]
