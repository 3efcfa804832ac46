"""config: precedence of the four layers, refusal of every bad value, secrets in .env only."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

import pytest

from unistack import config, configkeys, credentials
from unistack.config import ConfigError, Settings, check_home_writable, load_settings
from unistack.credentials import describe_secrets, ensure_secrets
from unistack.redaction import redact

ROOT = Path(__file__).resolve().parents[2]
PORTS = "REDIS_PORT=7001\nPROMETHEUS_PORT=7002\nHUB_PORT=7003\n"
URLSAFE = re.compile(r"[A-Za-z0-9_-]+")


def write_env(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(*roots: Path) -> dict[Path, tuple[int, int, int]]:
    """Every path under ROOTS with its size, mtime and mode, to prove nothing was written."""
    seen = {}
    for root in roots:
        for path in [root, *root.rglob("*")] if root.exists() else []:
            info = path.stat()
            seen[path] = (info.st_size, info.st_mtime_ns, info.st_mode)
    return seen


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A checkout holding only a config.env with distinct ports."""
    checkout = tmp_path / "root"
    checkout.mkdir()
    (checkout / "config.env").write_text(PORTS)
    return checkout


@pytest.fixture
def home(tmp_path: Path) -> Path:
    state = tmp_path / "home"
    state.mkdir()
    return state


def load(root: Path, home: Path, **environ: str) -> Settings:
    return load_settings(environ={"UNISTACK_HOME": str(home), **environ}, root=root)


