"""alert_rules.yml in a real Prometheus: the config the hub renders finds and evaluates the
rules, and an alert fires and resolves through PrometheusAlerts against a scrape target
served by the test. Also: the hub exports the resource gauges the rules read."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from harness.ports import free_ports
from harness.waiting import wait_for
from tests.conftest import ROOT
from unistack import runtime
from unistack.alerts.prom_alerts import AlertTracker, PrometheusAlerts
from unistack.config import load_settings
from unistack.hub.events import EventLog
from unistack.hub.metrics import HubMetrics
from unistack.hub.resources import ResourceWatcher

RULES = ROOT / "alert_rules.yml"
Spawn = Callable[..., Any]


class MetricsTarget:
    """A scrape target on a free loopback port serving `text` at /metrics."""

    def __init__(self) -> None:
        self.text = ""
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                payload = target.text.encode()
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def target() -> Iterator[MetricsTarget]:
    served = MetricsTarget()
    yield served
    served.server.shutdown()
    served.server.server_close()


def start_prometheus(spawn: Spawn, config: Path, data: Path) -> str:
    """Start the real `prometheus` binary on a free port; its URL once it is ready."""
    port = free_ports(1)[0]
    spawn("prometheus", f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
          f"--storage.tsdb.path={data}", "--log.level=warn")
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(f"{url}/-/ready"), timeout=15, interval=0.05)
    return url


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def rules_of(url: str) -> list[dict[str, Any]]:
    groups = requests.get(f"{url}/api/v1/rules", timeout=2).json()["data"]["groups"]
    return [dict(rule, file=group["file"]) for group in groups for rule in group["rules"]]


def rule_names() -> set[str]:
    document = yaml.safe_load(RULES.read_text())
    return {rule["alert"] for group in document["groups"] for rule in group["rules"]}


@pytest.mark.integration
def test_the_rendered_config_loads_and_evaluates_every_rule_of_the_checkout(
    spawn: Spawn, tmp_path: Path,
) -> None:
    settings = load_settings(environ={"UNISTACK_HOME": str(tmp_path),
                                      "PROMETHEUS_SCRAPE_INTERVAL": "1s"}, root=ROOT)
    runtime.render(settings)
    rendered = settings.run_dir / "prometheus" / "prometheus.yml"
    assert yaml.safe_load(rendered.read_text())["rule_files"] == [str(RULES)]
    url = start_prometheus(spawn, rendered, settings.data_dir / "prometheus")

    def evaluated() -> list[dict[str, Any]]:
        rules = rules_of(url)
        return rules if rules and all(r["lastEvaluation"][:4] != "0001" for r in rules) else []

    rules = wait_for(evaluated, timeout=10, interval=0.1)
    assert {r["name"] for r in rules} == rule_names()
    assert {r["file"] for r in rules} == {str(RULES)}
    assert [(r["name"], r["lastError"]) for r in rules if r["health"] != "ok"] == []


def short_for_copy(directory: Path, alertname: str, duration: str) -> Path:
    """alert_rules.yml with ALERTNAME's `for` cut to DURATION (expr, labels and
    annotations untouched), so the test need not wait out the production `for`."""
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == alertname:
                rule["for"] = duration
    path = directory / "alert_rules.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def scrape_config(directory: Path, rules: Path, target_port: int) -> Path:
    """The template prometheus.yml (its file_sd job and relabelling) at 1s intervals, with
    one ml_engine target: the test's server, labelled as the hub labels the real one."""
    config = yaml.safe_load((ROOT / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(rules)]
    (directory / "targets").mkdir()
    (directory / "targets" / "services.json").write_text(json.dumps([{
        "targets": [f"127.0.0.1:{target_port}"],
        "labels": {"service": "ml_engine", "group": "ml", "__metrics_path__": "/metrics"}}]))
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


BACKLOG_50K = "# TYPE ml_engine_stream_length gauge\nml_engine_stream_length 50000\n"
# A metric with its own `service` label, as the hub exports it (the target says ml_engine).
MEMORY_OF_REDIS = ('# TYPE unistack_memory_used_ratio gauge\n'
                   'unistack_memory_used_ratio{service="redis"} 0.2\n')


def memory_rule_services(url: str) -> list[dict[str, str]]:
    """The labels UnistackMemoryHigh's expression (without its threshold) gives the
    scraped series: the scrape renamed `service` to `exported_service`; the rule maps it
    back, as tests/rules/ assume."""
    rule = next(r for r in rules_of(url) if r["name"] == "UnistackMemoryHigh")
    query = rule["query"].rsplit(">", 1)[0]
    answer = requests.get(f"{url}/api/v1/query", params={"query": query}, timeout=2).json()
    return [series["metric"] for series in answer["data"]["result"]]


def backlog_rule() -> dict[str, Any]:
    document = yaml.safe_load(RULES.read_text())
    rules = [r for g in document["groups"] for r in g["rules"]]
    return next(r for r in rules if r["alert"] == "MLEngineBacklogHigh")


@pytest.mark.integration
def test_a_backlog_alert_fires_and_resolves_through_the_poller(
    spawn: Spawn, tmp_path: Path, target: MetricsTarget,
) -> None:
    target.text = BACKLOG_50K + MEMORY_OF_REDIS
    rules = short_for_copy(tmp_path, "MLEngineBacklogHigh", "2s")
    url = start_prometheus(spawn, scrape_config(tmp_path, rules, target.port), tmp_path / "data")
    poller = PrometheusAlerts(url, timeout=2, tracker=AlertTracker(resolve_after=0))
    events: list[dict[str, Any]] = []

    def seen(kind: str) -> list[dict[str, Any]]:
        events.extend(poller.poll(time.time()))
        return [e for e in events if e["kind"] == kind]

    (fired,) = wait_for(lambda: seen("alert_firing"), timeout=20, interval=0.2)
    annotations = backlog_rule()["annotations"]
    assert fired == {
        "ts": fired["ts"], "service": "ml_engine", "kind": "alert_firing",
        "severity": "warning",
        "detail": "50k ML requests are waiting in ml:requests (warning above 10,000)",
        "fingerprint": "rule:MLEngineBacklogHigh:service=ml_engine",
        "next_step": annotations["next_step"], "alertname": "MLEngineBacklogHigh"}

    assert memory_rule_services(url) == [{"service": "redis"}]

    target.text = "# TYPE ml_engine_stream_length gauge\nml_engine_stream_length 12\n"
    (resolved,) = wait_for(lambda: seen("alert_resolved"), timeout=15, interval=0.2)
    assert resolved["fingerprint"] == fired["fingerprint"]
    assert [e["kind"] for e in events] == ["alert_firing", "alert_resolved"]


# --- the hub's resource gauges (what the resource rules read) -------------------------


def test_the_hub_exports_memory_and_free_disk_as_ratios(tmp_path: Path) -> None:
    settings = load_settings(environ={"UNISTACK_HOME": str(tmp_path)}, root=ROOT)
    metrics = HubMetrics()
    pids = {"self": os.getpid()}
    watcher = ResourceWatcher(settings, lambda: pids, EventLog(), [tmp_path], metrics=metrics)
    watcher.sample()
    memory = metrics.registry.get_sample_value("unistack_memory_used_ratio", {"service": "self"})
    disk = metrics.registry.get_sample_value("unistack_disk_free_ratio", {"path": str(tmp_path)})
    assert memory is not None and 0 < memory < 1
    assert disk is not None and 0 < disk <= 1
    pids.clear()  # a stopped service keeps no stale memory value (and no alert)
    watcher.sample()
    assert metrics.registry.get_sample_value("unistack_memory_used_ratio",
                                             {"service": "self"}) is None


def test_every_hub_metric_a_rule_reads_is_one_the_hub_exports(tmp_path: Path) -> None:
    metrics = HubMetrics()
    metrics.memory_used({"redis": 0.1})
    metrics.disk_free(str(tmp_path), 0.5)
    exported = {family.name for family in metrics.registry.collect()}
    document = yaml.safe_load(RULES.read_text())
    exprs = " ".join(rule["expr"] for group in document["groups"] for rule in group["rules"])
    read = set(re.findall(r"\bunistack_[a-z_]+", exprs))
    assert read and read <= exported
