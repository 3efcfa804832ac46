"""diagnose.drift: supervisord.conf, the runtime files and the container files against
config.env, on copies of the checkout; the running stack stood in for by a real process
whose environment names the home."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from unistack import runtime
from unistack.config import Settings, load_settings
from unistack.diagnose import drift
from unistack.diagnose.findings import Finding

ROOT = Path(__file__).resolve().parents[2]
FILES = ("config.env", "supervisord.conf", "redis.conf", "prometheus.yml", "alert_rules.yml",
         "Dockerfile.unified", "docker-compose.unified.yml")
PASSWORD = "Hq7" * 12


def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    root.mkdir()
    for name in FILES:
        shutil.copy(ROOT / name, root / name)
    return root


def settings_of(root: Path, tmp_path: Path, **environ: str) -> Settings:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return load_settings(environ={"UNISTACK_HOME": str(home), "REDIS_PASSWORD": PASSWORD,
                                  **environ}, root=root)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} is not in {path}"
    path.write_text(text.replace(old, new, 1))


def by_id(findings: list[Finding]) -> dict[str, Finding]:
    return {f.id: f for f in findings}


def line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


# --- supervisord.conf ------------------------------------------------------------------


def test_the_repositorys_supervisord_conf_takes_everything_from_config_env(
        tmp_path: Path) -> None:
    found = drift.supervisord_conf(settings_of(checkout(tmp_path), tmp_path))
    assert [(f.id, f.status) for f in found] == [("drift.supervisord", "ok")]


def test_a_port_written_out_is_drift_naming_the_key_and_its_value(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    conf = root / "supervisord.conf"
    edit(conf, "--web.listen-address=%(ENV_UNISTACK_BIND_ADDRESS)s:%(ENV_PROMETHEUS_PORT)s",
         "--web.listen-address=%(ENV_UNISTACK_BIND_ADDRESS)s:9999")
    settings = settings_of(root, tmp_path)
    number = line_of(conf, ":9999")
    [found] = drift.supervisord_conf(settings)
    assert (found.id, found.status, found.fix) == (f"drift.supervisord:{number}", "fail",
                                                   "fix.supervisord-conf")
    assert found.evidence.startswith(f"supervisord.conf:{number} [program:prometheus]")
    assert (f"port 9999 where %(ENV_PROMETHEUS_PORT)s (config.env: "
            f"{settings.prometheus_port}) belongs") in found.evidence
    assert "replace 9999 with %(ENV_PROMETHEUS_PORT)s" in found.remedy


def test_an_environment_line_overriding_a_key_is_drift(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    conf = root / "supervisord.conf"
    edit(conf, "[program:dashboard]\n", "[program:dashboard]\nenvironment=DASHBOARD_PORT=1,"
         "PYTHONUNBUFFERED=1\n")
    [found] = drift.supervisord_conf(settings_of(root, tmp_path))
    assert found.title == "supervisord.conf overrides DASHBOARD_PORT"  # not PYTHONUNBUFFERED
    assert "set DASHBOARD_PORT in config.env" in found.remedy


def test_a_pid_file_elsewhere_and_a_log_outside_the_home_are_drift(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    conf = root / "supervisord.conf"
    edit(conf, "pidfile=%(ENV_UNISTACK_HOME)s/var/run/supervisord.pid",
         "pidfile=%(ENV_UNISTACK_HOME)s/supervisord.pid")
    edit(conf, "stdout_logfile=%(ENV_UNISTACK_HOME)s/var/log/redis.log",
         "stdout_logfile=/var/log/redis.log")
    settings = settings_of(root, tmp_path)
    found = drift.supervisord_conf(settings)
    evidence = "\n".join(f.evidence for f in found)
    assert len(found) == 2, found
    assert (f"is {settings.unistack_home}/supervisord.pid, where the stack looks for "
            f"{settings.run_dir}/supervisord.pid") in evidence
    assert f"is /var/log/redis.log, outside UNISTACK_HOME {settings.unistack_home}" in evidence


def test_a_name_supervisord_lacks_and_a_missing_program_are_drift(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    conf = root / "supervisord.conf"
    edit(conf, '%(ENV_PROMETHEUS_BIN)s"', '%(ENV_PROMETHEUS_BINARY)s"')
    edit(conf, "[program:ml_engine]", "[program:engine]")
    found = by_id(drift.supervisord_conf(settings_of(root, tmp_path)))
    unknown = found[f"drift.supervisord:{line_of(conf, 'PROMETHEUS_BINARY')}"]
    assert "'ENV_PROMETHEUS_BINARY'" in unknown.evidence
    assert found["drift.supervisord:programs"].title == \
        "supervisord.conf has no program for ml_engine"


# --- the running stack -----------------------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Settings]:
    """A process standing in for this home's supervisord: its pid file and environment."""
    settings = settings_of(ROOT, tmp_path)
    runtime.render(settings)
    env = {**os.environ, **settings.to_env()}
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    (settings.run_dir / "supervisord.pid").write_text(f"{sleeper.pid}\n")
    yield settings
    sleeper.kill()
    sleeper.wait()