def refusal(root: Path, home: Path, **environ: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(root, home, **environ)
    return str(caught.value)


# --- precedence ------------------------------------------------------------------


def test_defaults_apply_when_no_layer_sets_a_key(root: Path, home: Path) -> None:
    settings = load(root, home)
    defaults = {key.name: key.default for key in configkeys.KEYS}
    assert settings.log_backups == int(defaults["LOG_BACKUPS"])
    assert settings.hub_loop_interval == float(defaults["HUB_LOOP_INTERVAL"])
    assert settings.unistack_mode == defaults["UNISTACK_MODE"]
    assert settings.hub_loop_interval == 1.0
    assert "PROBE_TIMEOUT" not in configkeys.KEYS_BY_NAME


def test_each_probed_service_has_its_own_probe_timings(root: Path, home: Path) -> None:
    settings = load(root, home, REDIS_READINESS_INTERVAL="0.7", REDIS_LIVENESS_TIMEOUT="0.25",
                    REDIS_LIVENESS_THRESHOLD="4", PROMETHEUS_READINESS_TIMEOUT="1.5")
    # liveness has no interval of its own: it follows a failed readiness probe
    assert settings.probe_timing("redis", "liveness") == config.ProbeTiming(0.7, 0.25, 4)
    assert settings.probe_timing("REDIS", "LIVENESS") == config.ProbeTiming(0.7, 0.25, 4)
    assert settings.probe_timing("redis", "readiness") == config.ProbeTiming(0.7, 0.4, 2)
    assert "REDIS_LIVENESS_INTERVAL" not in configkeys.KEYS_BY_NAME
    assert settings.probe_timing("prometheus", "readiness").timeout == 1.5
    assert settings.value("REDIS_LIVENESS_TIMEOUT") == 0.25
    assert settings.value("REDIS_LIVENESS_THRESHOLD") == 4
    assert settings.value("PROMETHEUS_READINESS_TIMEOUT") == 1.5
    assert settings.value("REDIS_PORT") == 7001
    assert settings.value("RESTART_BACKOFF_JITTER") == 0.2
    assert settings.to_env()["REDIS_LIVENESS_TIMEOUT"] == "0.25"
    for service in configkeys.PROBED_SERVICES:
        for kind in ("liveness", "readiness"):
            assert isinstance(settings.probe_timing(service, kind), config.ProbeTiming)


@pytest.mark.parametrize(
    ("key", "value", "parsed"),
    [
        ("RESTART_BACKOFF_JITTER", "0", 0.0),
        ("RESTART_BACKOFF_JITTER", "0.99", 0.99),
        ("CPU_WARN_PERCENT", "100", 100.0),
        ("MEMORY_WARN_PERCENT", "0.5", 0.5),
        ("FLAP_RESTARTS", "1", 1),
        ("LOOP_RESOLVE_AFTER", "0.1", 0.1),
        ("HUB_PORT", "1", 1),
        ("HUB_PORT", "65535", 65535),
        ("ALERT_GROUP_WINDOW", "0", 0.0),
        ("ALERT_GROUP_WINDOW", "2", 2.0),
        ("BACKUP_INTERVAL", "0", 0.0),
        ("BACKUP_INTERVAL", " 0 ", 0.0),
        ("BACKUP_INTERVAL", "6h", 21600.0),
        ("INCIDENT_MAX_AGE", "1.5s", 1.5),
        ("BACKUP_KEEP_HOURLY", "0", 0),
    ],
)
def test_edge_values_that_fit_are_accepted(
    root: Path, home: Path, key: str, value: str, parsed: float
) -> None:
    assert load(root, home, **{key: value}).value(key) == parsed


def test_precedence_is_defaults_then_config_env_then_dotenv_then_environ(
    root: Path, home: Path
) -> None:
    (root / "config.env").write_text(PORTS + "LOG_LEVEL=DEBUG\nLOG_FORMAT=json\n")
    write_env(home / ".env", "PROMETHEUS_PORT=7102\nHUB_PORT=7103\nLOG_FORMAT=text\n")
    settings = load(root, home, HUB_PORT="7203")
    assert settings.log_backups == 5  # default
    assert settings.redis_port == 7001  # config.env over default
    assert settings.log_level == "DEBUG"  # config.env over default
    assert settings.prometheus_port == 7102  # .env over config.env
    assert settings.log_format == "text"  # .env over config.env
    assert settings.hub_port == 7203  # environ over .env


def test_unistack_home_from_config_env_decides_which_dotenv_is_read(
    root: Path, home: Path
) -> None:
    (root / "config.env").write_text(PORTS + f"UNISTACK_HOME={home}\n")
    write_env(home / ".env", "LOG_LEVEL=ERROR\n")
    settings = load_settings(environ={}, root=root)
    assert settings.unistack_home == home.resolve()
    assert settings.log_level == "ERROR"


def test_empty_unistack_home_means_the_checkout(root: Path) -> None:
    settings = load_settings(environ={"UNISTACK_HOME": ""}, root=root)
    assert settings.unistack_home == root.resolve()
    assert settings.env_file == root.resolve() / ".env"


# --- refusals --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("REDIS_PORT", "abc", "1-65535"),
        ("HUB_PORT", "70000", "1-65535"),
        ("HUB_PORT", "0", "1-65535"),
        ("HUB_LOOP_INTERVAL", "0", "seconds > 0"),
        ("REDIS_LIVENESS_TIMEOUT", "-1", "seconds > 0"),
        ("PROMETHEUS_READINESS_INTERVAL", "nan", "seconds > 0"),
        ("REDIS_READINESS_THRESHOLD", "0", "a count > 0"),
        ("RESTART_BACKOFF_JITTER", "1", "a fraction 0 <= x < 1"),
        ("RESTART_BACKOFF_JITTER", "-0.1", "a fraction 0 <= x < 1"),
        ("CPU_WARN_PERCENT", "0", "a percentage 0 < x <= 100"),
        ("DISK_FREE_WARN_PERCENT", "100.5", "a percentage 0 < x <= 100"),
        ("FLAP_RESTARTS", "0", "a count > 0"),
        ("FLAP_RESTARTS", "1.5", "a count > 0"),
        ("SERVICE_READY_TIMEOUT", "inf", "seconds > 0"),
        ("STOP_TIMEOUT", "-inf", "seconds > 0"),
        ("UNISTACK_MODE", "swarm", "one of native, docker, kubernetes"),
        ("LOG_FORMAT", "xml", "one of text, json"),
        ("LOG_MAX_BYTES", "0", "bytes > 0"),
        ("PROMETHEUS_SCRAPE_INTERVAL", "5 seconds", "a duration like 5s"),
    ],
)
def test_bad_value_is_refused_naming_key_value_and_expectation(
    root: Path, home: Path, key: str, value: str, expected: str
) -> None:
    message = refusal(root, home, **{key: value})
    assert key in message
    assert value in message
    assert expected in message


def test_a_bad_value_in_config_env_is_refused_too(root: Path, home: Path) -> None:
    (root / "config.env").write_text(PORTS + "REDIS_PORT=abc\n")
    message = refusal(root, home)
    assert "REDIS_PORT" in message
    assert "abc" in message


