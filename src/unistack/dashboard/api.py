"""The JSON API the page reads (and anyone may): `/api/status` (the hub's status and
alerts, cached 0.5 s), `/api/events` (the hub's live stream relayed as server-sent
events), `/api/events/recent`, `/api/history/<metric>` and `/api/ml` (Prometheus).
Neither the hub nor Prometheus being down is an error here: each answer says so."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, jsonify, request
from flask.typing import ResponseReturnValue

from unistack.dashboard.components import components
from unistack.dashboard.history import BadRange, UnknownMetric, history, ml_figures
from unistack.dashboard.relay import event_id, relay
from unistack.hub.client import HubUnreachable

bp = Blueprint("api", __name__, url_prefix="/api")

RECENT_EVENTS = 100


@bp.get("/status")
def status() -> ResponseReturnValue:
    return Response(components().snapshot.encoded(), mimetype="application/json")


@bp.get("/events")
def events() -> ResponseReturnValue:
    parts = components()
    after = event_id(request.headers.get("Last-Event-ID"), request.args.get("after"))
    stream = relay(parts.hub, after, parts.stopping, parts.telemetry.stream_opened)
    return Response(stream, content_type="text/event-stream; charset=utf-8",
                    headers={"X-Accel-Buffering": "no"})


@bp.get("/events/recent")
def recent_events() -> ResponseReturnValue:
    """The hub's newest events (oldest first), for the list before the stream takes over."""
    try:
        code, document = components().hub.get("/events")
    except HubUnreachable as exc:
        return jsonify({"hub": "unreachable", "error": str(exc), "events": []})
    found: list[Any] = document.get("events", []) if isinstance(document, dict) else []
    if code != 200:
        return jsonify({"hub": "error", "error": f"hub answered HTTP {code}", "events": []})
    return jsonify({"events": found[-RECENT_EVENTS:]})


@bp.get("/history/<metric>")
def chart_history(metric: str) -> ResponseReturnValue:
    parts = components()
    try:
        document = history(parts.prometheus, metric, request.args.get("range", "15m"),
                           parts.clock())
    except UnknownMetric as exc:
        abort(404, str(exc))
    except BadRange as exc:
        abort(400, str(exc))
    return jsonify(document)


@bp.get("/ml")
def ml() -> ResponseReturnValue:
    """The ML engine's p50 / p99 latency and requests/s over the last minute."""
    return jsonify(ml_figures(components().prometheus))
