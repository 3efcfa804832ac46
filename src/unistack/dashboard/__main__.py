"""Entry point of the `dashboard` supervisord program: `python -m unistack.dashboard`."""

from __future__ import annotations

import sys

from unistack.config import ConfigError, load_settings
from unistack.dashboard.app import create_app
from unistack.dashboard.server import serve
from unistack.logs import setup_logging


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"unistack dashboard: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings, "dashboard")
    serve(create_app(settings), settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