def test_port_used_twice_is_refused_naming_both_keys(root: Path, home: Path) -> None:
    message = refusal(root, home, HUB_PORT="7001")
    assert "HUB_PORT" in message
    assert "REDIS_PORT" in message
    assert "7001" in message
    assert "distinct" in message


def test_secret_in_config_env_is_refused_without_echoing_it(root: Path, home: Path) -> None:
    (root / "config.env").write_text(PORTS + "REDIS_PASSWORD=hunter2-hunter2-hunter2\n")
    message = refusal(root, home)
    assert "REDIS_PASSWORD" in message
    assert "config.env" in message
    assert "hunter2" not in message


def test_group_readable_dotenv_is_refused_with_chmod_advice(root: Path, home: Path) -> None:
    env_file = write_env(home / ".env", "LOG_LEVEL=DEBUG\n", mode=0o644)
    message = refusal(root, home)
    assert str(env_file) in message
    assert "chmod 600" in message
    assert "0644" in message


def test_unistack_home_too_long_for_the_socket_path_is_refused(root: Path) -> None:
    # home + "/var/run/supervisor.sock" (24 bytes) must fit in 107 bytes.
    fits, too_long = "/tmp/" + "h" * 78, "/tmp/" + "h" * 79
    assert len(str(load(root, Path(fits)).supervisor_socket)) == 107
    message = refusal(root, Path(too_long))
    assert "UNISTACK_HOME" in message
    assert too_long in message
    assert "at most 107" in message


# --- reading never writes ----------------------------------------------------------


def test_load_settings_writes_nothing(root: Path, tmp_path: Path) -> None:
    absent = tmp_path / "not-yet"
    before = snapshot(tmp_path)
    settings = load(root, absent)
    assert snapshot(tmp_path) == before
    assert not absent.exists()
    assert settings.redis_password == ""


# --- secrets -----------------------------------------------------------------------


def dotenv_pairs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_ensure_secrets_creates_a_0600_dotenv_with_long_random_secrets(
    root: Path, home: Path
) -> None:
    old_umask = os.umask(0)
    try:
        settings = ensure_secrets(load(root, home))
    finally:
        os.umask(old_umask)
    env_file = home / ".env"
    assert mode_of(env_file) == 0o600
    written = dotenv_pairs(env_file)
    assert set(written) == set(configkeys.GENERATED_KEYS)  # Slack secrets are the operator's
    for key in configkeys.GENERATED_KEYS:
        value = getattr(settings, key.lower())
        assert written[key] == value
        assert len(value) >= 43  # token_urlsafe(32): 32 random bytes
        assert URLSAFE.fullmatch(value)
    assert len(set(written.values())) == len(written)


def test_ensure_secrets_creates_home_when_missing(root: Path, tmp_path: Path) -> None:
    home = tmp_path / "fresh" / "home"
    settings = ensure_secrets(load(root, home))
    assert mode_of(home / ".env") == 0o600
    assert load(root, home).redis_password == settings.redis_password


def test_ensure_secrets_appends_after_a_line_without_newline(root: Path, home: Path) -> None:
    original = "# mine\nLOG_LEVEL=DEBUG"
    env_file = write_env(home / ".env", original)
    settings = ensure_secrets(load(root, home))
    text = env_file.read_text()
    assert text.startswith(original + "\n")
    assert "LOG_LEVEL=DEBUG\n" in text
    reloaded = load(root, home)
    assert reloaded.log_level == "DEBUG"
    assert reloaded.redis_password == settings.redis_password
    assert reloaded.unistack_operator_token == settings.unistack_operator_token


def test_ensure_secrets_keeps_an_existing_secret(root: Path, home: Path) -> None:
    env_file = write_env(home / ".env", "REDIS_PASSWORD=chosen-by-the-operator\n")
    settings = ensure_secrets(load(root, home))
    assert settings.redis_password == "chosen-by-the-operator"
    assert len(settings.unistack_operator_token) >= 43
    assert env_file.read_text().count("REDIS_PASSWORD=") == 1


def test_ensure_secrets_a_second_time_generates_nothing(root: Path, home: Path) -> None:
    first = ensure_secrets(load(root, home))
    content = (home / ".env").read_bytes()
    assert ensure_secrets(first) == first
    again = ensure_secrets(load(root, home))
    assert (again.redis_password, again.unistack_operator_token) == (
        first.redis_password, first.unistack_operator_token)
    assert (home / ".env").read_bytes() == content


