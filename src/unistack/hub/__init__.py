"""The health hub: factory, reconcile loop, HTTP API and events of one stack.

Importing this package starts and loads nothing: readers of the hub (the CLI, the
dashboard) import `hub.client` and `hub.status` alone. The `hub` program's entry point
is `hub.__main__` (scripts/start_system.py)."""
