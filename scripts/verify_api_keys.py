#!/usr/bin/env python3
"""Verify the trading API keys: a format check, then one cheap authenticated request per
provider (Polygon.io, Unusual Whales, Alpaca; paper by default), each reported valid,
rejected, rate-limited or unreachable; never a key printed. The results reach the hub as
events (a rejected key is a warning alert naming the provider).

Usage: scripts/verify_api_keys.py [PROVIDER ...] [--json] [--timeout SECONDS]
Exit 0 all valid, 1 some not judged (missing, rate limited, unreachable), 2 some rejected
or malformed. A thin call of `manage_production.sh keys verify` (docs/keys.md).
"""

import os
import sys
from pathlib import Path

script = Path(__file__).resolve().parent / "manage_production.sh"
os.execv(script, [str(script), "keys", "verify", *sys.argv[1:]])