# --- redaction ---------------------------------------------------------------------


def test_redact_masks_every_secret_keeping_its_last_four_characters() -> None:
    secrets = ("a-long-redis-password-1234", "operator-token-wxyz")
    text = f"auth {secrets[0]} then {secrets[1]} and {secrets[0]} again"
    masked = redact(text, secrets)
    for secret in secrets:
        assert secret not in masked
    assert masked == "auth ****1234 then ****wxyz and ****1234 again"


def test_redact_masks_a_secret_that_contains_another() -> None:
    masked = redact("x outer-secret-inner-secret y", ("inner-secret", "outer-secret-inner-secret"))
    assert "inner-secret" not in masked
    assert "outer-secret" not in masked


def test_redact_masks_slack_webhooks_and_tokens() -> None:
    hook = "https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/cccccccccccccccccccccccc"
    tokens = ("xoxb-1234-5678-abcdefABCDEF", "xoxp-11-22-33-aabbcc")
    masked = redact(f"posting to {hook} with {tokens[0]} or {tokens[1]}.", ())
    for secret in (hook, *tokens, "cccccccc", "abcdefABCDEF"):
        assert secret not in masked
    assert masked.startswith("posting to ****")


def test_settings_redact_uses_its_own_secrets(root: Path, home: Path) -> None:
    settings = ensure_secrets(load(root, home))
    text = f"AUTH {settings.redis_password} token={settings.unistack_operator_token}"
    masked = settings.redact(text)
    assert settings.redis_password not in masked
    assert settings.unistack_operator_token not in masked
    assert "****" + settings.redis_password[-4:] in masked


def test_to_env_holds_no_secret(root: Path, home: Path) -> None:
    settings = ensure_secrets(load(root, home))
    env: Mapping[str, str] = settings.to_env()
    for key in configkeys.SECRET_KEYS:
        assert key not in env
    blob = "\n".join(f"{k}={v}" for k, v in env.items())
    for value in settings.secret_values():
        assert value not in blob
    assert env["REDIS_PORT"] == "7001"
    assert env["UNISTACK_HOME"] == str(home.resolve())


# --- the repository's own files ------------------------------------------------------


def test_real_config_env_names_every_non_secret_key() -> None:
    text = (ROOT / "config.env").read_text()
    for key in configkeys.KEYS:
        named = re.search(rf"^#?\s*{key.name}=", text, re.MULTILINE)
        assert bool(named) != key.secret, key.name


def test_real_config_env_loads(home: Path) -> None:
    settings = load_settings(environ={"UNISTACK_HOME": str(home)}, root=ROOT)
    assert settings.root == ROOT


def test_configuration_doc_mentions_every_key() -> None:
    doc = ROOT / "docs" / "configuration.md"
    assert doc.is_file(), f"{doc} is missing"
    text = doc.read_text()
    missing = [key.name for key in configkeys.KEYS if not re.search(rf"\b{key.name}\b", text)]
    assert missing == []


def test_an_unknown_key_in_a_file_names_file_line_and_the_nearest_key(
    root: Path, home: Path
) -> None:
    (home / ".env").write_text("REDIS_PASSWORD=" + "p" * 32 + "\nREDIS_PROT=1234\n")
    (home / ".env").chmod(0o600)
    said = refusal(root, home)
    assert f"{home / '.env'}:2: unknown key REDIS_PROT (did you mean REDIS_PORT?)" in said
    (root / "config.env").write_text(PORTS + "HUB_LOOP_INTERVALL=2\n")
    line = len(PORTS.splitlines()) + 1
    assert refusal(root, home).startswith(
        f"{root / 'config.env'}:{line}: unknown key HUB_LOOP_INTERVALL (did you mean "
        "HUB_LOOP_INTERVAL?)")


def test_an_unterminated_quote_is_an_error_not_a_shorter_value(root: Path, home: Path) -> None:
    (root / "config.env").write_text(PORTS + 'PROMETHEUS_RETENTION_TIME="15d\n')
    assert "never closes it" in refusal(root, home)


def test_a_lookalike_environment_variable_is_a_warning_never_an_error(
    root: Path, home: Path
) -> None:
    settings = load(root, home, REDIS_PROT="1234", UNISTACK_PYTHON="/x", PATH="/bin",
                    REDIS_PORT_FILE="")
    assert settings.warnings == (
        "environment variable REDIS_PROT is not a unistack key (did you mean REDIS_PORT?); "
        "it is ignored",)


