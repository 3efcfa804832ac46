"""Checks of what runs: supervisord and each program (with a failing one's last log
lines), every port (ours listening, or a foreign holder named), processes of this home
without their supervisord, and each service's own health through the hub's probes."""

from __future__ import annotations

from typing import Any

import redis

from unistack import logs, preflight, processes
from unistack.config import Settings
from unistack.diagnose.findings import Finding, fail, ok, warn
from unistack.hub.facts import get_json
from unistack.ml.keys import DEAD_LETTERS, GROUP, STREAM
from unistack.probes import build_probe, info_fields, redis_command
from unistack.services import REGISTRY, ServiceSpec
from unistack.supervisor import ProcessInfo, SupervisorClient, SupervisorError

_TIMEOUT = 0.5
_UP = ("RUNNING", "STARTING")  # STARTING: inside startsecs; its readiness is checked below
_TAIL = 8
START = "scripts/manage_production.sh start"
_BACKLOG = 1000  # requests never delivered: more than a batch or two means it lags
_STUCK_S = 30.0  # a request taken this long ago and not answered: its consumer is stuck


def programs(settings: Settings) -> tuple[list[Finding], dict[str, ProcessInfo] | None]:
    """supervisord reachable, and every program RUNNING; (findings, its processes)."""
    try:
        found = SupervisorClient(settings.supervisor_socket, timeout=2.0).processes()
    except SupervisorError as exc:
        return [fail("supervisord.reachable", "supervisord is not running", str(exc),
                     fix="fix.start", remedy=START)], None
    findings = [ok("supervisord.reachable", "supervisord answers")]
    for spec in REGISTRY:
        info = found.get(spec.name)
        if info is None or info.state not in _UP:
            state = info.state if info else "absent"
            tail = logs.tail_lines(settings.log_dir / f"{spec.name}.log", _TAIL)
            findings.append(fail(f"program.{spec.name}", f"{spec.name} is {state}",
                                 "\n".join([f"supervisord: {state}", *tail]),
                                 fix=f"fix.restart:{spec.name}", critical=spec.critical,
                                 remedy=f"scripts/manage_production.sh restart {spec.name}"))
    return findings, found


def ports(settings: Settings, supervised: dict[str, ProcessInfo] | None) -> list[Finding]:
    """Each registry port: held by our service's process when it runs, never by another."""
    # By environ and pid files, and by supervisord's own list: Redis overwrites its environ
    # with its process title, and the hub records its pid a moment after the spawn.
    ours = {p.pid for p in processes.scan(settings.unistack_home)}
    ours |= {info.pid for info in (supervised or {}).values() if info.pid}
    found = []
    for finding in preflight.findings(settings):
        holder = finding.holder
        where = f"{settings.unistack_bind_address}:{finding.port} ({finding.key})"
        if holder is not None and holder.pid and holder.pid not in ours:
            found.append(fail(f"port.foreign:{finding.key}", f"{finding.key} is taken by "
                              "another program", f"{where}: {preflight.describe(holder)}",
                              remedy=f"stop pid {holder.pid} yourself, or move {finding.key} "
                              "in config.env (a fix never kills a foreign process)"))
        elif holder is None and supervised is not None:
            found.append(fail(f"port.closed:{finding.key}", f"nothing listens on {where}",
                              f"{where}: free", critical=False,
                              remedy="see the program's finding above"))
    return found or [ok("ports", "every port is ours")]


def orphans(settings: Settings, supervised: dict[str, ProcessInfo] | None) -> list[Finding]:
    if supervised is not None:
        return []
    left = processes.leaders(processes.scan(settings.unistack_home))
    return [fail(f"orphan.{name}", f"{name} runs without its supervisord",
                 f"pid {owned.pid}", fix="fix.orphans",
                 remedy="scripts/manage_production.sh stop (or start: it replaces them)")
            for name, owned in left.items() if name != "supervisord"]


def services(settings: Settings) -> list[Finding]:
    """Each service's own readiness, as the hub probes it, plus what it says of itself."""
    found: list[Finding] = []
    down: list[str] = []
    for spec in REGISTRY:
        if spec.autostart:
            found.append(_hub(settings))
            continue
        result = build_probe(spec.readiness, spec, settings, _TIMEOUT).check()
        if result.ok:
            found += _facts(settings, spec)
            continue
        down.append(spec.name)
        waits = [name for name in spec.depends_on if name in down]
        if waits:  # started in dependency order: its dependencies were checked first
            fix, remedy = "", f"it waits for {', '.join(waits)}: see that finding"
        elif result.restart_helps:
            fix, remedy = (f"fix.restart:{spec.name}",
                           f"scripts/manage_production.sh restart {spec.name}")
        else:
            fix, remedy = "", "read the evidence: a restart would not help"
        found.append(fail(f"service.{spec.name}", f"{spec.name} is not ready",
                          f"{spec.url(settings)}: {result.detail}", critical=spec.critical,
                          fix=fix, remedy=remedy))
    return found


def _hub(settings: Settings) -> Finding:
    try:
        health = get_json(settings.hub_host, settings.hub_port, "/health", _TIMEOUT)
    except (OSError, ValueError) as exc:
        return fail("service.hub", "the hub does not answer", f"{settings.hub_url}: {exc}",
                    fix="fix.restart:hub", remedy="scripts/manage_production.sh restart")
    return ok("service.hub", "the hub's loop is alive", f"loop age {health.get('loop_age')} s")


