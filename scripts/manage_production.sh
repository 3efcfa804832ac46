#!/usr/bin/env bash
# The operator's one entry point: `scripts/manage_production.sh COMMAND [ARGS]`.
# Thin by design: makes sure the virtualenv exists (scripts/bootstrap.sh, idempotent)
# and hands every command to `python -m unistack`. Run with --help for the commands.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh" --quiet --extras ml
exec "$root/.venv/bin/python" -m unistack "$@"
