"""The dashboard: live status, history charts, alerts and authenticated control actions,
a Flask app served by gunicorn. It reads the hub API and Prometheus, nothing else.
`create_app` is in `app`; the program (`python -m unistack.dashboard`) in `__main__`."""

from unistack.dashboard.app import create_app

__all__ = ["create_app"]