def _facts(settings: Settings, spec: ServiceSpec) -> list[Finding]:
    if spec.name == "redis":
        return _redis(settings)
    if spec.name == "prometheus":
        return _prometheus(settings)
    if spec.name == "ml_engine":
        return [_engine(settings)]
    return [ok(f"service.{spec.name}", f"{spec.name} is ready", spec.url(settings))]


def _engine(settings: Settings) -> Finding:
    """Ready (its heartbeat fresh, a model loaded, the canary answered): what it serves
    and on which backend, and whether it has a GPU."""
    facts: Any = get_json(settings.ml_engine_host, settings.ml_engine_port, "/facts", _TIMEOUT)
    models = ", ".join(f"{m['name']} v{m['version']} ({m['kind']} on {m['device']})"
                       for m in facts.get("models", [])) or "none"
    gpu = facts.get("gpu", {})
    return ok("service.ml_engine", "the ML engine is ready: heartbeat fresh, models loaded",
              f"models: {models}\ndevice: {facts.get('device')} ({facts.get('device_reason')})"
              f"\nGPU: {gpu.get('reason', 'not reported')}")


def _redis(settings: Settings) -> list[Finding]:
    text = redis_command(settings.redis_port, settings.redis_password, _TIMEOUT, "INFO",
                         "persistence", "memory", host=settings.redis_host)
    info = info_fields(text)
    found = []
    for field in ("rdb_last_bgsave_status", "aof_last_write_status"):
        if info.get(field, "ok") != "ok":
            found.append(fail(f"redis.{field}", f"Redis's {field} is {info.get(field)}",
                              f"INFO persistence: {field}:{info.get(field)}",
                              remedy="free disk under var/data/redis, then "
                              "scripts/manage_production.sh restart redis"))
    used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    if limit and used > 0.9 * limit:
        found.append(warn("redis.memory", "Redis is near its maxmemory",
                          f"used_memory {used >> 20} MiB of maxmemory {limit >> 20} MiB "
                          "(noeviction: writes are refused at the limit)",
                          remedy="raise REDIS_MAXMEMORY in config.env, or drain the streams"))
    return (found or [ok("service.redis", "Redis is ready and persisting",
                         f"used_memory {used >> 20} MiB")]) + _streams(settings)


def _streams(settings: Settings) -> list[Finding]:
    """The ML request stream: entries never delivered (lag), delivered and not answered
    (pending, with the oldest one's wait), and dead letters."""
    client = redis.Redis(host=settings.redis_host, port=settings.redis_port,
                         password=settings.redis_password or None, socket_timeout=_TIMEOUT,
                         socket_connect_timeout=_TIMEOUT, decode_responses=True)
    try:
        groups = {g["name"]: g for g in client.xinfo_groups(STREAM)}
        dead = client.xlen(DEAD_LETTERS)
        oldest: list[dict[str, Any]] = client.xpending_range(
            STREAM, GROUP, min="-", max="+", count=1) if groups.get(GROUP, {}).get("pending") \
            else []
    except redis.ResponseError:
        return []  # no stream yet: no request has been sent
    finally:
        client.close()
    group: dict[str, Any] = groups.get(GROUP, {})
    lag, pending = int(group.get("lag") or 0), int(group.get("pending", 0))
    waited = int(oldest[0]["time_since_delivered"]) / 1000 if oldest else 0.0
    evidence = (f"{STREAM}: group {GROUP} lag {lag}, pending {pending}"
                + (f" (oldest delivered {waited:.0f} s ago to {oldest[0]['consumer']})"
                   if oldest else "") + f"; {DEAD_LETTERS}: {dead}")
    found = []
    if lag >= _BACKLOG:
        found.append(warn("redis.stream-backlog", f"{lag} ML requests wait for the engine",
                          evidence, remedy="see service.ml_engine; more engines "
                          "(docs/deployment.md, scale-out) if it keeps up at all"))
    if waited > _STUCK_S:
        found.append(warn("redis.stream-pending", f"{pending} ML requests were taken and "
                          "not answered", evidence, remedy="the engine reclaims them when "
                          "it runs; see service.ml_engine"))
    if dead:
        found.append(warn("redis.dead-letters", f"{dead} ML requests failed for good",
                          f"{evidence}\nread them: XRANGE {DEAD_LETTERS} - + COUNT 10",
                          remedy=f"read why each failed, then XTRIM {DEAD_LETTERS} MAXLEN 0"))
    return found or [ok("redis.streams", "the ML request stream keeps up", evidence)]


def _prometheus(settings: Settings) -> list[Finding]:
    targets: Any = get_json(settings.prometheus_host, settings.prometheus_port,
                            "/api/v1/targets?state=active", _TIMEOUT)
    down = [f"{t.get('labels', {}).get('service', '?')}: {t.get('lastError', '')}"
            for t in targets.get("data", {}).get("activeTargets", []) if t.get("health") == "down"]
    if down:
        return [warn("prometheus.targets", "a Prometheus target is down", "\n".join(down),
                     remedy="see that service's finding")]
    return [ok("service.prometheus", "Prometheus is ready, every target up")]
