#!/usr/bin/env bash
# Diagnose, then apply every fix the findings name, in dependency order (filesystem,
# processes, services), then diagnose again and report what changed and what remains.
# Idempotent; never kills a process that is not this home's.
# Usage: scripts/fix_all_container_issues.sh [--dry-run]   (docs/diagnose.md)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$root/scripts/manage_production.sh" fix "$@"
