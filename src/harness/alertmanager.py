"""The Alertmanager baseline of the alert benchmark: plain supervisord running the project's
redis program, a redis exporter, Prometheus (scrape and evaluation 1 s, rule `redis_up ==
0`, `for: 0s`) and Alertmanager (`group_wait: 0s`) posting to the Slack stand-in."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from harness.debian import program, version
from harness.fetch import http_get, http_json
from harness.ports import free_ports
from harness.redisping import answering_pid
from harness.runs import BenchmarkError, progress
from harness.slack import SlackStandIn
from harness.stacks import stack_environment
from harness.supervisord import baseline_settings, conf_text, run_supervisord
from harness.waiting import wait_for
from unistack.configkeys import LOOPBACK

START_LIMIT = 120.0  # each part of the baseline started and ready by then
WAIT = 0.01  # seconds between two checks while waiting for the baseline
BASELINE_WARMUP = 6.0  # seconds after Prometheus has 5 samples of redis_up, as the reference
EXPORTER_TIMEOUT = 0.25  # the exporter's PING deadline: a SIGSTOPped redis never answers
AM_WEBHOOK = "/webhook/T000/B000/alertmanager"  # Alertmanager's path at the stand-in
RULE = "RedisDown"


class PythonExporter:
    """`redis_up 0/1` on /metrics: one PING (AUTH first) per scrape, EXPORTER_TIMEOUT
    deadline. Used only when Debian has no prometheus-redis-exporter."""

    def __init__(self, port: int, redis_port: int, password: str) -> None:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                up = 1 if answering_pid(exporter.redis_port, exporter.password) else 0
                body = f"# TYPE redis_up gauge\nredis_up {up}\n".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.redis_port, self.password = redis_port, password
        self.server = ThreadingHTTPServer((LOOPBACK, port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


PROMETHEUS_YML = """\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
  # scrape_timeout: 10s by default, capped at scrape_interval: 1s
rule_files:
  - {rules}
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['{loopback}:{alertmanager}']
scrape_configs:
  - job_name: redis
    static_configs:
      - targets: ['{loopback}:{exporter}']
"""

RULES_YML = """\
groups:
  - name: bench
    rules:
      - alert: {rule}
        expr: redis_up == 0
        for: 0s
        labels:
          severity: critical
        annotations:
          summary: "redis on {loopback}:{redis} does not answer PING"
"""

ALERTMANAGER_YML = """\
route:
  receiver: slack
  group_by: ['alertname']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: slack
    slack_configs:
      - api_url: '{url}'
        channel: '#alerts'
        send_resolved: true
