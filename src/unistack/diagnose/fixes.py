"""Fixes, each bound to the findings it repairs, idempotent, applied in dependency order:
the filesystem, then the configuration, then the network, then the services. `fix`
diagnoses, plans, applies (or only shows the plan with --dry-run), diagnoses again and
reports what changed and what remains. A fix never kills a process that is not this
home's."""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from unistack import processes, runtime, stack
from unistack.config import ConfigError, Settings
from unistack.diagnose import drift
from unistack.diagnose.findings import OK, Finding
from unistack.hub.facts import get_json
from unistack.lock import Busy
from unistack.ml.registry import ModelError
from unistack.preflight import PreflightError
from unistack.services import REGISTRY
from unistack.supervisor import SupervisorError

Report = Callable[[str], None]

# The order fixes run in: the filesystem, then the configuration, then the network, then
# the services (a service cannot start on a directory it may not write).
ORDER = ("fix.env-permissions", "fix.directories", "fix.permissions", "fix.stale-files",
         "fix.orphans", "fix.supervisord-conf", "fix.runtime-config", "fix.hosts",
         "fix.start", "fix.reload", "fix.restart")
# A runtime file, and the service that reads it only when it starts (Prometheus reloads
# its targets file by itself).
READERS = {"var/run/redis.conf": "redis", "var/run/prometheus/prometheus.yml": "prometheus"}
HOSTS = Path("/etc/hosts")
_SCRAPED_WITHIN = 20.0
_STARTING = (stack.StackError, ConfigError, PreflightError, SupervisorError, ModelError, Busy,
             OSError)


class Step(NamedTuple):
    fix: str  # e.g. "fix.restart:redis"
    findings: tuple[str, ...]  # the ids it repairs

    def rank(self) -> int:
        return ORDER.index(self.fix.split(":")[0])


def plan(findings: list[Finding]) -> list[Step]:
    """One step per fix that some open finding names, in ORDER; no restart of a service
    that a re-rendered file or a restart of the whole stack restarts anyway, nor a futile
    one (the findings that make it futile say what to do)."""
    wanted: dict[str, list[str]] = {}
    for finding in findings:
        if finding.status != OK and finding.fix and finding.fix.split(":")[0] in ORDER:
            wanted.setdefault(finding.fix, []).append(finding.id)
    skipped = {f"fix.restart:{READERS[i.partition(':')[2]]}"
               for i in wanted.get("fix.runtime-config", []) if i.partition(":")[2] in READERS}
    if "fix.reload" in wanted:
        skipped |= {fix for fix in wanted if fix.startswith("fix.restart")}
    # Futile: a restart of a service whose port another program holds, or whose
    # dependency is down for a reason a restart cannot fix (a full disk, say).
    taken = {f.id.partition(":")[2] for f in findings if f.id.startswith("port.foreign:")}
    stuck = {f.id.partition(".")[2] for f in findings if f.status != OK and not f.fix
             and f.id.startswith("service.")}
    skipped |= {f"fix.restart:{s.name}" for s in REGISTRY
                if s.port_key in taken or stuck & set(s.depends_on)}
    wanted = {fix: ids for fix, ids in wanted.items() if fix not in skipped}
    return sorted((Step(fix, tuple(ids)) for fix, ids in wanted.items()), key=Step.rank)


def apply(step: Step, settings: Settings, report: Report) -> str:
    """Do STEP; what was done, in a sentence. REPORT shows a long step's progress."""
    kind, _, target = step.fix.partition(":")
    return _FIXES[kind](settings, step, report, target)


def _env_permissions(settings: Settings, *_: object) -> str:
    os.chmod(settings.env_file, 0o600)
    return f"{settings.env_file}: mode 0600"


def _directories(settings: Settings, *_: object) -> str:
    """Create each missing state directory with its mode."""
    created = []
    for path, mode in runtime.state_dirs(settings).items():
        if not path.exists():
            path.mkdir(mode=mode, parents=True)
            os.chmod(path, mode)  # not narrowed by the umask
            created.append(str(path.relative_to(settings.unistack_home)))
    return f"created {', '.join(created)}" if created else "no directory was missing"


def _permissions(settings: Settings, *_: object) -> str:
    """Give each state directory its mode, and this user's ownership."""
    done, refused = [], []
    for path, mode in runtime.state_dirs(settings).items():
        try:
            info = path.stat()
            if info.st_uid != os.geteuid():
                os.chown(path, os.geteuid(), os.getegid())
            if stat.S_IMODE(info.st_mode) != mode or info.st_uid != os.geteuid():
                os.chmod(path, mode)
                done.append(f"{path.relative_to(settings.unistack_home)} {mode:04o}")
        except FileNotFoundError:
            continue
        except PermissionError as exc:
            refused.append(f"{path}: {exc.strerror} (as its owner or root: chown "
                           f"{os.geteuid()} {path} && chmod {mode:o} {path})")
    said = f"set {', '.join(done)}" if done else "every mode was right"
    return said + (f"; not allowed: {'; '.join(refused)}" if refused else "")