def test_a_key_file_form_reads_the_value_from_the_file(root: Path, home: Path,
                                                        tmp_path: Path) -> None:
    secret = tmp_path / "webhook"
    secret.write_text("https://hooks.slack.com/services/T0/B0/abc\n")
    settings = load(root, home, SLACK_WEBHOOK_URL_FILE=str(secret))
    assert settings.slack_webhook_url == "https://hooks.slack.com/services/T0/B0/abc"
    assert "SLACK_WEBHOOK_URL_FILE=/nope is unreadable" in refusal(
        root, home, SLACK_WEBHOOK_URL_FILE="/nope")


def test_cross_field_checks_name_both_keys(root: Path, home: Path) -> None:
    said = refusal(root, home, RESTART_BACKOFF_INITIAL="400", RESTART_BACKOFF_MAX="300")
    assert "RESTART_BACKOFF_INITIAL=400 is above RESTART_BACKOFF_MAX=300" in said
    short = refusal(root, home, REDIS_PASSWORD="short-pass")
    assert "REDIS_PASSWORD (value hidden, 10 characters) is too short" in short
    assert "short-pass" not in short


def test_a_dotenv_owned_by_another_user_is_refused(root: Path, home: Path) -> None:
    env_file = home / ".env"
    env_file.write_text("")
    env_file.chmod(0o600)
    os.chown(env_file, 65534, 65534)
    assert f"{env_file} is owned by uid 65534, not by the user running unistack" in \
        refusal(root, home)


