"""The checked-in supervisord.conf, redis.conf and prometheus.yml agree with the registry."""

from __future__ import annotations

import configparser
import dataclasses
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from unistack import foreground, runtime, stack
from unistack.alerts.dispatcher import dispatch_config
from unistack.alerts.router import RouterConfig
from unistack.config import Settings, load_settings
from unistack.configkeys import KEYS_BY_NAME, PROBED_SERVICES, SECRET_KEYS
from unistack.hub.reconcile import policy_config
from unistack.ml.server import engine_config
from unistack.services import REGISTRY, ServiceSpec, priorities

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = "program:"
NAMES = sorted(s.name for s in REGISTRY)


@pytest.fixture(scope="module")
def supervisord() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(interpolation=None)
    parser.read_string((ROOT / "supervisord.conf").read_text())
    return parser


def program(parser: configparser.RawConfigParser, name: str) -> configparser.SectionProxy:
    return parser[PROGRAM + name]


def is_true(value: str) -> bool:
    return value.strip().lower() in ("true", "yes", "on", "1")


def is_set_from_config(value: str, env_key: str) -> bool:
    """A positive literal, or the variable that `start` exports from config.env."""
    return value == f"%(ENV_{env_key})s" or (value.isdigit() and int(value) > 0)


def test_programs_are_exactly_the_registry(supervisord: configparser.RawConfigParser) -> None:
    programs = sorted(s[len(PROGRAM):] for s in supervisord.sections() if s.startswith(PROGRAM))
    assert programs == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_program_priority_matches_the_registry(
    supervisord: configparser.RawConfigParser, name: str
) -> None:
    assert int(program(supervisord, name)["priority"]) == priorities()[name]


@pytest.mark.parametrize("spec", REGISTRY, ids=[s.name for s in REGISTRY])
def test_only_registry_autostart_services_autostart(
    supervisord: configparser.RawConfigParser, spec: ServiceSpec
) -> None:
    # supervisord's own default is autostart=true, so a missing line counts as true.
    assert is_true(program(supervisord, spec.name).get("autostart", "true")) == spec.autostart


@pytest.mark.parametrize("name", NAMES)
def test_program_is_stopped_as_a_group(
    supervisord: configparser.RawConfigParser, name: str
) -> None:
    section = program(supervisord, name)
    assert is_true(section["stopasgroup"])
    assert is_true(section["killasgroup"])


@pytest.mark.parametrize("name", NAMES)
def test_program_logs_to_a_rotated_file_of_its_own(
    supervisord: configparser.RawConfigParser, name: str
) -> None:
    section = program(supervisord, name)
    assert section["stdout_logfile"] == f"%(ENV_UNISTACK_HOME)s/var/log/{name}.log"
    assert is_set_from_config(section["stdout_logfile_maxbytes"], "LOG_MAX_BYTES")
    assert is_set_from_config(section["stdout_logfile_backups"], "LOG_BACKUPS")


def test_control_is_a_private_unix_socket_only(supervisord: configparser.RawConfigParser) -> None:
    assert not supervisord.has_section("inet_http_server")
    assert supervisord["unix_http_server"]["chmod"] == "0700"
    assert supervisord["unix_http_server"]["file"].endswith("/var/run/supervisor.sock")


def test_every_variable_supervisord_reads_is_exported_and_none_is_secret(tmp_path: Path) -> None:
    settings = load_settings(environ={"UNISTACK_HOME": str(tmp_path)}, root=ROOT)
    exported = stack.supervisord_env(settings)
    used = set(re.findall(r"%\(ENV_([A-Z_]+)\)s", (ROOT / "supervisord.conf").read_text()))
    assert used
    assert used <= set(exported)
    assert not used & set(SECRET_KEYS)


