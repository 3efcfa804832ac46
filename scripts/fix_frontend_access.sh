#!/usr/bin/env bash
# The dashboard unreachable: diagnose, then apply only the fixes of the dashboard's
# findings (its program, its readiness, its state); a foreign program on its port is
# named, never killed. Usage: scripts/fix_frontend_access.sh [--dry-run]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$root/scripts/manage_production.sh" fix --only dashboard "$@"