def test_without_supervisord_the_runtime_files_are_not_compared(tmp_path: Path) -> None:
    settings = settings_of(ROOT, tmp_path)
    runtime.render(settings)
    (settings.run_dir / "redis.conf").write_text("edited\n")
    assert drift.running(settings) == []  # `start` renders them anew


def test_runtime_files_as_config_env_renders_them_are_no_drift(daemon: Settings) -> None:
    assert [(f.id, f.status) for f in drift.running(daemon)] == [("drift.runtime", "ok")]


def test_an_edited_runtime_file_is_drift_showing_the_lines_and_never_the_password(
        daemon: Settings) -> None:
    conf = daemon.run_dir / "redis.conf"
    edit(conf, "requirepass ", "requirepass x")  # a password not the configured one
    [hidden] = drift.running(daemon)
    assert hidden.evidence == "(differs only in a hidden line: the password)"
    edit(conf, f"port {daemon.redis_port}", "port 1")
    targets = daemon.run_dir / "prometheus" / "targets" / "services.json"
    targets.unlink()
    found = by_id(drift.running(daemon))
    redis = found["drift.runtime:var/run/redis.conf"]
    assert (redis.status, redis.fix) == ("fail", "fix.runtime-config")
    assert f"-port 1\n+port {daemon.redis_port}" in redis.evidence
    assert "requirepass" not in redis.evidence and PASSWORD not in redis.evidence
    gone = found["drift.runtime:var/run/prometheus/targets/services.json"]
    assert "No such file or directory" in gone.evidence


def test_a_configuration_changed_since_start_is_drift_and_hides_the_runtime_files(
        daemon: Settings, tmp_path: Path) -> None:
    (daemon.run_dir / "redis.conf").write_text("edited\n")
    now = settings_of(ROOT, tmp_path, DASHBOARD_PORT=str(daemon.dashboard_port + 1))
    [found] = drift.running(now)
    assert (found.id, found.status, found.fix) == ("drift.running", "warn", "fix.reload")
    assert found.evidence == (f"DASHBOARD_PORT: running with '{daemon.dashboard_port}', "
                              f"config now '{daemon.dashboard_port + 1}'")


# --- the container files ---------------------------------------------------------------


def test_a_copy_of_the_checkout_has_no_container_drift(tmp_path: Path) -> None:
    assert [f.status for f in drift.container_files(checkout(tmp_path))] == ["ok"]


def test_a_port_changed_in_the_dockerfile_alone_is_drift(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    edit(root / "Dockerfile.unified", "EXPOSE 6380 ", "EXPOSE 6390 ")
    found = by_id(drift.container_files(root))
    drifted = found["drift.container:Dockerfile.unified"]
    assert drifted.status == "fail" and "6390" in drifted.evidence and "6380" in drifted.evidence
    assert "drift.container:docker-compose.unified.yml" not in found


def test_a_checkout_without_container_files_has_nothing_to_compare(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    (root / "Dockerfile.unified").unlink()
    assert drift.container_files(root) == []


def test_the_scrape_targets_file_is_json_of_every_metrics_service(daemon: Settings) -> None:
    """What drift.runtime compares is what Prometheus reads: one target per service."""
    [(path, text)] = [(p, t) for p, t in runtime.expected(daemon) if p.name == "services.json"]
    assert json.loads(path.read_text()) == json.loads(text)


def test_a_written_out_port_is_put_back_to_its_key_and_nothing_else_changes(
        tmp_path: Path) -> None:
    root = checkout(tmp_path)
    conf = root / "supervisord.conf"
    original = conf.read_text()
    conf.chmod(0o640)
    edit(conf, "--web.listen-address=%(ENV_UNISTACK_BIND_ADDRESS)s:%(ENV_PROMETHEUS_PORT)s",
         "--web.listen-address=%(ENV_UNISTACK_BIND_ADDRESS)s:9999")
    number = line_of(conf, ":9999")
    [done] = drift.unwrite_ports(conf)
    assert done == (f"line {number}: --web.listen-address=%(ENV_UNISTACK_BIND_ADDRESS)s:9999 "
                    "-> --web.listen-address=%(ENV_UNISTACK_BIND_ADDRESS)s:"
                    "%(ENV_PROMETHEUS_PORT)s")
    assert conf.read_text() == original
    assert conf.stat().st_mode & 0o777 == 0o640
    assert drift.unwrite_ports(conf) == []  # idempotent
    [fine] = drift.supervisord_conf(settings_of(root, tmp_path))
    assert fine.status == "ok"
