"""The operator's command line: `python -m unistack COMMAND` (scripts/manage_production.sh).

Thin: parses arguments, calls the stack, prints, and maps domain errors to exit codes:
0 ok, 1 the stack failed or is degraded, 2 bad configuration or arguments (or down),
3 busy: another start, stop or restart of this UNISTACK_HOME holds the control lock and
`--no-wait` was given (without it the command waits, and says for whom).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from unistack import foreground, logs, stack
from unistack.backup import commands as backup_commands
from unistack.config import ConfigError, Settings, load_settings
from unistack.configkeys import KEYS, parse_duration
from unistack.diagnose import report as diagnose_report
from unistack.hub.client import HubClient, HubUnreachable
from unistack.hub.status import DOWN, EXIT_CODES, HEALTHY
from unistack.keys import commands as keys_commands
from unistack.lock import Busy
from unistack.ml import capability
from unistack.ml.registry import ModelError, ModelRegistry
from unistack.preflight import PreflightError
from unistack.services import REGISTRY
from unistack.supervisor import SupervisorError

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_BUSY = 3  # the control lock is held and --no-wait was given


def _print(text: str) -> None:
    print(text, flush=True)


def _urls(settings: Settings) -> None:
    for spec in REGISTRY:
        _print(f"  {spec.name:<12} {spec.url(settings)}")


def _busy(command: Callable[[Settings, argparse.Namespace], int]
          ) -> Callable[[Settings, argparse.Namespace], int]:
    """COMMAND takes the control lock: Busy (with --no-wait) is exit code 3."""
    def guarded(settings: Settings, args: argparse.Namespace) -> int:
        try:
            return command(settings, args)
        except Busy as exc:
            print(f"unistack {args.command}: {exc}", file=sys.stderr)
            return EXIT_BUSY
    return guarded


@_busy
def cmd_start(settings: Settings, args: argparse.Namespace) -> int:
    if args.foreground:
        foreground.start(settings, _print)  # execs supervisord: never returns
    settings = stack.start(settings, _print, wait=not args.no_wait)
    _print("unistack is ready:")
    _urls(settings)
    return 0


@_busy
def cmd_stop(settings: Settings, args: argparse.Namespace) -> int:
    begun = time.monotonic()
    if not stack.stop(settings, _print, wait=not args.no_wait):
        _print(f"unistack is not running (UNISTACK_HOME={settings.unistack_home}); "
               "no process of it found.")
        return 0
    _print(f"unistack stopped in {time.monotonic() - begun:.2f} s; no process left.")
    return 0


@_busy
def cmd_restart(settings: Settings, args: argparse.Namespace) -> int:
    if args.service:
        stack.restart_service(settings, args.service, _print, wait=not args.no_wait)
        return 0
    stack.stop(settings, _print, wait=not args.no_wait)
    return cmd_start(settings, args)


def _age(since: float, now: float) -> str:
    if not since:
        return "-"
    seconds = int(now - since)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _status_table(document: dict[str, Any]) -> str:
    rows = [f"{'SERVICE':<12} {'STATE':<10} {'READY':<6} {'PID':<8} {'SINCE':<9} "
            f"{'RESTARTS':<9} DETAIL"]
    incidents = []
    for s in document["services"]:
        rows.append(f"{s['name']:<12} {s['state']:<10} {'yes' if s['ready'] else 'no':<6} "
                    f"{s['pid'] or '-'!s:<8} {_age(s['since'], document['ts']):<9} "
                    f"{s.get('restarts', 0)!s:<9} {s['detail']}")
        if s.get("last_incident"):
            open_now = f" (open: {s['incident']})" if s.get("incident") else ""
            incidents.append(f"  {s['name']}: {s['last_incident']}{open_now}")
    rows.append(f"overall: {document['overall']}")
    hold = document.get("maintenance") or {}
    if hold.get("services"):
        rows.append(f"maintenance: {', '.join(hold['services'])} held since "
                    f"{_age(hold['since'], document['ts'])} ({hold['reason']}, pid {hold['pid']})"
                    "; the hub neither restarts nor alerts about them")
    rows += [f"warning: {warning}" for warning in document.get("warnings", [])]
    if incidents:
        rows += ["last incidents:", *incidents]
    return "\n".join(rows)


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    document = stack.status(settings)
    _print(json.dumps(document, indent=2) if args.json else _status_table(document))
    return EXIT_CODES[document["overall"]]


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    foreground.run(settings, args.service, _print)  # execs the program: never returns


def cmd_health(settings: Settings, args: argparse.Namespace) -> int:
    """The hub's liveness and the same verdict as `status` (one status document, so the
    two commands never disagree); a hub that is not alive makes the stack down."""
    if args.ready:
        return _ready(settings)
    document = stack.status(settings)
    try:
        health_code, health = HubClient(settings).get("/health")
        hub = "alive" if health_code == 200 else f"stale (loop age {health.get('loop_age')} s)"
    except HubUnreachable as exc:
        health_code, health, hub = 0, {"error": str(exc)}, f"down ({exc})"
    verdict = document["overall"] if health_code == 200 else DOWN
    lagging = [f"{s['name']} {s['state']}: {s['detail']}"
               for s in document["services"] if not s["ready"]]
    if args.json:
        _print(json.dumps({**health, "alive": health_code == 200, "overall": verdict,
                           "ready": verdict == HEALTHY, "not_ready": lagging}))
    else:
        _print(f"hub: {hub}; stack: {verdict}"
               + "".join(f"\n  {line}" for line in lagging))
    return EXIT_CODES[verdict]


def _ready(settings: Settings) -> int:
    """The container's HEALTHCHECK: 0 when the hub's /ready answers 200 (every critical
    service ready), else 1 with the reason in one line."""
    try:
        code, document = HubClient(settings).get("/ready")
    except HubUnreachable as exc:
        _print(f"not ready: {exc}")
        return 1
    _print("ready" if code == 200 else f"not ready: {json.dumps(document)[:300]}")
    return 0 if code == 200 else 1


def cmd_logs(settings: Settings, args: argparse.Namespace) -> int:
    files = logs.log_files(settings)
    if args.service:
        if args.service not in files:
            known = ", ".join(sorted(files)) or "none yet"
            raise stack.StackError(f"no log for {args.service!r} in {settings.log_dir} "
                                   f"(logs there: {known})")
        files = {args.service: files[args.service]}
    prefix = len(files) > 1
    for line in logs.recent(files, args.lines):
        _print(f"[{line.service}] {line.text}" if prefix else line.text)
    if args.follow:
        for line in logs.follow(files):
            _print(f"[{line.service}] {line.text}" if prefix else line.text)
    return 0


def cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    written = settings.to_env()  # each value the way its key is written in config.env
    values = {key.name: ("(set)" if settings.value(key.name) else "(not set)")
              if key.secret else written[key.name] for key in KEYS}
    if args.json:
        _print(json.dumps(values, indent=2))
    else:
        for name, value in values.items():
            _print(f"{name}={value}")
    return 0


def cmd_ml(settings: Settings, args: argparse.Namespace) -> int:
    return ML_COMMANDS[args.ml_command](settings, args)


def cmd_ml_doctor(settings: Settings, args: argparse.Namespace) -> int:
    caps = capability.probe_capabilities()
    choices = capability.choose_all(caps, require_gpu=settings.ml_require_gpu == "1")
    _print(capability.as_json(caps, choices) if args.json else capability.render(caps, choices))
    return 0 if choices["xgboost"].device else EXIT_FAILED


def cmd_ml_models(settings: Settings, args: argparse.Namespace) -> int:
    models = ModelRegistry(settings.models_dir)
    rows = [
        {"name": v.name, "version": v.version, "backend": v.metadata["backend"],
         "features": len(v.feature_names), "created": v.metadata.get("created"),
         "metrics": v.metadata.get("metrics", {}), "path": str(v.directory),
         "check": models.check(v)}
        for name in models.names() for v in models.versions(name)
    ]
    if args.json:
        _print(json.dumps(rows, indent=2))
    elif not rows:
        _print(f"no models in {settings.models_dir}; train one with `unistack ml train`")
    for row in [] if args.json else rows:
        metrics = " ".join(f"{k}={v:.4g}" for k, v in row["metrics"].items())
        state = "ok" if row["check"] == "ok" else "CORRUPT"
        _print(f"{row['name']:<16} v{row['version']:<4} {state:<8} {row['backend']:<8} "
               f"{row['features']:>3} features  {metrics}")
        if row["check"] != "ok":
            _print(f"  {row['check']}")
    return 0 if all(row["check"] == "ok" for row in rows) else EXIT_FAILED


def cmd_ml_train(settings: Settings, args: argparse.Namespace) -> int:
    # numpy and xgboost load only here: the rest of the CLI works without the ml extra.
    from unistack.ml import market, training  # noqa: PLC0415 -- see above

    if args.csv:
        bars, source = market.load_csv(args.csv), str(args.csv)
    else:
        bars, source = market.synthetic_bars(args.synthetic, seed=args.seed), (
            f"synthetic random walk, {args.synthetic} bars, seed {args.seed}")
    _print(f"training {args.name!r} on {len(bars.close)} bars ({source}), "
           f"{args.rounds} rounds ...")
    version = training.train_and_register(ModelRegistry(settings.models_dir), args.name, bars,
                                          source, rounds=args.rounds, seed=args.seed)
    metrics = version.metadata["metrics"]
    _print(f"registered {version.name} v{version.version} in {version.directory}: holdout "
           f"AUC {metrics['holdout_auc']:.3f}, accuracy {metrics['holdout_accuracy']:.3f}")
    return 0


def cmd_ml_predict(settings: Settings, args: argparse.Namespace) -> int:
    from unistack.ml.client import MLClient, PredictionError  # noqa: PLC0415 -- numpy

    try:
        rows = json.loads(args.rows)
    except ValueError as exc:
        raise stack.StackError(f"--rows is not JSON ({exc}): expected [[number, ...], ...]") \
            from None
    try:
        predictions = MLClient(settings).predict(rows, model=args.model, timeout=args.timeout,
                                                 version=args.version)
    except PredictionError as exc:
        raise stack.StackError(str(exc)) from None
    _print(json.dumps({"model": args.model, "predictions": predictions.tolist()}))
    return 0


def _hub(settings: Settings, method: str, path: str, body: Any = None) -> Any:
    """The hub's answer to one API call; a refusal or no answer is a StackError."""
    client = HubClient(settings, timeout=5.0)
    try:
        code, document = client.post(path, body) if method == "POST" else client.get(path)
    except HubUnreachable as exc:
        raise stack.StackError(f"{exc}; is the stack running? (`status`)") from None
    if code >= 400:
        raise stack.StackError(f"the hub refused {method} {path}: {document.get('error')}")
    return document


