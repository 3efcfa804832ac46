"""Pages and probes: the overview page (its figures arrive through the JSON API and the
live stream; the Backups card comes rendered with the page too), an incident file as
escaped text, and the hub's probes of the dashboard (`/health`, `/ready`) with its own
`/metrics`."""

from __future__ import annotations

import re

from flask import Blueprint, Response, abort, jsonify, render_template
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST

from unistack.dashboard import backups
from unistack.dashboard.components import components
from unistack.dashboard.history import CHARTS, RANGES
from unistack.hub.client import HubUnreachable

bp = Blueprint("views", __name__)

_INCIDENT_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


@bp.get("/")
def overview() -> ResponseReturnValue:
    parts = components()
    card = backups.card(backups.of_snapshot(parts.snapshot.get()), parts.clock())
    return render_template("overview.html", charts=CHARTS, ranges=list(RANGES), card=card,
                           missing=backups.MISSING)


@bp.get("/health")
def health() -> ResponseReturnValue:
    """Alive: this worker answers."""
    return jsonify({"alive": True})


@bp.get("/ready")
def ready() -> ResponseReturnValue:
    """Ready: it serves pages. The hub's own state is shown, not required: a dashboard
    that says "hub unreachable" is doing its job."""
    return jsonify({"ready": True})


@bp.get("/metrics")
def metrics() -> ResponseReturnValue:
    return Response(components().telemetry.render(), content_type=CONTENT_TYPE_LATEST)


@bp.get("/incidents/<name>")
def incident(name: str) -> ResponseReturnValue:
    """An incident file, from the hub, as escaped text."""
    if not _INCIDENT_NAME.match(name) or name.strip(".") == "":
        abort(404, f"no incident file {name!r}: names are letters, digits, '.', '_', '-'")
    try:
        code, text = components().hub.text(f"/incidents/{name}")
    except HubUnreachable as exc:
        abort(502, f"the hub is unreachable, so the incident file cannot be read: {exc}")
    if code == 404:
        abort(404, f"no incident file {name!r} (incident files older than INCIDENT_MAX_AGE "
                   "or beyond INCIDENT_MAX_FILES are deleted)")
    if code != 200:
        abort(502, f"the hub answered HTTP {code} for incident file {name!r}")
    return render_template("incident.html", name=name, text=text)
