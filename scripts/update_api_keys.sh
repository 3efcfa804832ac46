#!/usr/bin/env bash
# Show each trading API key masked (its last 4 characters) and replace it, one at a
# time: each answer is written at once, atomically, the previous .env kept as .env.bak
# (0600). Enter keeps a key. Values are read without echo (or one line each from stdin).
# Usage: scripts/update_api_keys.sh [KEY ...] [--force]   (docs/keys.md)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$root/scripts/manage_production.sh" keys update "$@"
