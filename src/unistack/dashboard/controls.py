"""Control actions: restart a service, silence a service's alerts, send a test alert, back
up now.

POST only, for a signed-in operator, CSRF-checked (auth.py). The first POST answers a
confirmation page saying exactly what will happen, with a one-time nonce; the second
POST, with that nonce, does it: at most one action per service per
DASHBOARD_CONTROL_INTERVAL (else 429 with when to retry). The hub does the action with
the operator token, records the audit event (what, when, result, from where) and tells
Slack; the dashboard logs one line per action."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from flask import Blueprint, abort, render_template, request
from flask.typing import ResponseReturnValue

from unistack.configkeys import parse_duration
from unistack.dashboard import backups
from unistack.dashboard.auth import csrf_token, is_operator
from unistack.dashboard.components import components
from unistack.dashboard.errors import answer
from unistack.hub.client import HubUnreachable

log = logging.getLogger("unistack.dashboard")
bp = Blueprint("controls", __name__, url_prefix="/controls")

SILENCE_MAX = 7 * 86400.0  # the hub's own bound
_AUDIT = ("The hub records this action (what, when, its result, and that it came from "
          "the dashboard at {address}) as an audit event and tells Slack.")


class Action(NamedTuple):
    """One control action, as confirmed and as done."""

    kind: str  # restart, silence, test_alert or backup
    service: str  # its target and rate-limit key ("alerts": test alert, "backup": backup)
    seconds: float = 0.0  # a silence's length; for a backup, how long the last one took
    reason: str = ""

    def title(self) -> str:
        return {"restart": f"Restart {self.service}",
                "silence": f"Silence {self.service} for {_duration(self.seconds)}",
                "test_alert": "Send a test alert",
                "backup": "Back up now"}[self.kind]

    def consequence(self) -> str:
        if self.kind == "restart":
            return (f"The hub stops {self.service} through supervisord (SIGTERM, then "
                    "SIGKILL once its stop time is up) and starts it again as soon as its "
                    f"dependencies are ready. {self.service} serves nothing until its "
                    "readiness probe passes again; services that depend on it wait.")
        if self.kind == "silence":
            until = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(time.time()
                                                                      + self.seconds))
            return (f"No Slack messages about {self.service} until about {until} (reason: "
                    f"{self.reason}). Incidents are still recorded and shown here; the "
                    "silence is announced in Slack and ends by itself.")
        if self.kind == "backup":
            return _backup_consequence(self.seconds)
        return ("The hub puts a test message into its Slack outbox and delivers it like any "
                "alert; the Hub section then shows whether Slack accepted it.")

    def hub_request(self) -> tuple[str, dict[str, Any] | None]:
        if self.kind == "restart":
            return f"/services/{self.service}/restart", None
        if self.kind == "silence":
            return "/alerts/silences", {"service": self.service, "seconds": self.seconds,
                                        "reason": self.reason}
        if self.kind == "backup":
            return "/backups", None
        return "/alerts/test", None


def _backup_consequence(last_took: float) -> str:
    took = (f"about as long as the last one ({backups.span(last_took)})" if last_took
            else "seconds to minutes, growing with the data")
    return ("The hub runs a backup now: a Redis snapshot (BGSAVE), an archive of the Redis "
            "data, the models, the market data and config.env, its verification with a "
            "trial restore into a scratch Redis, then retention prunes old archives. "
            f"Services keep running. It takes {took}; the Backups card shows it running, "
            "then its result. If a backup is running already, the hub refuses.")


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


@bp.post("/restart/<service>")
def restart(service: str) -> ResponseReturnValue:
    return _control("restart", service, lambda: Action("restart", _known(service)))


@bp.post("/silence/<service>")
def silence(service: str) -> ResponseReturnValue:
    return _control("silence", service, lambda: _silence(_known(service, "stack")))


@bp.post("/test-alert")
def test_alert() -> ResponseReturnValue:
    return _control("test_alert", "alerts", lambda: Action("test_alert", "alerts"))


@bp.post("/backup")
def backup() -> ResponseReturnValue:
    return _control("backup", "backup", lambda: Action("backup", "backup", _last_took()))


def _control(kind: str, service: str, build: Callable[[], Action]) -> ResponseReturnValue:
    """First POST: the confirmation page; second POST (with `confirm`): the action."""
    if not is_operator():
        abort(403, "operator sign-in required: sign in at /login with the operator token. "
                   "Nothing was done.")
    nonce = request.form.get("confirm")
    if nonce is None:
        return _confirmation(build())
    action = components().ledger.redeem(nonce, csrf_token())
    if action is None or (action["kind"], action["service"]) != (kind, service):
        abort(400, "this confirmation is unknown, used already or expired: nothing was done. "
                   "Start again from the overview.")
    return _perform(Action(**action))


def _known(service: str, *extra: str) -> str:
    """SERVICE when the hub's status document (or EXTRA) names it; else 404."""
    document = components().snapshot.get()
    if "status" not in document:
        abort(502, f"the hub is unreachable ({document.get('error')}): nothing was done.")
    names = [s.get("name") for s in document["status"].get("services", [])] + list(extra)
    if service not in names:
        abort(404, f"no service {service!r}: expected one of {', '.join(map(str, names))}")
    return service


