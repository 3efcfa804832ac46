"""runtime: the files under var/ that a stack needs, private where they hold secrets."""

from __future__ import annotations

import shlex
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from unistack import runtime
from unistack.config import Settings, load_settings
from unistack.credentials import ensure_secrets

ROOT = Path(__file__).resolve().parents[2]


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def home() -> Iterator[Path]:
    # Short, like a real UNISTACK_HOME: the supervisord socket path must fit in 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="us-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def stack_settings(home: Path, **environ: str) -> Settings:
    loaded = load_settings(environ={"UNISTACK_HOME": str(home), "REDIS_PORT": "16380", **environ},
                           root=ROOT)
    return ensure_secrets(loaded)


@pytest.fixture
def settings(home: Path) -> Settings:
    return stack_settings(home)


def test_render_creates_every_state_dir_with_its_mode(settings: Settings) -> None:
    runtime.render(settings)
    assert mode_of(settings.run_dir) == 0o700
    for path, mode in runtime.state_dirs(settings).items():
        assert path.is_dir(), path
        assert mode_of(path) == mode, path


def test_render_writes_a_private_redis_conf_with_port_bind_and_password(
    settings: Settings,
) -> None:
    runtime.render(settings)
    conf = settings.run_dir / "redis.conf"
    assert mode_of(conf) == 0o600
    lines = conf.read_text().splitlines()
    assert f'include "{ROOT / "redis.conf"}"' in lines
    assert "bind 127.0.0.1" in lines
    assert "port 16380" in lines
    assert f'requirepass "{settings.redis_password}"' in lines
    assert f'dir "{settings.data_dir / "redis"}"' in lines


def test_render_writes_prometheus_config_and_targets(settings: Settings) -> None:
    runtime.render(settings)
    prometheus = settings.run_dir / "prometheus"
    assert (prometheus / "prometheus.yml").read_text() == runtime.prometheus_conf(settings)
    targets = prometheus / "targets" / "services.json"
    assert targets.read_text() == runtime.scrape_targets(settings)
    for path in (prometheus / "prometheus.yml", targets):
        assert mode_of(path) == 0o600


def test_no_rendered_file_but_redis_conf_holds_a_secret(settings: Settings) -> None:
    runtime.render(settings)
    holders = {path.relative_to(settings.var).as_posix()
               for path in settings.var.rglob("*") if path.is_file()
               for secret in settings.secret_values() if secret in path.read_text()}
    assert holders == {"run/redis.conf"}


def test_render_again_repairs_modes_and_changes_nothing_else(settings: Settings) -> None:
    runtime.render(settings)
    before = {p: p.read_bytes() for p in settings.run_dir.rglob("*") if p.is_file()}
    settings.run_dir.chmod(0o755)
    runtime.render(settings)
    assert mode_of(settings.run_dir) == 0o700
    assert {p: p.read_bytes() for p in settings.run_dir.rglob("*") if p.is_file()} == before


def test_prometheus_conf_uses_the_configured_interval(home: Path) -> None:
    settings = stack_settings(home, PROMETHEUS_SCRAPE_INTERVAL="17s")
    config = yaml.safe_load(runtime.prometheus_conf(settings))
    assert config["global"]["scrape_interval"] == "17s"
    assert config["global"]["evaluation_interval"] == "17s"
    template = yaml.safe_load((ROOT / "prometheus.yml").read_text())
    assert config["scrape_configs"] == template["scrape_configs"]


def test_redis_conf_survives_a_home_with_a_space(home: Path) -> None:
    settings = stack_settings(home / "my stack")
    for line in runtime.redis_conf(settings).splitlines():
        if not line.startswith("#"):
            assert len(shlex.split(line)) == 2, line


# --- write_atomic ------------------------------------------------------------------------


def test_write_atomic_sets_mode_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "file.conf"
    runtime.write_atomic(target, "first\n", mode=0o640)
    assert target.read_text() == "first\n"
    assert mode_of(target) == 0o640
    runtime.write_atomic(target, "second\n")
    assert target.read_text() == "second\n"
    assert mode_of(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["file.conf"]


def test_write_atomic_failure_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "file.conf"
    runtime.write_atomic(target, "old\n")
    with pytest.raises(TypeError):
        runtime.write_atomic(target, b"not text")  # type: ignore[arg-type]
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["file.conf"]
