"""The collaborators of one dashboard app, built once by `create_app` and reached by
every view through `components()`: no module-level state, so tests build apps with
fakes side by side."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, current_app

from unistack.config import Settings
from unistack.dashboard.ledger import Ledger
from unistack.dashboard.snapshot import Snapshot
from unistack.dashboard.telemetry import Telemetry
from unistack.dashboard.upstream import Hub, Metrics

EXTENSION = "unistack"


@dataclass
class Components:
    settings: Settings
    hub: Hub
    prometheus: Metrics
    snapshot: Snapshot
    ledger: Ledger
    telemetry: Telemetry
    clock: Callable[[], float] = field(default=time.time)
    # Set when this (worker) process is asked to stop: live streams end at once.
    stopping: threading.Event = field(default_factory=threading.Event)


def components(app: Flask | None = None) -> Components:
    """APP's collaborators (default: the current app, inside a request or app context)."""
    found: Components = (app or current_app).extensions[EXTENSION]
    return found