def test_a_home_that_is_a_file_is_one_sentence(root: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("")
    assert f"UNISTACK_HOME={plain} is not a directory" in refusal(root, plain)
    assert "cannot be quoted" in refusal(root, tmp_path / 'we"ird')


def test_lenient_loading_goes_on_with_defaults_and_lists_every_problem(
    root: Path, home: Path
) -> None:
    (root / "config.env").write_text(PORTS + "REDIS_PROT=1\nHUB_LOOP_INTERVAL=soon\n")
    settings = load_settings(environ={"UNISTACK_HOME": str(home)}, root=root, lenient=True)
    assert settings.hub_loop_interval == 1.0 and settings.unistack_home == home.resolve()
    assert len(settings.errors) == 2
    assert "unknown key REDIS_PROT" in settings.errors[0]
    assert "HUB_LOOP_INTERVAL='soon' is invalid" in settings.errors[1]


def test_each_secret_says_where_it_came_from_and_a_started_stacks_file_is_read(
        root: Path, home: Path, tmp_path: Path) -> None:
    (home / ".env").write_text("REDIS_PASSWORD=from-the-dot-env-file-0123456789\n")
    (home / ".env").chmod(0o600)
    token = tmp_path / "token"
    token.write_text("from-a-mounted-secret-file-0123456789\n")
    run = home / "var" / "run"
    run.mkdir(parents=True)
    (run / "secrets.env").write_text("SLACK_WEBHOOK_URL=https://hooks.example/from-start\n"
                                     "REDIS_PASSWORD=stale-one-that-dot-env-overrides\n")
    (run / "secrets.env").chmod(0o600)
    settings = load_settings(environ={"UNISTACK_HOME": str(home),
                                      "UNISTACK_OPERATOR_TOKEN_FILE": str(token),
                                      "HEARTBEAT_URL": "https://ping.example/abc"}, root=root)
    sources = dict(settings.secret_sources)
    assert sources == {
        "REDIS_PASSWORD": ".env",
        "UNISTACK_OPERATOR_TOKEN": f"the file {token} (UNISTACK_OPERATOR_TOKEN_FILE)",
        "HEARTBEAT_URL": "the environment",
        "SLACK_WEBHOOK_URL": "var/run/secrets.env"}
    assert settings.redis_password == "from-the-dot-env-file-0123456789"  # .env wins
    assert settings.slack_webhook_url == "https://hooks.example/from-start"
    said = describe_secrets(settings)
    assert "SLACK_BOT_TOKEN not set" in said and "HEARTBEAT_URL from the environment" in said
    assert not any(value in said for value in settings.secret_values())


def test_a_world_readable_runtime_secrets_file_is_refused(root: Path, home: Path) -> None:
    run = home / "var" / "run"
    run.mkdir(parents=True)
    (run / "secrets.env").write_text("SLACK_WEBHOOK_URL=https://hooks.example/x\n")
    (run / "secrets.env").chmod(0o644)
    with pytest.raises(ConfigError, match=r"secrets\.env is readable by group or others"):
        load_settings(environ={"UNISTACK_HOME": str(home)}, root=root)


# --- where services listen and where clients reach them -------------------------------


def test_listeners_bind_loopback_unless_in_a_container(root: Path, home: Path) -> None:
    assert load(root, home).unistack_bind_address == "127.0.0.1"
    said = refusal(root, home, UNISTACK_BIND_ADDRESS="0.0.0.0")
    assert "UNISTACK_BIND_ADDRESS=0.0.0.0 is invalid with UNISTACK_MODE=native" in said
    for mode in ("docker", "kubernetes"):
        settings = load(root, home, UNISTACK_BIND_ADDRESS="0.0.0.0", UNISTACK_MODE=mode)
        assert settings.unistack_bind_address == "0.0.0.0"
    assert load(root, home, UNISTACK_BIND_ADDRESS="127.0.0.2").unistack_bind_address \
        == "127.0.0.2"  # another loopback address is still this host only
    for bad in ("::", "localhost", "300.1.1.1", ""):
        said = refusal(root, home, UNISTACK_BIND_ADDRESS=bad, UNISTACK_MODE="docker")
        assert f"UNISTACK_BIND_ADDRESS={bad!r} is invalid: expected an IPv4 address" in said


def test_each_service_is_reached_at_its_host_key(root: Path, home: Path) -> None:
    settings = load(root, home, REDIS_HOST="unistack-redis.trading.svc.cluster.local",
                    HUB_HOST="10.0.0.7")
    assert settings.host("REDIS_PORT") == "unistack-redis.trading.svc.cluster.local"
    assert settings.hub_url == "http://10.0.0.7:7003"
    assert settings.host("DASHBOARD_PORT") == "127.0.0.1"
    for bad in ("redis host", "-redis", "redis_1", "a" * 64):
        said = refusal(root, home, REDIS_HOST=bad)
        assert f"REDIS_HOST={bad!r} is invalid: expected a host name or an IPv4 address" in said


def test_the_engine_consumer_is_the_host_name_unless_set(root: Path, home: Path) -> None:
    from unistack.ml.server import consumer_name

    assert consumer_name(load(root, home)) == f"engine-{os.uname().nodename}"
    assert consumer_name(load(root, home, ML_ENGINE_CONSUMER="gpu-3")) == "gpu-3"
    said = refusal(root, home, ML_ENGINE_CONSUMER="two words")
    assert "ML_ENGINE_CONSUMER='two words' is invalid" in said


def test_settings_read_before_another_start_generated_the_secrets_pick_them_up(
        root: Path, home: Path) -> None:
    stale = load(root, home)  # read before the first start wrote .env
    assert not stale.redis_password
    fresh = ensure_secrets(load(root, home))  # the other start generates them
    picked = credentials.refresh_generated(stale)
    assert picked.redis_password == fresh.redis_password
    assert picked.unistack_operator_token == fresh.unistack_operator_token
    again = ensure_secrets(picked)  # nothing generated twice: one line per key in .env
    assert (home / ".env").read_text().count("REDIS_PASSWORD=") == 1
    assert again.redis_password == fresh.redis_password


# --- every message whole, the edges of each rule, and what loading hands on ---------------


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("HUB_PORT", "65536", "a TCP port 1-65535"),
        ("REDIS_LIVENESS_TIMEOUT", "-1", "seconds > 0"),
        ("DASHBOARD_READINESS_THRESHOLD", "0", "a count > 0"),
        ("ML_ENGINE_READINESS_INTERVAL", "nan", "seconds > 0"),
        ("BACKUP_KEEP_DAILY", "-1", "a count >= 0"),
        ("ALERT_GROUP_WINDOW", "2.5", "seconds, 0 <= x <= 2"),
        ("INCIDENT_MAX_AGE", "0s", "a duration like 30d or 12h"),
        ("INCIDENT_MAX_AGE", "soon", "a duration like 30d or 12h"),
        ("BACKUP_INTERVAL", "0.0", "a duration like 6h or 1d, or 0 (no scheduled backups)"),
    ],
)
def test_a_refusal_is_one_sentence_naming_key_value_and_what_fits(
    root: Path, home: Path, key: str, value: str, expected: str
) -> None:
    said = refusal(root, home, **{key: value})
    assert said == f"{key}={value!r} is invalid: expected {expected}."