"""

PROGRAM = {"autostart": "true", "autorestart": "true", "startsecs": "1",
           "startretries": "1000", "stopsignal": "TERM", "stopwaitsecs": "2",
           "stopasgroup": "true", "killasgroup": "true", "redirect_stderr": "true"}


@dataclass
class Baseline:
    """supervisord running redis (the project's program), the exporter, Prometheus and
    Alertmanager, all on loopback ports, in HOME/baseline."""

    home: Path
    directory: Path
    redis_port: int
    password: str
    exporter_port: int
    prometheus_port: int
    alertmanager_port: int
    exporter: str  # what serves redis_up
    python_exporter: PythonExporter | None = None

    @property
    def prometheus(self) -> str:
        return f"http://{LOOPBACK}:{self.prometheus_port}"

    @property
    def alertmanager(self) -> str:
        return f"http://{LOOPBACK}:{self.alertmanager_port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        document = http_json(url, timeout=5.0) or {}
        return list(document.get("data", {}).get("result", []))

    def active(self) -> bool:
        """An alert is pending or firing in Prometheus, or active in Alertmanager."""
        rules = http_json(f"{self.prometheus}/api/v1/alerts") or {}
        managed = http_json(f"{self.alertmanager}/api/v2/alerts?active=true")
        return bool(rules.get("data", {}).get("alerts")) or managed is None or bool(managed)

    def first_sample(self, series: str, value: float, wall: float) -> float | None:
        """Seconds from WALL to the first sample of SERIES equal to VALUE (TSDB time)."""
        seconds = int(time.time() - wall) + 5
        found = [float(ts) - wall for result in self.query(f"{series}[{seconds}s]")
                 for ts, v in result.get("values", [])
                 if float(v) == value and float(ts) >= wall - 0.001]
        return min(found) if found else None

    def stop(self) -> None:
        if self.python_exporter:
            self.python_exporter.stop()


def baseline_conf_text(source: Path, directory: Path, programs: dict[str, dict[str, str]],
                       ) -> str:
    """SOURCE (harness.supervisord's baseline conf) with only its redis
    program, plus PROGRAMS."""
    conf = configparser.RawConfigParser()
    conf.read(source)
    for section in conf.sections():
        if section.startswith("program:") and section != "program:redis":
            conf.remove_section(section)
    for name, options in programs.items():
        conf[f"program:{name}"] = PROGRAM | options | {
            "stdout_logfile": str(directory / f"{name}.log")}
    return conf_text(conf)


def baseline_programs() -> dict[str, str | None]:
    """The baseline's programs: Debian's Alertmanager (installed when missing), Prometheus,
    and Debian's redis exporter where apt has one (None: PythonExporter serves redis_up);
    BenchmarkError when the baseline cannot run."""
    alertmanager, reason = program("prometheus-alertmanager", "prometheus-alertmanager")
    if not alertmanager:
        raise BenchmarkError(f"Alertmanager baseline n/a: {reason}")
    exporter, why = program("prometheus-redis-exporter", "prometheus-redis-exporter",
                            optional=True)
    if not exporter:
        progress(f"  no prometheus-redis-exporter ({why}): the Python exporter serves redis_up")
    prometheus = shutil.which("prometheus")
    if not prometheus:
        raise BenchmarkError("prometheus is not installed (scripts/bootstrap.sh installs it)")
    return {"alertmanager": alertmanager, "exporter": exporter, "prometheus": prometheus}


def start_baseline(home: Path, slack: SlackStandIn, binaries: dict[str, str | None],
                   ) -> Baseline:
    directory = home / "baseline"
    settings, source = baseline_settings(stack_environment(home), directory)
    exporter_port, prometheus_port, alertmanager_port = free_ports(3)
    url = f"http://{LOOPBACK}:{slack.port}{AM_WEBHOOK}"
    rules, prom, am = directory / "rules.yml", directory / "prometheus.yml", \
        directory / "alertmanager.yml"
    rules.write_text(RULES_YML.format(rule=RULE, loopback=LOOPBACK, redis=settings.redis_port))
    prom.write_text(PROMETHEUS_YML.format(rules=rules, loopback=LOOPBACK,
                                          alertmanager=alertmanager_port,
                                          exporter=exporter_port))
    am.write_text(ALERTMANAGER_YML.format(url=url))
    check_configs(binaries, prom, am)
    cwd = {"directory": str(home)}  # every process of the baseline is found by its cwd
    programs = {
        "prometheus": cwd | {"command": f"{binaries['prometheus']} --config.file={prom} "
                             f"--storage.tsdb.path={directory / 'tsdb'} "
                             f"--web.listen-address={LOOPBACK}:{prometheus_port}"},
        "alertmanager": cwd | {"command": f"{binaries['alertmanager']} --config.file={am} "
                               f"--storage.path={directory / 'am'} "
                               f"--web.listen-address={LOOPBACK}:{alertmanager_port} "
                               "--cluster.listen-address="}}
    python_exporter = None
    if binaries["exporter"]:
        exporter = "prometheus-redis-exporter " + version(binaries["exporter"])
        programs["redis_exporter"] = cwd | {
            "command": f"{binaries['exporter']} "
                       f"-redis.addr=redis://{LOOPBACK}:{settings.redis_port} "
                       f"-web.listen-address={LOOPBACK}:{exporter_port} "
                       f"-connection-timeout={int(EXPORTER_TIMEOUT * 1000)}ms",
            # The password reaches it through its environment, never its command line.
            "environment": f'REDIS_PASSWORD="{settings.redis_password}"'}
    else:
        exporter = "the benchmark's Python exporter"
        python_exporter = PythonExporter(exporter_port, settings.redis_port,
                                         settings.redis_password)
    conf = directory / "supervisord.conf"
    conf.write_text(baseline_conf_text(source, directory, programs))
    conf.chmod(0o600)
    run_supervisord(settings, conf, START_LIMIT)
    base = Baseline(home, directory, settings.redis_port, settings.redis_password,
                    exporter_port, prometheus_port, alertmanager_port, exporter,
                    python_exporter)
    wait_baseline_ready(base)
    return base


def check_configs(binaries: dict[str, str | None], prom: Path, am: Path) -> None:
    for tool, args in (("promtool", ["check", "config", str(prom)]),
                       ("amtool", ["check-config", str(am)])):
        binary = shutil.which(tool)
        if binary:
            done = subprocess.run([binary, *args], capture_output=True, text=True,
                                  timeout=60, check=False)
            if done.returncode != 0:
                raise BenchmarkError(f"{tool} rejected the config: "
                                     f"{(done.stderr or done.stdout).strip()}")


def _ready(url: str) -> bool:
    return http_get(f"{url}/-/ready")[0] == 200


def wait_baseline_ready(base: Baseline) -> None:
    """Redis answers; Prometheus and Alertmanager are ready; Prometheus has scraped
    redis_up 1 five times and evaluated its rule; then BASELINE_WARMUP more."""
    wait_for(lambda: answering_pid(base.redis_port, base.password), START_LIMIT, WAIT,
             "baseline redis answering")
    for url in (base.prometheus, base.alertmanager):
        wait_for(partial(_ready, url), START_LIMIT, WAIT, f"{url}/-/ready")

    def scraped() -> bool:
        counts = base.query("count_over_time(redis_up[10s])")
        return bool(counts) and float(counts[0]["value"][1]) >= 5

    wait_for(scraped, START_LIMIT, WAIT, "five scrapes of redis_up")

    def evaluated() -> bool:
        rules = http_json(f"{base.prometheus}/api/v1/rules") or {}
        groups = rules.get("data", {}).get("groups", [])
        return any(r.get("lastEvaluation", "").startswith("2") and
                   not r["lastEvaluation"].startswith("0001")
                   for g in groups for r in g.get("rules", []))

    wait_for(evaluated, START_LIMIT, WAIT, f"an evaluation of {RULE}")
    time.sleep(BASELINE_WARMUP)
