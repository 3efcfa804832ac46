"""dashboard: pages, the JSON API, the live relay, history and the security headers,
against hand-written stand-ins for the hub API and Prometheus."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from harness.waiting import wait_for
from tests.dashboard_fakes import FakeHub, FakePrometheus, make_app
from unistack.dashboard import history as hist
from unistack.dashboard.relay import event_id, relay
from unistack.dashboard.security import CONTENT_SECURITY_POLICY
from unistack.dashboard.snapshot import Snapshot

STATIC = Path(__file__).resolve().parents[2] / "src" / "unistack" / "dashboard" / "static"


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


@pytest.fixture
def prometheus() -> FakePrometheus:
    return FakePrometheus()


@pytest.fixture
def app(tmp_path: Path, hub: FakeHub, prometheus: FakePrometheus) -> Flask:
    return make_app(tmp_path, hub, prometheus)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


# --- pages and probes -------------------------------------------------------------------


def test_overview_page_loads_its_own_script_and_styles_only(client: FlaskClient) -> None:
    page = client.get("/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    scripts = re.findall(r"<script[^>]*>", html)
    assert scripts and all('src="/static/' in tag for tag in scripts)  # no inline script
    assert '<script src="/static/dashboard.js" defer>' in html
    assert "/static/vendor/uPlot.iife.min.js" in html
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers
    assert "style=" not in html
    assert "http://" not in html and "https://" not in html  # no CDN: works offline
    assert '<link rel="icon" href="data:,">' in html
    for metric in hist.CHARTS:
        assert f'data-metric="{metric}"' in html
    assert 'data-range="15m"' in html and 'data-range="24h"' in html


def test_static_files_are_served_from_the_package(client: FlaskClient) -> None:
    for name in ("dashboard.js", "dashboard.css", "vendor/uPlot.iife.min.js",
                 "vendor/uPlot.min.css", "vendor/uPlot.LICENSE"):
        answer = client.get(f"/static/{name}")
        assert answer.status_code == 200, name
        answer.close()
    assert client.get("/static/../app.py").status_code == 404


def test_the_script_builds_the_page_with_dom_apis_only() -> None:
    script = (STATIC / "dashboard.js").read_text()
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert unsafe not in script
    assert 'new EventSource("/api/events"' in script
    assert "data-service" in script and "dataset.state" in script


@pytest.mark.parametrize("path", ["/health", "/ready"])
def test_probes_answer_json_200(client: FlaskClient, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 200 and answer.is_json


def test_metrics_count_the_dashboards_own_requests(client: FlaskClient) -> None:
    client.get("/health")
    text = client.get("/metrics").get_data(as_text=True)
    assert re.search(r"^unistack_dashboard_requests_total [1-9]", text, re.MULTILINE)
    assert "unistack_dashboard_request_duration_seconds_bucket" in text
    assert "unistack_dashboard_event_streams" in text


def test_incident_text_is_shown_escaped(client: FlaskClient, hub: FakeHub) -> None:
    hub.incidents["redis-20260101-hung.txt"] = "log line <script>alert(1)</script> & more"
    html = client.get("/incidents/redis-20260101-hung.txt").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert "<script>alert" not in html
    assert re.search(r'<pre class="incident">', html)


@pytest.mark.parametrize("name", ["..", ".", "a%20b", "x;rm", "%2e%2e%2fsecret"])
def test_an_incident_name_that_is_no_file_name_is_404(client: FlaskClient, name: str) -> None:
    assert client.get(f"/incidents/{name}").status_code == 404


def test_an_unknown_incident_is_404_and_a_down_hub_502(client: FlaskClient,
                                                       hub: FakeHub) -> None:
    assert client.get("/incidents/nothing.txt").status_code == 404
    hub.down = "connection refused"
    answer = client.get("/incidents/nothing.txt")
    assert answer.status_code == 502 and "connection refused" in answer.get_data(as_text=True)


# --- /api/status ---------------------------------------------------------------------------


def test_api_status_is_the_hubs_status_and_alerts(client: FlaskClient, hub: FakeHub) -> None:
    document = client.get("/api/status").get_json()
    assert document["status"] == hub.status and document["alerts"] == hub.alerts
    assert isinstance(document["fetched"], float)
    names = [s["name"] for s in document["status"]["services"]]
    assert names == ["redis", "prometheus", "dashboard", "ml_engine", "hub"]


def test_api_status_is_cached_half_a_second(client: FlaskClient, hub: FakeHub) -> None:
    client.get("/api/status")
    client.get("/api/status")
    assert hub.gets == ["/status", "/alerts"]


def test_snapshot_fetches_again_once_half_a_second_passed(hub: FakeHub) -> None:
    now = [100.0]
    snapshot = Snapshot(hub, clock=lambda: now[0])
    snapshot.get()
    now[0] += 0.49
    snapshot.get()
    assert hub.gets.count("/status") == 1
    now[0] += 0.02
    snapshot.get()
    assert hub.gets.count("/status") == 2


def test_an_unreachable_hub_is_a_plain_answer_not_a_500(client: FlaskClient,
                                                        hub: FakeHub) -> None:
    hub.down = "hub at http://127.0.0.1:9180 did not answer GET /status: connection refused"
    answer = client.get("/api/status")
    assert answer.status_code == 200
    document = answer.get_json()
    assert document["hub"] == "unreachable" and "connection refused" in document["error"]


def test_missing_alerts_still_show_the_status(client: FlaskClient, hub: FakeHub) -> None:
    hub.alerts = None  # type: ignore[assignment]
    document = client.get("/api/status").get_json()
    assert document["status"]["overall"] == "healthy" and "error" in document["alerts"]


def test_a_broken_hub_client_is_a_500_without_a_stack_trace(
    client: FlaskClient, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path: str) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(hub, "get", broken)
    answer = client.get("/api/status")
    text = answer.get_data(as_text=True)
    assert answer.status_code == 500 and answer.is_json
    assert "Traceback" not in text and "secret internals" not in text


# --- /api/events ------------------------------------------------------------------------------


def test_events_relay_the_hubs_stream_byte_for_byte(client: FlaskClient, hub: FakeHub) -> None:
    answer = client.get("/api/events", headers={"Last-Event-ID": "41"})
    assert answer.mimetype == "text/event-stream"
    body = answer.get_data()
    assert body.endswith(b"".join(hub.chunks))
    assert hub.streams == ["41"] and hub.stream_closed


def test_events_resume_after_the_page_newest_event(client: FlaskClient, hub: FakeHub) -> None:
    client.get("/api/events?after=12").get_data()
    client.get("/api/events?after=12", headers={"Last-Event-ID": "15"}).get_data()
    client.get("/api/events?after=x1", headers={"Last-Event-ID": "1;drop"}).get_data()
    assert hub.streams == ["12", "15", None]


def test_events_say_when_the_hub_is_unreachable(client: FlaskClient, hub: FakeHub) -> None:
    hub.down = "connection refused"
    body = client.get("/api/events").get_data(as_text=True)
    assert "event: hub\n" in body and "retry: 2000" in body
    message = json.loads(body.split("data: ", 1)[1].split("\n", 1)[0])
    assert message == {"hub": "unreachable", "error": "connection refused"}


def test_a_closed_browser_stream_closes_the_hubs(hub: FakeHub) -> None:
    counted: list[int] = []
    hub.flowing.clear()  # the hub sends its first chunk, then nothing for a while
    stream = relay(hub, None, threading.Event(), counted.append)
    assert next(stream).startswith(b":")  # sent before the hub answers
    assert next(stream) == hub.chunks[0]
    stream.close()  # what gunicorn does when a write to the browser fails
    assert counted == [1, -1] and not hub.stream_closed
    hub.flowing.set()  # the hub's next chunk (a keepalive at the latest): the reader sees
    wait_for(lambda: hub.stream_closed)  # the browser is gone and drops the hub's stream


def test_a_stopping_worker_ends_its_streams_at_once(hub: FakeHub) -> None:
    hub.flowing.clear()
    stopping = threading.Event()
    stream = relay(hub, None, stopping)
    next(stream), next(stream)
    stopping.set()
    began = time.monotonic()
    assert list(stream) == []
    assert time.monotonic() - began < 1.0
    hub.flowing.set()
    wait_for(lambda: hub.stream_closed)


@pytest.mark.parametrize(("header", "after", "expected"),
                         [("7", None, "7"), (None, "9", "9"), ("", "9", "9"), ("a", "b", None),
                          (" 8 ", None, "8"), ("1" * 30, None, None)])
def test_event_id(header: str | None, after: str | None, expected: str | None) -> None:
    assert event_id(header, after) == expected


def test_recent_events_are_the_hubs_newest(client: FlaskClient, hub: FakeHub) -> None:
    hub.events = [{"id": i, "kind": "ready"} for i in range(150)]
    events = client.get("/api/events/recent").get_json()["events"]
    assert [e["id"] for e in events] == list(range(50, 150))
    hub.down = "refused"
    assert client.get("/api/events/recent").get_json()["hub"] == "unreachable"


# --- /api/history and /api/ml ----------------------------------------------------------------


def test_history_series_shape(client: FlaskClient, prometheus: FakePrometheus) -> None:
    document = client.get("/api/history/memory?range=1h").get_json()
    assert document["metric"] == "memory" and document["range"] == "1h"
    assert document["available"] is True and document["unit"] == "ratio"
    assert document["end"] - document["start"] == 3600
    series = document["series"]
    assert series[0]["labels"] == {"service": "redis"}
    assert series[0]["points"][0][1] == 0.5 and series[0]["points"][-1][1] is None  # NaN
    promql, start, end, step = prometheus.queries[0]
    assert step == 15
    assert "unistack_memory_used_ratio" in promql and end - start == 3600


@pytest.mark.parametrize("range_name", list(hist.RANGES))
def test_every_range_has_120_to_300_points(range_name: str) -> None:
    span = hist.RANGES[range_name]
    assert 120 <= span.seconds / span.step <= 300


def test_history_queries_the_metrics_the_stack_exports(prometheus: FakePrometheus) -> None:
    for metric in hist.CHARTS:
        hist.history(prometheus, metric, "15m", 1700000000.0)
    queries = [q[0] for q in prometheus.queries]
    # The hub's per-service gauges arrive with the service in `exported_service` (the
    # scrape target's own label `service` is "hub"): taken back as alert_rules.yml does.
    taken_back = ('label_replace({}, "service", "$1", "exported_service", "(.+)")')
    assert queries == [
        f"max by (service) ({taken_back.format('unistack_cpu_used_ratio')})",
        f"max by (service) ({taken_back.format('unistack_memory_used_ratio')})",
        "ml_engine_gpu_memory_used_bytes",
        "histogram_quantile(0.99, sum by (le) "
        "(rate(ml_engine_request_duration_seconds_bucket[1m])))",
        "sum(rate(ml_engine_requests_total[1m]))", "ml_engine_stream_length",
        f"sum by (service) ({taken_back.format('unistack_service_restarts')})"]
    hist.history(prometheus, "throughput", "24h", 1700000000.0)
    assert prometheus.queries[-1][0] == "sum(rate(ml_engine_requests_total[5m]))"


def test_an_unknown_metric_is_404_naming_the_known_ones(client: FlaskClient) -> None:
    answer = client.get("/api/history/load?range=15m")
    assert answer.status_code == 404 and answer.is_json
    assert all(name in answer.get_json()["error"] for name in hist.CHARTS)


def test_a_bad_range_is_400_naming_the_allowed_ones(client: FlaskClient) -> None:
    answer = client.get("/api/history/cpu?range=7d")
    assert answer.status_code == 400
    assert all(name in answer.get_json()["error"] for name in hist.RANGES)


def test_prometheus_down_is_metrics_unavailable_not_a_500(
    client: FlaskClient, prometheus: FakePrometheus
) -> None:
    prometheus.down = "connection refused"
    answer = client.get("/api/history/cpu?range=24h")
    assert answer.status_code == 200
    assert answer.get_json()["available"] is False
    assert answer.get_json()["reason"] == "metrics unavailable: connection refused"
    ml = client.get("/api/ml").get_json()
    assert ml == {"available": False, "reason": "metrics unavailable: connection refused"}


def test_ml_figures(client: FlaskClient, prometheus: FakePrometheus) -> None:
    figures = client.get("/api/ml").get_json()
    assert figures == {"available": True, "p50_seconds": 0.25, "p99_seconds": 0.25,
                       "requests_per_second": 0.25}
    assert any("0.5" in q for q in prometheus.instant)


# --- security ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/api/status", "/static/dashboard.css", "/login",
                                  "/nowhere", "/health", "/api/history/cpu"])
def test_every_response_carries_the_security_headers(client: FlaskClient, path: str) -> None:
    answer = client.get(path)
    assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    answer.close()


def test_csp_allows_no_inline_code_and_no_other_origin() -> None:
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert "unsafe-eval" not in CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY


@pytest.mark.parametrize("path", ["/", "/api/status", "/login", "/api/events"])
def test_pages_and_api_are_never_cached(client: FlaskClient, path: str) -> None:
    answer = client.get(path)
    assert answer.headers["Cache-Control"] == "no-store"
    answer.close()
    static = client.get("/static/dashboard.js")
    assert static.headers.get("Cache-Control") != "no-store"
    static.close()


def test_not_found_is_a_short_page_and_json_under_api(client: FlaskClient) -> None:
    page = client.get("/nowhere")
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "Traceback" not in page.get_data(as_text=True)
    assert client.get("/api/nowhere").is_json


def test_a_wrong_method_is_405(client: FlaskClient) -> None:
    answer = client.get("/controls/restart/redis")
    assert answer.status_code == 405 and "POST" in answer.headers["Allow"]


def test_debug_is_off_even_with_flask_debug(
    tmp_path: Path, hub: FakeHub, prometheus: FakePrometheus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = make_app(tmp_path, hub, prometheus)
    assert app.debug is False and app.config["DEBUG"] is False
    assert app.config["PROPAGATE_EXCEPTIONS"] is False


def test_every_template_is_autoescaped(app: Flask) -> None:
    assert app.jinja_env.autoescape is True