def test_a_bad_secret_is_refused_without_showing_it(root: Path, home: Path) -> None:
    assert refusal(root, home, SLACK_BOT_TOKEN="not-a-token") == (
        "SLACK_BOT_TOKEN (value hidden, 11 characters) is invalid: expected a bot token "
        "starting xoxb- (empty: bot mode off).")


def test_parse_duration_says_what_it_takes() -> None:
    assert configkeys.parse_duration(" 1.5h ") == 5400.0
    with pytest.raises(ValueError) as refused:
        configkeys.parse_duration("5 minutes")
    assert str(refused.value) == "expected a duration like 30m, 2h or 90s, got '5 minutes'"


def test_settings_keep_the_checkout_they_were_loaded_for(root: Path, home: Path) -> None:
    assert load(root, home).root == root


def test_to_env_writes_each_value_the_way_its_key_reads_it(root: Path, home: Path) -> None:
    settings = load(root, home, INCIDENT_MAX_AGE="1.5s", BACKUP_INTERVAL="0")
    env = settings.to_env()
    assert env["INCIDENT_MAX_AGE"] == "1.5s"
    assert env["BACKUP_INTERVAL"] == "0"
    assert env["ALERT_REMINDERS"] == "1800s,3600s,7200s,14400s"
    assert env["UNISTACK_ROOT"] == str(root)
    assert load(root, home, **env) == settings  # a child process loads the same settings
    defaults = load(root, home).to_env()
    assert (defaults["INCIDENT_MAX_AGE"], defaults["BACKUP_INTERVAL"]) == ("2592000s", "86400s")


