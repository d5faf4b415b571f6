"""deploy/prometheus/alerts.yml fires on the series Prometheus really stores.

``promtool test rules`` (Debian package ``prometheus``) evaluates the alerts against
alerts.test.yml, whose series carry the labels of the two shipped ways to scrape edgeblur:
compose's static job and the Prometheus Operator's ServiceMonitor. The second test checks that
those labels are what the shipped ServiceMonitor and Service would give (job from jobLabel,
accelerator from the relabeling), so editing either breaks this before an alert goes silent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
K8S = ROOT / "deploy" / "kubernetes"


def test_promtool_rule_tests_pass() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]):
        result = subprocess.run(
            [promtool, *args], cwd=PROM, capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


def _series_labels(series: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', series))


def test_rule_test_series_carry_the_servicemonitor_labels() -> None:
    monitor = yaml.safe_load(
        (K8S / "components" / "servicemonitor" / "servicemonitor.yaml").read_text()
    )
    service = yaml.safe_load((K8S / "base" / "service.yaml").read_text())
    labels = service["metadata"]["labels"]
    spec = monitor["spec"]
    job = labels[spec["jobLabel"]]  # the Operator sets job to this Service label's value
    assert job == "edgeblur"
    (endpoint,) = spec["endpoints"]
    (relabel,) = endpoint["relabelings"]
    source = relabel["sourceLabels"][0].removeprefix("__meta_kubernetes_service_label_")
    by_meta = {re.sub(r"[^a-zA-Z0-9_]", "_", k): v for k, v in labels.items()}
    accelerator = by_meta[source]
    assert (relabel["targetLabel"], accelerator) == ("accelerator", "gpu")

    tests = yaml.safe_load((PROM / "alerts.test.yml").read_text())["tests"]
    k8s_series = [
        _series_labels(s["series"]) for s in tests[0]["input_series"] if "service=" in s["series"]
    ]
    assert k8s_series
    for series in k8s_series:
        assert series["job"] == job and series["accelerator"] == accelerator
        assert series["endpoint"] == endpoint["port"]
    compose = yaml.safe_load((PROM / "prometheus.yml").read_text())
    (scrape,) = [j for j in compose["scrape_configs"] if j["job_name"] == "edgeblur"]
    for s in tests[1]["input_series"]:
        series = _series_labels(s["series"])
        assert series["job"] == scrape["job_name"]
        assert series["instance"] in scrape["static_configs"][0]["targets"]
    rules = yaml.safe_load((PROM / "alerts.yml").read_text())["groups"][0]["rules"]
    exprs = {r["alert"]: r["expr"] for r in rules}
    assert f'up{{job="{job}"}}' in exprs["EdgeblurDown"]
    assert 'accelerator="gpu"' in exprs["EdgeblurGpuShardOnCpu"]
