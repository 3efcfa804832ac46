"""Config drift: one port or path saying two things. supervisord.conf against config.env
(a port or path written out where a `%(ENV_…)s` belongs), the running stack against
config.env (changed since it started), the runtime files the hub rendered against what
config.env renders now, and config.env against the Dockerfile's EXPOSE and compose's
ports. Read-only."""

from __future__ import annotations

import difflib
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import yaml

from unistack import envfile, processes, runtime, stack
from unistack.config import Settings
from unistack.configkeys import KEYS_BY_NAME, PORT_KEYS
from unistack.diagnose.findings import Finding, fail, ok, warn
from unistack.foreground import expansions
from unistack.services import REGISTRY, by_name

# A port written out: after a colon, after `port`/`--port`, or as a *_PORT=N assignment.
PORT = re.compile(r"(?P<prefix>:|\bport[= ]+|_PORT=)(\d{2,5})\b", re.IGNORECASE)
_PATHS = ("file", "logfile", "pidfile", "childlogdir", "directory", "stdout_logfile",
          "stderr_logfile", "serverurl")
_HIDDEN = re.compile(r"^(requirepass|masterauth)\s.*$", re.MULTILINE)
RESTART = "scripts/manage_production.sh stop && scripts/manage_production.sh start"


def _entries(path: Path) -> Iterator[tuple[int, str, str, str]]:
    """(line number, section, key, value) of each `key=value` line, comments skipped;
    a continuation line (indented) is its own entry under the key it continues."""
    section = key = ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith((";", "#")):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            section, key = stripped[1:-1], ""
        elif line[0] in " \t" and key:
            yield number, section, key, stripped
        elif "=" in stripped:
            key, value = (part.strip() for part in stripped.split("=", 1))
            yield number, section, key, value


def supervisord_conf(settings: Settings) -> list[Finding]:
    """Every program of the registry present; no port written out; every path under
    UNISTACK_HOME, the socket and pid file where the stack looks for them; no
    `environment=` overriding a configuration key; every `%(ENV_X)s` one supervisord has."""
    path = settings.supervisord_conf
    values = expansions(settings, stack.supervisord_env(settings))
    found, sections = [], set()
    for number, section, key, value in _entries(path):
        sections.add(section)
        at = f"{path.name}:{number} [{section}] {key}={value}"
        try:
            expanded = value % values
        except (KeyError, ValueError) as exc:
            found.append(fail(f"drift.supervisord:{number}", f"{path.name} line {number} names "
                              "what supervisord does not have", f"{at}: {exc}",
                              remedy=f"use %(ENV_<KEY>)s with a key of config.env in {path}"))
            continue
        for literal in (match.group(2) for match in PORT.finditer(value)):
            port_key = _port_key(section)
            known = port_key in PORT_KEYS
            configured = f" (config.env: {settings.port(port_key)})" if known else ""
            found.append(fail(f"drift.supervisord:{number}", f"{path.name} writes out port "
                              f"{literal}", f"{at}: port {literal} where "
                              f"%(ENV_{port_key})s{configured} belongs",
                              fix="fix.supervisord-conf" if known else "",
                              remedy=f"replace {literal} with %(ENV_{port_key})s in {path}"))
        if key == "environment":
            overridden = [name for name in re.findall(r"([A-Z][A-Z0-9_]*)=", value)
                          if name in KEYS_BY_NAME]
            if overridden:
                found.append(fail(f"drift.supervisord:{number}", f"{path.name} overrides "
                                  f"{', '.join(overridden)}", f"{at}: config.env's value "
                                  "is not the one the program gets",
                                  remedy=f"set {', '.join(overridden)} in config.env, not "
                                  f"in {path}"))
        if key in _PATHS:
            found += _path(settings, at, f"[{section}] {key}", expanded, number)
    missing = [s.name for s in REGISTRY if f"program:{s.name}" not in sections]
    if missing:
        found.append(fail("drift.supervisord:programs", f"{path.name} has no program for "
                          f"{', '.join(missing)}", f"{path}: sections {sorted(sections)}",
                          remedy="restore supervisord.conf from the repository"))
    return found or [ok("drift.supervisord", f"{path.name} takes every port and path from "
                        "config.env")]


def _port_key(section: str) -> str:
    """The port key of [program:NAME]'s service ("<SERVICE>_PORT" when not a service)."""
    service = by_name().get(section.removeprefix("program:"))
    return service.port_key if service else "<SERVICE>_PORT"


