"""Entry point of the `hub` supervisord program (scripts/start_system.py)."""

from __future__ import annotations

import faulthandler
import signal
import sys

from unistack.config import ConfigError, load_settings
from unistack.credentials import ensure_secrets
from unistack.hub.factory import Hub
from unistack.logs import setup_logging


def main() -> int:
    """Entry point of the `hub` supervisord program (scripts/start_system.py)."""
    try:
        settings = ensure_secrets(load_settings())
    except ConfigError as exc:
        print(f"unistack hub: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings, "hub")
    # Incident capture asks our Python services for every thread's stack with SIGUSR1.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    return Hub(settings).run()


if __name__ == "__main__":
    sys.exit(main())