def _incident_lines(document: dict[str, Any], now: float) -> list[str]:
    lines = [f"Slack: {document['slack']}"]
    lines += ["Open incidents:"] + [
        f"  {i['severity']:<8} {i['title']}  (since {_age(i['since'], now)}"
        f"{', with ' + ', '.join(i['members']) if i['members'] else ''})"
        for i in document["incidents"]] if document["incidents"] else ["Open incidents: none"]
    lines += [f"Silenced: {s['service']} for {int(s['until'] - now)} s more ({s['reason']})"
              for s in document["silences"]]
    counts = document["outbox"]["counts"]
    lines.append(f"Outbox: {counts['pending']} pending, {counts.get('sent_total', 0)} sent, "
                 f"{counts.get('failed_total', 0)} failed, "
                 f"{counts.get('dropped_total', 0)} dropped")
    lines += [f"  {m['state']:<8} {m['channel']:<10} tries {m['attempts']}  {m['text'][:80]}"
              f"{'  (' + m['error'] + ')' if m['error'] else ''}"
              for m in document["outbox"]["pending"]]
    return lines


def cmd_alerts(settings: Settings, args: argparse.Namespace) -> int:
    document = _hub(settings, "GET", "/alerts")
    _print(json.dumps(document, indent=2) if args.json
           else "\n".join(_incident_lines(document, time.time())))
    return 0


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_silence(settings: Settings, args: argparse.Namespace) -> int:
    if args.end:
        answer = _hub(settings, "POST", f"/alerts/silences/{args.service}/end")
        if not answer["ended"]:
            raise stack.StackError(f"{args.service} is not silenced: nothing to end "
                                   "(`alerts` lists the silences)")
        _print(f"silence of {args.service} ended")
        return 0
    if args.duration is None or not args.reason:
        raise stack.StackError("expected a DURATION and --reason, e.g. "
                               f"`silence {args.service} 30m --reason 'planned upgrade'`")
    answer = _hub(settings, "POST", "/alerts/silences",
                  {"service": args.service, "seconds": args.duration, "reason": args.reason})
    until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(answer["until"]))
    _print(f"{args.service} silenced until {until} ({answer['reason']})")
    return 0


