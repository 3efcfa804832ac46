#!/usr/bin/env bash
# Before a deploy: required files, a valid configuration, strong secrets, no drift between
# config.env and the container files, .env 0600, hadolint, shellcheck and promtool
# passing, a recent verified backup, Slack, a GPU. Exit 0 ready, 1 warnings, 2 failures.
# Usage: scripts/verify_production_readiness.sh [--json]   (docs/diagnose.md)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$root/scripts/manage_production.sh" readiness "$@"
