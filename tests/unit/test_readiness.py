"""diagnose.readiness: required files, the Compose schema and weak secrets, on copies of
the checkout."""

from __future__ import annotations

import shutil
from pathlib import Path

from unistack.config import load_settings
from unistack.diagnose import readiness

ROOT = Path(__file__).resolve().parents[2]


def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    root.mkdir()
    for name in readiness.REQUIRED:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, root / name)
    return root


def test_a_copy_of_the_checkout_has_every_file(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    assert readiness.required_files(root).status == "ok"
    (root / "alert_rules.yml").unlink()
    missing = readiness.required_files(root)
    assert missing.status == "fail" and missing.evidence == "alert_rules.yml"


def test_the_compose_file_is_checked_against_the_compose_schema(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    assert readiness.compose_schema(root).status == "ok"
    compose = root / "docker-compose.unified.yml"
    compose.write_text(compose.read_text().replace("    stop_grace_period:",
                                                   "    stop_grace_periods:", 1))
    broken = readiness.compose_schema(root)
    assert broken.status == "fail", compose.read_text()
    assert "stop_grace_periods" in broken.evidence and "services/unistack" in broken.evidence


def test_weak_or_missing_secrets_fail_without_showing_them(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = home / ".env"
    env.write_text("REDIS_PASSWORD=changeme12345678\n")
    env.chmod(0o600)
    settings = load_settings(environ={"UNISTACK_HOME": str(home)}, root=ROOT)
    found = {f.id: f for f in readiness.secrets(settings)}
    weak = found["ready.secret:REDIS_PASSWORD"]
    assert weak.status == "fail" and "changeme" not in weak.evidence + weak.title
    assert found["ready.secret:UNISTACK_OPERATOR_TOKEN"].title.endswith("is not set")
    env.write_text(f"REDIS_PASSWORD={'x7Kq' * 11}\nUNISTACK_OPERATOR_TOKEN={'Zp3w' * 11}\n")
    settings = load_settings(environ={"UNISTACK_HOME": str(home)}, root=ROOT)
    assert [f.status for f in readiness.secrets(settings)] == ["ok"]