def _last_took() -> float:
    """How long the hub's last backup took (0.0: not known, the hub unreachable included:
    the confirmation does not need the hub, the action says whether it answers)."""
    return backups.last_took(backups.of_snapshot(components().snapshot.get()))


def _silence(service: str) -> Action:
    raw, reason = request.form.get("duration", ""), request.form.get("reason", "").strip()
    try:
        seconds = parse_duration(raw)
    except ValueError:
        abort(400, f"duration {raw!r} is invalid: expected a duration like 30m, 2h or 1d")
    if seconds > SILENCE_MAX:
        abort(400, f"duration {raw!r} is too long: at most 7 days")
    if not 0 < len(reason) <= 200:
        abort(400, "a reason is required: 1-200 characters saying why")
    return Action("silence", service, seconds, reason)


def _interval() -> float:
    return components().settings.dashboard_control_interval


def _confirmation(action: Action) -> ResponseReturnValue:
    left = components().ledger.wait(action.service, _interval())
    if left:
        return _too_soon(action, left)
    nonce = components().ledger.issue(csrf_token(), action._asdict())
    audit = _AUDIT.format(address=request.remote_addr)
    return render_template("confirm.html", action=action, nonce=nonce, audit=audit,
                           target=request.path)


def _too_soon(action: Action, left: float) -> ResponseReturnValue:
    retry = math.ceil(left)
    message = (f"{action.title()} refused: at most one control action per service every "
               f"{_interval():g} s, and {action.service} had one {_interval() - left:.0f} s "
               f"ago. Retry in {retry} s.")
    return answer(429, "Too Many Requests", message, [("Retry-After", str(retry))])


def _perform(action: Action) -> ResponseReturnValue:
    left = components().ledger.claim(action.service, _interval())
    if left:
        return _too_soon(action, left)
    actor = f"dashboard from {request.remote_addr}"
    path, body = action.hub_request()
    try:
        code, said = components().hub.post(path, body, actor=actor)
    except HubUnreachable as exc:
        log.warning("control %s by %s: hub unreachable: %s", action.title(), actor, exc)
        abort(502, f"the hub is unreachable ({exc}): the action may not have been done.")
    log.info("control %s by %s: hub answered HTTP %s", action.title(), actor, code)
    done = 200 <= code < 300
    status = 200 if done else code if code in (400, 404, 409) else 502
    return render_template("result.html", action=action, done=done, code=code,
                           said=_said(said)), status


def _said(answer_body: Any) -> str:
    """The hub's answer in one line: its error, or what it accepted."""
    if isinstance(answer_body, dict) and answer_body.get("error"):
        return str(answer_body["error"])
    return ", ".join(f"{k}: {v}" for k, v in answer_body.items()) \
        if isinstance(answer_body, dict) else str(answer_body)
