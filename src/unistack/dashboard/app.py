"""`create_app(settings)`: the Flask app of the dashboard, its collaborators injected with
production defaults (the hub API client, a Prometheus client) so tests pass fakes."""

from __future__ import annotations

from flask import Flask

from unistack.config import Settings
from unistack.dashboard import api, auth, controls, errors, security, views
from unistack.dashboard.components import EXTENSION, Components
from unistack.dashboard.ledger import Ledger
from unistack.dashboard.prometheus import PrometheusClient
from unistack.dashboard.snapshot import Snapshot
from unistack.dashboard.telemetry import Telemetry
from unistack.dashboard.upstream import Hub, Metrics
from unistack.hub.client import HubClient

LEDGER_FILE = "dashboard.sqlite"


def create_app(settings: Settings, hub: Hub | None = None,
               prometheus: Metrics | None = None) -> Flask:
    """The dashboard for SETTINGS, reading HUB and PROMETHEUS (defaults: the real ones)."""
    app = Flask(__name__)  # templates/ and static/ of this package, nothing else
    security.harden(app)
    app.secret_key = auth.secret_key(settings.unistack_operator_token)
    hub = hub if hub is not None else HubClient(settings)
    telemetry = Telemetry()
    telemetry.install(app)
    app.extensions[EXTENSION] = Components(
        settings=settings, hub=hub,
        prometheus=prometheus if prometheus is not None else PrometheusClient(settings),
        snapshot=Snapshot(hub), ledger=Ledger(settings.run_dir / LEDGER_FILE),
        telemetry=telemetry)
    for blueprint in (views.bp, api.bp, auth.bp, controls.bp):
        app.register_blueprint(blueprint)
    errors.install(app)
    return app