def _orphans(settings: Settings, *_: object) -> str:
    left = processes.end_orphans(settings.unistack_home, settings.stop_timeout,
                                 lambda line: None)
    return "orphans stopped" if not left else f"still running: {[p.pid for p in left]}"


def _supervisord_conf(settings: Settings, *_: object) -> str:
    """Each port written out in supervisord.conf back to its `%(ENV_<KEY>)s`."""
    done = drift.unwrite_ports(settings.supervisord_conf)
    if not done:
        return "no port is written out"
    running = " (a running stack reads it at its next start: scripts/manage_production.sh " \
        "stop && scripts/manage_production.sh start)" \
        if processes.supervisord_pid(settings.unistack_home) else ""
    return f"{settings.supervisord_conf}: {'; '.join(done)}{running}"


def _rerender(settings: Settings, step: Step, report: Report, *_: object) -> str:
    """Write the runtime files as config.env renders them; restart what reads one only at
    its start."""
    runtime.render(settings)
    done = ["runtime files re-rendered"]
    for finding in step.findings:
        service = READERS.get(finding.partition(":")[2])
        if service:
            done.append(_restart(settings, service, report))
        elif finding.endswith("/targets/services.json"):
            done.append(_scraped(settings, report))
    return "; ".join(done)


def _scraped(settings: Settings, report: Report) -> str:
    """Until Prometheus scrapes every target of the re-rendered file, and each is up (it
    reads the file within 5 s, then scrapes at its interval)."""
    expected = {f"{settings.host(s.port_key)}:{s.port(settings)}" for s in REGISTRY
                if s.metrics_path}
    report("waiting for Prometheus to scrape the targets ...")
    deadline = time.monotonic() + _SCRAPED_WITHIN
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            targets = get_json(settings.prometheus_host, settings.prometheus_port,
                               "/api/v1/targets?state=active", 1.0)["data"]["activeTargets"]
            if {urlsplit(t["scrapeUrl"]).netloc for t in targets} == expected and all(
                    t["health"] == "up" for t in targets):
                return "Prometheus scrapes every target"
        time.sleep(0.25)
    return f"Prometheus does not scrape every target up within {_SCRAPED_WITHIN:g} s"


def add_localhost(hosts: Path) -> str:
    """`127.0.0.1 localhost` added to HOSTS (only root may write /etc/hosts)."""
    line = "127.0.0.1\tlocalhost\n"
    if not os.access(hosts, os.W_OK):
        return (f"{hosts} is not writable by uid {os.geteuid()}: as root, "
                f"echo '127.0.0.1 localhost' >> {hosts}")
    text = hosts.read_text()
    with hosts.open("a") as file:
        file.write(("" if not text or text.endswith("\n") else "\n") + line)
    return f"{hosts}: added 127.0.0.1 localhost"


def _start(settings: Settings, report: Report, again: bool = False) -> str:
    """Start the stack (stopped first when AGAIN: a changed configuration applies only at
    a start); what failed, in its own words, when it cannot."""
    if settings.errors:
        return "not started: the configuration does not load (config.invalid above)"
    try:
        if again:
            stack.stop(settings, report)
        stack.start(settings, report)
    except _STARTING as exc:
        return f"{'restart' if again else 'start'} failed: {settings.redact(str(exc))}"
    return "the stack was restarted with the configuration now" if again else \
        "the stack was started; every service is ready"


def _stale(settings: Settings, *_: object) -> str:
    """The pid file and the socket of a supervisord that is gone (never a live one's)."""
    if processes.supervisord_pid(settings.unistack_home):
        return "supervisord is running: nothing is stale"
    removed = []
    for path in (settings.run_dir / "supervisord.pid", settings.supervisor_socket):
        if path.exists():
            path.unlink()
            removed.append(str(path))
    return f"removed {', '.join(removed)}" if removed else "nothing stale left"


def _restart(settings: Settings, service: str, report: Report) -> str:
    """Restart SERVICE through the hub (the owner of restarts) and wait until it is ready
    again, so that the diagnosis after the fixes sees it."""
    try:
        stack.restart_service(settings, service, report)
    except _STARTING as exc:
        return f"restart of {service} failed: {settings.redact(str(exc))}"
    return f"{service} restarted and ready"


_FIXES: dict[str, Callable[[Settings, Step, Report, str], str]] = {
    "fix.env-permissions": _env_permissions,
    "fix.directories": _directories,
    "fix.permissions": _permissions,
    "fix.stale-files": _stale,
    "fix.orphans": _orphans,
    "fix.supervisord-conf": _supervisord_conf,
    "fix.runtime-config": _rerender,
    "fix.hosts": lambda settings, step, report, target: add_localhost(HOSTS),
    "fix.start": lambda settings, step, report, target: _start(settings, report),
    "fix.reload": lambda settings, step, report, target: _start(settings, report, again=True),
    "fix.restart": lambda settings, step, report, target: _restart(settings, target, report),
}