def test_the_process_environment_is_read_when_none_is_given(
    root: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in configkeys.KEYS:
        monkeypatch.delenv(key.name, raising=False)
    monkeypatch.setenv("UNISTACK_HOME", str(home))
    monkeypatch.setenv("LOG_LEVEL", "ERROR")
    settings = load_settings(root=root)
    assert (settings.unistack_home, settings.log_level) == (home.resolve(), "ERROR")


def test_no_unistack_home_in_any_layer_means_the_checkout(root: Path) -> None:
    assert load_settings(environ={}, root=root).unistack_home == root.resolve()


def test_a_key_file_form_in_dotenv_reads_the_file(root: Path, home: Path,
                                                   tmp_path: Path) -> None:
    password = tmp_path / "redis-password"
    password.write_text("from-a-mounted-secret-0123456789\n")
    write_env(home / ".env", f"REDIS_PASSWORD_FILE={password}\n")
    assert load(root, home).redis_password == "from-a-mounted-secret-0123456789"
    write_env(home / ".env", "REDIS_PASSWORD_FILE=/nope\n")
    assert refusal(root, home) == ("REDIS_PASSWORD_FILE=/nope is unreadable: No such file or "
                                   "directory")


def test_a_misspelt_key_file_variable_is_warned_about_with_the_right_name(
    root: Path, home: Path
) -> None:
    settings = load(root, home, REDIS_PASWORD_FILE="/run/secrets/redis")
    assert settings.warnings == (
        "environment variable REDIS_PASWORD_FILE is not a unistack key (did you mean "
        "REDIS_PASSWORD_FILE?); it is ignored",)


def test_an_unreadable_dotenv_is_one_sentence(root: Path, tmp_path: Path) -> None:
    home = tmp_path / ("h" * 300)  # a name longer than the filesystem takes
    assert refusal(root, home) == f"{home / '.env'} is unreadable: File name too long"


def test_an_unknown_key_in_the_runtime_secrets_file_is_refused(root: Path, home: Path) -> None:
    run = home / "var" / "run"
    run.mkdir(parents=True)
    write_env(run / "secrets.env", "REDIS_PROT=1\n")
    assert refusal(root, home) == (
        f"{run / 'secrets.env'}:1: unknown key REDIS_PROT (did you mean REDIS_PORT?); every key "
        "is listed in docs/configuration.md")


def test_the_sources_of_secrets_skip_those_not_set(root: Path, home: Path) -> None:
    settings = load(root, home, ALPACA_API_KEY_ID="AKFZ0123456789")
    assert settings.secret_sources == (("ALPACA_API_KEY_ID", "the environment"),)


def test_secrets_in_config_env_are_all_named(root: Path, home: Path) -> None:
    (root / "config.env").write_text(PORTS + "REDIS_PASSWORD=hunter2-hunter2-hunter2\n"
                                     "SLACK_BOT_TOKEN=xoxb-1-2\n")
    assert refusal(root, home) == (
        f"REDIS_PASSWORD, SLACK_BOT_TOKEN found in {root / 'config.env'}: secrets belong in "
        f"{home / '.env'} (mode 0600), never in config.env.")


def test_cross_field_rules_allow_their_edge_and_say_what_fits(root: Path, home: Path) -> None:
    assert load(root, home, RESTART_BACKOFF_INITIAL="300", RESTART_BACKOFF_MAX="300") \
        .restart_backoff_initial == 300.0
    assert refusal(root, home, RESTART_BACKOFF_INITIAL="301", RESTART_BACKOFF_MAX="300") == (
        "RESTART_BACKOFF_INITIAL=301 is above RESTART_BACKOFF_MAX=300: expected the first "
        "delay to be at most the cap.")
    assert load(root, home, REDIS_PASSWORD="p" * 16).redis_password == "p" * 16
    assert refusal(root, home, REDIS_PASSWORD="p" * 15) == (
        "REDIS_PASSWORD (value hidden, 15 characters) is too short: expected at least 16 "
        "characters. Set a longer one where it comes from (the file REDIS_PASSWORD_FILE "
        "names, the environment), or delete its line from "
        f"{home.resolve() / '.env'} and a strong one is generated at the next start.")
    assert refusal(root, home, HUB_PORT="7001") == (
        "HUB_PORT=7001 is invalid: port 7001 is already used by REDIS_PORT; expected a "
        "distinct port for every service.")
    assert refusal(root, home, UNISTACK_BIND_ADDRESS="10.0.0.7") == (
        "UNISTACK_BIND_ADDRESS=10.0.0.7 is invalid with UNISTACK_MODE=native: expected a "
        "loopback address such as 127.0.0.1 (every listener stays on this host); other "
        "addresses are for a container's or a pod's own network namespace "
        "(UNISTACK_MODE=docker or kubernetes).")


@pytest.mark.parametrize("name", ['we"ird', "back\\slash", "new\nline"])
def test_a_home_supervisord_conf_cannot_quote_is_refused(root: Path, tmp_path: Path,
                                                         name: str) -> None:
    home = tmp_path / name
    assert refusal(root, home) == (
        f"UNISTACK_HOME={str(home)!r} is invalid: expected a path without double quotes, "
        "backslashes or newlines (they cannot be quoted in supervisord.conf).")


def test_a_home_of_any_other_letters_is_fine(root: Path, tmp_path: Path) -> None:
    home = tmp_path / "X 'q'"
    assert load(root, home).unistack_home == home.resolve()


def test_a_home_that_is_a_file_is_refused_whole(root: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("")
    assert refusal(root, plain) == (f"UNISTACK_HOME={plain} is not a directory: expected a "
                                    "directory (it is a file); choose another path.")


# --- check_home_writable: before `start` writes anything -----------------------------------


def test_a_missing_home_is_created_with_its_parents_and_an_existing_one_kept(
    root: Path, tmp_path: Path
) -> None:
    home = tmp_path / "a" / "b" / "home"
    settings = load(root, home)
    check_home_writable(settings)
    assert home.is_dir() and list(home.iterdir()) == []  # the probe file is gone
    (home / "kept").write_text("")
    check_home_writable(settings)
    assert [p.name for p in home.iterdir()] == ["kept"]


def test_a_home_below_a_file_is_unusable(root: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    home = tmp_path / "file" / "home"
    settings = load(root, home)
    with pytest.raises(ConfigError) as refused:
        check_home_writable(settings)
    assert str(refused.value) == (
        f"UNISTACK_HOME={home} is unusable: Not a directory; expected a directory this user "
        "can write (not a read-only filesystem).")


def test_a_home_nobody_may_write_is_unusable(root: Path) -> None:
    home = Path("/sys/kernel")  # sysfs: not even root creates files there
    settings = load(root, home)
    with pytest.raises(ConfigError) as refused:
        check_home_writable(settings)
    said = str(refused.value)
    assert said.startswith(f"UNISTACK_HOME={home} is unusable: ")
    assert said.endswith("; expected a directory this user can write (not a read-only "
                         "filesystem).")
