"""Which of our modules may import which (docs/architecture.md, "Import direction"), read
from the source (every import, lazy ones inside functions too), and what importing a
reader of the hub really loads."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "unistack"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module PATH imports (absolute names; ours and others')."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def ours(path: Path) -> set[str]:
    """The modules of ours PATH imports (a name imported from a package counts as the
    package unless it is a module of its own)."""
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in imports_of(path) if name in modules} - {"unistack"}


def modules_under(prefix: str) -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if module_name(p) == prefix or module_name(p).startswith(prefix + "."))


def test_the_leaves_import_nothing_of_ours() -> None:
    for leaf in ("event", "envfile", "configkeys", "redaction"):
        assert ours(PACKAGE / f"{leaf}.py") == set(), leaf


def test_config_imports_only_its_leaves() -> None:
    # envfile parses config.env and .env, configkeys holds the keys and their parsers,
    # redaction masks secrets: three leaves.
    assert ours(PACKAGE / "config.py") == {"unistack.envfile", "unistack.configkeys",
                                           "unistack.redaction"}


def test_credentials_imports_only_config_and_its_leaves() -> None:
    assert ours(PACKAGE / "credentials.py") <= {"unistack.config", "unistack.configkeys",
                                                "unistack.envfile"}


def test_policy_stays_pure() -> None:
    imported = imports_of(PACKAGE / "policy.py")
    assert ours(PACKAGE / "policy.py") <= {"unistack.event"}
    assert not imported & {"os", "socket", "subprocess", "threading", "time", "psutil"}


def test_services_imports_only_config() -> None:
    assert ours(PACKAGE / "services.py") <= {"unistack.config"}


@pytest.mark.parametrize("path", modules_under("unistack.ml"), ids=module_name)
def test_the_ml_engine_never_imports_the_hub_or_the_alerts(path: Path) -> None:
    assert not {m for m in ours(path) if m.startswith(("unistack.hub", "unistack.alerts"))}


ALLOWED_IN_DASHBOARD = {"unistack.config", "unistack.configkeys", "unistack.event",
                        "unistack.hub.status", "unistack.hub.client", "unistack.logs"}


@pytest.mark.parametrize("path", modules_under("unistack.dashboard"), ids=module_name)
def test_the_dashboard_imports_only_what_a_reader_of_the_hub_needs(path: Path) -> None:
    foreign = {m for m in ours(path) if not m.startswith("unistack.dashboard")}
    assert foreign <= ALLOWED_IN_DASHBOARD


def test_a_reader_of_the_hub_loads_neither_the_hub_nor_the_alerts() -> None:
    probe = ("import json, sys, unistack.hub.client, unistack.hub.status, unistack.event; "
             "print(json.dumps(sorted(sys.modules)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True,
                                       text=True, check=True).stdout)
    ours_loaded = [m for m in loaded if m.startswith("unistack")]
    assert not [m for m in ours_loaded if m.startswith(("unistack.alerts", "unistack.ml"))]
    assert "unistack.hub.factory" not in loaded and "slack_sdk" not in loaded
    assert set(ours_loaded) <= {"unistack", "unistack.config", "unistack.configkeys",
                                "unistack.envfile", "unistack.redaction", "unistack.event",
                                "unistack.hub", "unistack.hub.client", "unistack.hub.status"}


ALLOWED_IN_BACKUP = {"unistack.config", "unistack.configkeys", "unistack.lock",
                     "unistack.runtime", "unistack.services", "unistack.supervisor",
                     "unistack.hub.client"}


@pytest.mark.parametrize("path", modules_under("unistack.backup"), ids=module_name)
def test_backups_import_only_configuration_locks_and_the_hub_client(path: Path) -> None:
    foreign = {m for m in ours(path) if not m.startswith("unistack.backup")}
    assert foreign <= ALLOWED_IN_BACKUP
