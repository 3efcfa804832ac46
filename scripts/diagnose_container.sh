#!/usr/bin/env bash
# Diagnose before fixing: read-only checks of this home (configuration, files, programs,
# ports, each service's health, disk, models, backups, the host), each finding with its
# evidence and the fix to run. Changes nothing. Exit 0 all ok, 1 warnings, 2 failures.
# Usage: scripts/diagnose_container.sh [--json]   (docs/diagnose.md)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$root/scripts/manage_production.sh" diagnose "$@"