def cmd_alert_test(settings: Settings, args: argparse.Namespace) -> int:
    answer = _hub(settings, "POST", "/alerts/test")
    if answer["slack"] == "off":
        raise stack.StackError("Slack is off: set SLACK_WEBHOOK_URL or SLACK_BOT_TOKEN in "
                               f"{settings.env_file} and restart the hub")
    deadline = time.monotonic() + args.timeout
    message: dict[str, Any] = {}
    while time.monotonic() < deadline:
        message = _hub(settings, "GET", f"/alerts/message?key={quote(answer['key'])}")
        if message["state"] != "pending":
            break
        time.sleep(0.1)
    if message.get("state") == "sent":
        _print(f"Slack accepted the test message ({answer['slack']} mode).")
        return 0
    why = message.get("error") or f"still waiting after {args.timeout:g} s"
    raise stack.StackError(f"Slack did not accept the test message: {why}")


ML_COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "doctor": cmd_ml_doctor, "models": cmd_ml_models, "train": cmd_ml_train,
    "predict": cmd_ml_predict,
}


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number of lines, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return value


def _add_ml_parsers(commands: Any) -> None:
    ml = commands.add_parser("ml", help="the ML engine: capability report, models")
    ml_commands = ml.add_subparsers(dest="ml_command", required=True, metavar="ML_COMMAND")
    doctor = ml_commands.add_parser(
        "doctor", help="GPU libraries and devices, and which backend each model kind gets")
    doctor.add_argument("--json", action="store_true", help="print JSON")
    models = ml_commands.add_parser("models", help="every registered model version")
    models.add_argument("--json", action="store_true", help="print JSON")
    train = ml_commands.add_parser(
        "train", help="train an XGBoost model from OHLCV bars and register a new version")
    source = train.add_mutually_exclusive_group()
    source.add_argument("--csv", type=Path, help="OHLCV CSV (timestamp,open,high,low,close,"
                        "volume), e.g. from var/data/market/")
    source.add_argument("--synthetic", type=_positive, default=20000, metavar="N",
                        help="a generated random walk of N bars (default 20000)")
    train.add_argument("--name", default="default", help="model name (default: default)")
    train.add_argument("--rounds", type=_positive, default=200, help="boosting rounds (200)")
    train.add_argument("--seed", type=int, default=0, help="random seed (0)")
    predict = ml_commands.add_parser("predict", help="send rows to the running engine")
    predict.add_argument("--model", default="default", help="model name (default: default)")
    predict.add_argument("--version", type=_positive, help="a pinned version (default: newest)")
    predict.add_argument("--rows", required=True,
                         help='feature rows as JSON, e.g. "[[0.1, 0.2, ...]]"')
    predict.add_argument("--timeout", type=_seconds, default=2.0, help="seconds to wait (2)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unistack", description="Run and inspect the unistack service stack.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = [spec.name for spec in REGISTRY]
    start = commands.add_parser(
        "start", help="bootstrap if needed, start every service, wait until ready")
    stop = commands.add_parser("stop", help="stop every service in reverse dependency order")
    restart = commands.add_parser("restart", help="restart one service, or the whole stack")
    for locking in (start, stop, restart):
        locking.add_argument("--no-wait", action="store_true", help="exit 3 (busy) at once "
                             "if another start/stop/restart of this home is running")
    start.add_argument("--foreground", action="store_true", help="a container's main "
                       "process: prepare, then become supervisord in the foreground (it "
                       "stops every service in order on SIGTERM); never waits for readiness")
    run = commands.add_parser(
        "run", help="one service in the foreground, a pod's main process "
        "(UNISTACK_MODE=kubernetes); its command from supervisord.conf")
    run.add_argument("service", choices=names, help="the service this process becomes")
    restart.add_argument("service", nargs="?", choices=names, help="service to restart")
    status = commands.add_parser(
        "status", help="one line per service; exit 0 healthy, 1 degraded, 2 down")
    status.add_argument("--json", action="store_true", help="print the status document as JSON")
    health = commands.add_parser("health", help="is the hub alive and the stack ready")
    health.add_argument("--json", action="store_true", help="print JSON")
    health.add_argument("--ready", action="store_true", help="only: does the hub's /ready "
                        "answer 200 (exit 0) or not (exit 1); the container's HEALTHCHECK")
    log = commands.add_parser("logs", help="recent log lines, all services interleaved by time")
    log.add_argument("service", nargs="?", help="only this service's log (e.g. redis)")
    log.add_argument("-n", "--lines", type=_positive, default=50, help="lines to show (50)")
    log.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    config = commands.add_parser("config", help="the effective configuration (secrets hidden)")
    config.add_argument("--json", action="store_true", help="print JSON")
    alerts = commands.add_parser("alerts", help="open incidents, silences and the Slack outbox")
    alerts.add_argument("--json", action="store_true", help="print JSON")
    silence = commands.add_parser("silence", help="no Slack messages about SERVICE for a while "
                                  "(announced, ends by itself)")
    silence.add_argument("service", choices=[*names, "stack"], help="the service to silence")
    silence.add_argument("duration", nargs="?", type=_duration, help="e.g. 30m, 2h, 90s")
    silence.add_argument("--reason", help="why (shown in Slack and in `alerts`)")
    silence.add_argument("--end", action="store_true", help="end the silence now")
    test = commands.add_parser("alert-test", help="send a test message; say whether Slack "
                               "accepted it")
    test.add_argument("--timeout", type=_seconds, default=15.0, help="seconds to wait (15)")
    _add_ml_parsers(commands)
    backup_commands.add_parsers(commands)
    diagnose_report.add_parser(commands)
    keys_commands.add_parser(commands)
    return parser


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "start": cmd_start, "stop": cmd_stop, "restart": cmd_restart, "status": cmd_status,
    "run": cmd_run,
    "health": cmd_health, "logs": cmd_logs, "config": cmd_config, "ml": cmd_ml,
    "alerts": cmd_alerts, "silence": cmd_silence, "alert-test": cmd_alert_test,
    **backup_commands.HANDLERS,
    "diagnose": diagnose_report.cmd_diagnose, "fix": diagnose_report.cmd_fix,
    "readiness": diagnose_report.cmd_ready, "keys": keys_commands.cmd_keys,
}