def unwrite_ports(path: Path) -> list[str]:
    """PATH (a supervisord.conf) with each port written out in a service's program
    replaced by its `%(ENV_<KEY>)s`; the replacements made, as `line N: A -> B`."""
    lines, done = path.read_text().splitlines(keepends=True), []
    for number, section, _, value in list(_entries(path)):
        port_key = _port_key(section)
        if port_key not in PORT_KEYS or not PORT.search(value):
            continue
        line = lines[number - 1]
        lines[number - 1] = PORT.sub(rf"\g<prefix>%(ENV_{port_key})s", line)
        done.append(f"line {number}: {line.strip()} -> {lines[number - 1].strip()}")
    if done:
        runtime.write_atomic(path, "".join(lines), stat.S_IMODE(path.stat().st_mode))
    return done


def _path(settings: Settings, at: str, name: str, expanded: str, number: int
          ) -> list[Finding]:
    """A path supervisord writes: the socket and pid file where the stack looks for them,
    everything else under UNISTACK_HOME."""
    target = Path(expanded.removeprefix("unix://"))
    expected = {"[unix_http_server] file": settings.supervisor_socket,
                "[supervisorctl] serverurl": settings.supervisor_socket,
                "[supervisord] pidfile": settings.run_dir / "supervisord.pid"}.get(name)
    if expected is not None and target != expected:
        problem = f"is {target}, where the stack looks for {expected}"
    elif not target.is_relative_to(settings.unistack_home):
        problem = f"is {target}, outside UNISTACK_HOME {settings.unistack_home}"
    else:
        return []
    return [fail(f"drift.supervisord:{number}", f"{settings.supervisord_conf.name} puts "
                 f"{name} elsewhere", f"{at}: {problem}",
                 remedy=f"use %(ENV_UNISTACK_HOME)s/… in {settings.supervisord_conf}")]


def running(settings: Settings) -> list[Finding]:
    """The running stack against config.env now: a key changed since `start`, and the
    runtime files the hub rendered against what config.env renders (when it has not)."""
    pid = processes.supervisord_pid(settings.unistack_home)
    if not pid:
        return []  # `start` renders them anew
    started, now = processes.environ(pid), settings.to_env()
    changed = [f"{key}: running with {started[key]!r}, config now {now[key]!r}"
               for key in sorted(now) if key in started and started[key] != now[key]]
    if changed:
        return [warn("drift.running", "the configuration changed since the stack started",
                     "\n".join(changed), fix="fix.reload",
                     remedy=f"{RESTART} (a restart of the whole stack applies it)")]
    found = [_rendered(settings, path, text) for path, text in runtime.expected(settings)]
    return [f for f in found if f] or [ok("drift.runtime", "the runtime files are what "
                                          "config.env renders")]


def _rendered(settings: Settings, path: Path, expected: str) -> Finding | None:
    name = str(path.relative_to(settings.unistack_home))
    try:
        actual = path.read_text()
    except OSError as exc:
        actual, shown = "", [f"{path}: {exc.strerror}"]
    else:
        shown = [line for line in difflib.unified_diff(
            _HIDDEN.sub(r"\1 (hidden)", actual).splitlines(),
            _HIDDEN.sub(r"\1 (hidden)", expected).splitlines(), f"{name} (on disk)",
            f"{name} (config.env now)", n=0, lineterm="") if not line.startswith("@@")]
    if actual == expected:
        return None
    return fail(f"drift.runtime:{name}", f"{name} is not what config.env renders",
                "\n".join(shown[:10]) or "(differs only in a hidden line: the password)",
                fix="fix.runtime-config",
                remedy="scripts/manage_production.sh fix --only drift.runtime (re-renders "
                "it and restarts the service that reads it)")


def container_files(root: Path) -> list[Finding]:
    """config.env's ports against the Dockerfile's EXPOSE and compose's published ports
    (nothing to compare where the checkout has no container files, as in the image)."""
    dockerfile, compose_file = root / "Dockerfile.unified", root / "docker-compose.unified.yml"
    if not (dockerfile.is_file() and compose_file.is_file()):
        return []
    values = {item.key: item.value for item in envfile.read(root / "config.env")}
    ports = {int(values[key]) for key in PORT_KEYS if key in values}
    exposed = re.findall(r"^EXPOSE (.+)$", dockerfile.read_text(), re.MULTILINE)
    image = {int(p.split("/")[0]) for line in exposed for p in line.split()}
    compose = yaml.safe_load(compose_file.read_text())
    published = {int(str(entry).rsplit(":", 1)[1]) for entry in
                 compose["services"]["unistack"].get("ports", [])}
    found = []
    for name, other in (("Dockerfile.unified EXPOSE", image),
                        ("docker-compose.unified.yml ports", published)):
        if other != ports:
            found.append(fail(f"drift.container:{name.split()[0]}", f"{name} disagrees with "
                              "config.env", f"config.env {sorted(ports)}; {name} "
                              f"{sorted(other)}", remedy=f"make {name} match config.env"))
    return found or [ok("drift.container", "config.env, the Dockerfile and compose agree")]
