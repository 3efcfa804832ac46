#!/usr/bin/env bash
# Create UNISTACK_HOME/.env (0600) with the generated internal secrets (the Redis
# password, the operator token), then ask for the trading API keys (Polygon.io, Unusual
# Whales, Alpaca) without echoing them; Enter keeps a key already set.
# Usage: scripts/setup_env.sh [--non-interactive] [--force]
#   --non-interactive  take the keys from the environment (POLYGON_API_KEY, ...), ask nothing
# The keys never appear on the command line, in logs or in output (docs/keys.md).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$root/scripts/manage_production.sh" keys setup "$@"
