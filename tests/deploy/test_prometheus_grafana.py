"""The Prometheus and Grafana of docker-compose.yml, checked as files since compose cannot
run here: the dashboard parses, has its panels, asks only for metrics WrenchAI defines and
names the provisioned datasource; Prometheus scrapes the API, the projector and every
worker kind; compose mounts both configurations."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import wrenchai.metrics  # noqa: F401  (registers the wrench_* families)
from wrenchai._workers import WORKERS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "wrenchai.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "wrenchai.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"

# The sample names each family type exposes (prometheus_client's, text format 0.0.4).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}
# A metric name in PromQL that WrenchAI's processes would expose: its own families and
# prometheus_client's process collector.
_OURS = re.compile(r"\b((?:wrench|process)_[a-zA-Z0-9_]+)\b")


def defined_metrics() -> set[str]:
    """Every sample name the default registry exposes once wrenchai.metrics is imported."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        names |= {family.name + suffix for suffix in _SUFFIXES[family.type]}
    return names


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def graphs(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The dashboard's panels that plot queries (rows left out, nested ones included)."""
    found = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            found += panel.get("panels", [])
        else:
            found.append(panel)
    return found


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in graphs(dashboard) for t in p["targets"]]


def test_the_dashboard_has_the_panels_operators_look_for(dashboard: dict[str, Any]) -> None:
    """Throughput, lag, step latency, tokens and cost by model, budget burn, open streams,
    process CPU and memory: each a panel, each with at least one query."""
    titles = {p["title"] for p in graphs(dashboard)}
    for wanted in (
        "Event throughput by type",
        "Consumer lag by group and partition",
        "Step latency by tool (p50, p95)",
        "Tokens by model and kind",
        "Cost by model",
        "Budget burn",
        "Open streams",
        "Process CPU",
        "Process memory",
    ):
        assert wanted in titles, f"no panel {wanted!r} in {DASHBOARD.name}"
    assert all(p["targets"] and all(t["expr"] for t in p["targets"]) for p in graphs(dashboard))
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert dashboard["uid"] and dashboard["title"]


def test_step_latency_is_a_quantile_of_the_step_histogram(dashboard: dict[str, Any]) -> None:
    (panel,) = [p for p in graphs(dashboard) if p["title"].startswith("Step latency")]
    for target in panel["targets"]:
        assert target["expr"].startswith("histogram_quantile(")
        assert "wrench_step_duration_seconds_bucket" in target["expr"]
        assert re.search(r"by \([^)]*\btool\b[^)]*\ble\b", target["expr"])


def test_every_query_asks_for_metrics_wrenchai_defines(dashboard: dict[str, Any]) -> None:
    """A renamed family would leave a panel empty without an error: every wrench_* and
    process_* name in a query is one the registry exposes, suffixes included."""
    defined = defined_metrics()
    assert {"wrench_events_produced_total", "wrench_step_duration_seconds_bucket"} <= defined
    used = {name for expr in expressions(dashboard) for name in _OURS.findall(expr)}
    assert used, "the dashboard queries no WrenchAI metric"
    unknown = used - defined
    assert not unknown, f"queries name metrics no process exposes: {sorted(unknown)}"
    # And the families the panels are about are all there.
    for family in (
        "wrench_events_produced_total",
        "wrench_consumer_lag",
        "wrench_llm_tokens_total",
        "wrench_llm_cost_usd_total",
        "wrench_budget_spend_ratio",
        "wrench_stream_connections",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert family in used, f"no panel queries {family}"


def test_the_name_check_catches_a_misspelt_metric() -> None:
    """The check above is not vacuous: a name off by a suffix is not defined."""
    defined = defined_metrics()
    assert "wrench_events_produced" not in defined  # a counter is read as ..._total
    assert "wrench_step_duration_seconds" not in defined  # a histogram as _bucket/_sum/_count
    assert "wrench_consumer_lag_total" not in defined


def test_panels_use_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    (source,) = load_yaml(DATASOURCES)["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    for panel in graphs(dashboard):
        for holder in (panel, *panel["targets"]):
            assert holder["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel[
                "title"
            ]


def test_the_dashboard_provider_reads_the_mounted_folder() -> None:
    (provider,) = load_yaml(PROVIDERS)["providers"]
    assert provider["type"] == "file"
    grafana = load_yaml(COMPOSE)["services"]["grafana"]
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in grafana["volumes"] if ":" in volume)
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"


def _jobs() -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in load_yaml(PROMETHEUS)["scrape_configs"]}


def _targets(job: dict[str, Any]) -> list[str]:
    static = [t for c in job.get("static_configs", []) for t in c["targets"]]
    dns = [f"{n}:{c['port']}" for c in job.get("dns_sd_configs", []) for n in c["names"]]
    return static + dns


def test_prometheus_scrapes_the_api_the_projector_and_every_worker_kind() -> None:
    """One job per process kind, each pointing at its compose service: the API on its
    port with the metrics:read key, the others on WRENCH_METRICS_PORT."""
    jobs = _jobs()
    services = load_yaml(COMPOSE)["services"]
    env = services["projector"]["environment"]
    port = int(env["WRENCH_METRICS_PORT"])
    assert env["WRENCH_METRICS_HOST"] == "0.0.0.0"
    for kind in ["projector", *(name for name, _ in WORKERS)]:
        assert kind in jobs, f"prometheus.yml does not scrape {kind}"
        assert _targets(jobs[kind]) == [f"{kind}:{port}"]
        assert kind in services, f"docker-compose.yml has no service {kind}"
        assert services[kind]["environment"]["WRENCH_METRICS_PORT"] == str(port)
    api = jobs["api"]
    assert _targets(api) == ["api:8000"] and api.get("metrics_path", "/metrics") == "/metrics"
    secret = api["authorization"]["credentials_file"]
    assert secret == "/run/secrets/prometheus_api_key"
    assert "prometheus_api_key" in services["prometheus"]["secrets"]
    assert "prometheus_api_key" in load_yaml(COMPOSE)["secrets"]


def test_compose_mounts_the_prometheus_configuration() -> None:
    prometheus = load_yaml(COMPOSE)["services"]["prometheus"]
    assert (
        "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
        in (prometheus["volumes"])
    )
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