# --- redis.conf ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_directives() -> dict[str, str]:
    directives = {}
    for line in (ROOT / "redis.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.strip().partition(" ")
            directives[name.lower()] = value.strip()
    return directives


@pytest.mark.parametrize(
    ("directive", "value"),
    [
        ("appendonly", "yes"),
        ("appendfsync", "everysec"),
        ("stop-writes-on-bgsave-error", "yes"),
        ("protected-mode", "yes"),
        ("maxmemory-policy", "noeviction"),
    ],
)
def test_redis_conf_sets(redis_directives: dict[str, str], directive: str, value: str) -> None:
    assert redis_directives.get(directive) == value


def test_redis_conf_bounds_memory(redis_directives: dict[str, str]) -> None:
    assert re.fullmatch(r"[1-9][0-9]*([kmg]b?)?", redis_directives["maxmemory"].lower())


@pytest.mark.parametrize("directive", ["requirepass", "port"])
def test_redis_conf_leaves_secrets_and_ports_to_the_runtime_file(
    redis_directives: dict[str, str], directive: str
) -> None:
    assert directive not in redis_directives


# --- prometheus.yml ----------------------------------------------------------------------


def promtool(config_file: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not on PATH (Debian package prometheus installs it)")
    return subprocess.run([binary, "check", "config", str(config_file)],
                          capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    environ = {"UNISTACK_HOME": str(tmp_path), "PROMETHEUS_PORT": "19090", "HUB_PORT": "19180",
               "REDIS_PORT": "16379"}
    return load_settings(environ=environ, root=ROOT)


def test_promtool_accepts_the_checked_in_prometheus_yml() -> None:
    done = promtool(ROOT / "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_the_rendered_config_with_its_targets(
    settings: Settings, tmp_path: Path
) -> None:
    directory = tmp_path / "prometheus"
    (directory / "targets").mkdir(parents=True)
    (directory / "prometheus.yml").write_text(runtime.prometheus_conf(settings))
    (directory / "targets" / "services.json").write_text(runtime.scrape_targets(settings))
    done = promtool(directory / "prometheus.yml")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "SUCCESS" in output
    assert "WARNING" not in output  # the targets file was found and checked


def test_scrape_targets_are_the_registry_services_with_metrics(settings: Settings) -> None:
    groups = json.loads(runtime.scrape_targets(settings))
    expected = {s.name: s for s in REGISTRY if s.metrics_path}
    assert sorted(g["labels"]["service"] for g in groups) == sorted(expected)
    for group in groups:
        spec = expected[group["labels"]["service"]]
        assert group["targets"] == [f"127.0.0.1:{spec.port(settings)}"]
        assert group["labels"]["__metrics_path__"] == spec.metrics_path
        assert group["labels"]["group"] == spec.group
    assert {"127.0.0.1:19090", "127.0.0.1:19180"} <= {g["targets"][0] for g in groups}


def test_prometheus_command_keeps_its_bind_address_and_retention_flags(
    supervisord: configparser.RawConfigParser,
) -> None:
    # A lost continuation indent would run bare `prometheus` on 0.0.0.0:9090.
    # supervisord splits the command like a shell: paths are quoted for spaces.
    command = shlex.split(supervisord.get("program:prometheus", "command"))
    assert ("--web.listen-address=%(ENV_UNISTACK_BIND_ADDRESS)s:%(ENV_PROMETHEUS_PORT)s"
            in command)
    assert any(flag.startswith("--storage.tsdb.retention.size=") for flag in command)
    assert any(flag.startswith("--config.file=") for flag in command)
    assert not any("enable-admin-api" in flag or "enable-lifecycle" in flag for flag in command)


def test_the_hub_knows_supervisords_startsecs(supervisord: configparser.RawConfigParser) -> None:
    # The hub leaves exits within startsecs to supervisord's retry; it must use the same value.
    from unistack.hub import reconcile

    for spec in REGISTRY:
        startsecs = float(supervisord.get(f"program:{spec.name}", "startsecs"))
        assert startsecs == reconcile._STARTSECS, spec.name


def test_stop_budgets_add_up_to_the_stop_timeout(
    supervisord: configparser.RawConfigParser,
) -> None:
    # stack.stop gives the whole stop STOP_TIMEOUT; supervisord's own ordered shutdown
    # (SIGTERM to it, as in docker) waits up to each program's stopwaitsecs in turn.
    total = sum(float(program(supervisord, name)["stopwaitsecs"]) for name in NAMES)
    assert total == float(KEYS_BY_NAME["STOP_TIMEOUT"].default)
    header = (ROOT / "supervisord.conf").read_text().split("[unix_http_server]")[0]
    assert f"STOP_TIMEOUT, {total:g} s" in header


@pytest.mark.parametrize("spec", [s for s in REGISTRY if not s.autostart],
                         ids=[s.name for s in REGISTRY if not s.autostart])
def test_every_service_the_hub_probes_has_probe_timing_keys(spec: ServiceSpec) -> None:
    prefix = spec.name.upper()
    assert prefix in PROBED_SERVICES
    for kind in ("LIVENESS", "READINESS"):
        for field in ("TIMEOUT", "THRESHOLD"):
            assert f"{prefix}_{kind}_{field}" in KEYS_BY_NAME
    assert f"{prefix}_READINESS_INTERVAL" in KEYS_BY_NAME


def test_the_paths_supervisord_passes_are_the_ones_settings_and_runtime_own(
        tmp_path: Path) -> None:
    """var/'s layout has one owner (Settings, runtime.state_dirs): the paths written into
    supervisord.conf's commands are checked against it, not repeated."""
    settings = load_settings(environ={"UNISTACK_HOME": str(tmp_path)}, root=ROOT)
    env = stack.supervisord_env(settings)
    prometheus = foreground.program_command(settings, "prometheus", env)
    rendered = dict(runtime.expected(settings))
    assert f"--storage.tsdb.path={settings.prometheus_data_dir}" in prometheus
    config = next(a for a in prometheus if a.startswith("--config.file="))
    assert Path(config.removeprefix("--config.file=")) in rendered
    redis = foreground.program_command(settings, "redis", env)
    assert Path(redis[-1]) in rendered and Path(redis[-1]).name == "redis.conf"
    assert f"dir {runtime.redis_quote(settings.redis_data_dir)}" in rendered[Path(redis[-1])]
    owned = set(runtime.state_dirs(settings))
    assert {settings.prometheus_data_dir, settings.redis_data_dir, settings.market_dir,
            settings.models_dir, settings.log_dir, settings.run_dir} <= owned
    assert all(path.parent in owned or path == settings.var for path in rendered)


def test_every_component_config_is_built_from_settings_alone(tmp_path: Path) -> None:
    """The policy, router, dispatcher and engine configs have no defaults of their own:
    each is built from Settings, so a value set in config.env reaches it."""
    settings = load_settings(environ={
        "UNISTACK_HOME": str(tmp_path), "RESTART_BACKOFF_INITIAL": "7", "FLAP_RESTARTS": "9",
        "ALERT_GROUP_WINDOW": "1.5", "ALERT_CHANNEL_INTERVAL": "3", "ML_MAX_WAIT_US": "77",
        "SERVICE_READY_TIMEOUT": "33"}, root=ROOT)
    policy = policy_config(settings)
    assert (policy.backoff_initial, policy.flap_restarts, policy.ready_timeout) == (7, 9, 33)
    assert RouterConfig.from_settings(settings).group_window == 1.5
    assert dispatch_config(settings).channel_interval == 3
    assert engine_config(settings, "e").max_wait_us == 77
    assert not [f.name for f in dataclasses.fields(policy)
                if f.default is not dataclasses.MISSING]
    for config in (RouterConfig.from_settings(settings), dispatch_config(settings),
                   engine_config(settings, "e")):
        assert config._field_defaults == {}, type(config).__name__