# Commands that must reach a stack whose configuration broke after it started: they
# run on defaults for the bad values, after saying what is wrong.
LENIENT = frozenset({"stop", "status", "logs", "diagnose", "fix", "readiness"})


def _settings(command: str) -> Settings:
    """The settings for COMMAND; ConfigError when it cannot run on them."""
    settings = load_settings(lenient=command in LENIENT)
    for warning in settings.warnings:
        print(f"unistack: warning: {warning}", file=sys.stderr)
    for error in settings.errors:
        print(f"unistack: configuration error (going on with the default): {error}",
              file=sys.stderr)
    return settings


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--docker"]:  # the unified container, driven from the host
        from unistack import container  # noqa: PLC0415 (the docker SDK only when asked)

        return container.main(argv[1:], _status_table)
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args.command)
    except ConfigError as exc:
        print(f"unistack: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return _run(settings, args)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    """ARGS' command, its failures as one line on stderr and an exit code."""
    try:
        return COMMANDS[args.command](settings, args)
    except (PreflightError, ConfigError) as exc:  # the environment is wrong: exit 2
        print(f"unistack {args.command}: {settings.redact(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    except (stack.StackError, SupervisorError, ModelError, ValueError) as exc:
        print(f"unistack {args.command}: {settings.redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `... | head` stopped reading: no traceback, and none at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
