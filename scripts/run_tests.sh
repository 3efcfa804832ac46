#!/usr/bin/env bash
# The one test command: installs what the tests need (scripts/bootstrap.sh, idempotent;
# with --test-tools: Debian's chromium, wrk and kubectl), then runs ruff, mypy, promtool
# and the whole pytest suite (unit, integration, chaos, browser, static, container). The
# container tests prepare podman, runc, debootstrap and the Debian base image themselves
# (scripts/container_base.sh, cached after the first run).
# Extra arguments go to pytest, e.g. `scripts/run_tests.sh tests/unit -k config`; the
# emulated arm64 build of the image runs only when asked: `scripts/run_tests.sh -m arm64
# tests/container`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/bootstrap.sh --extras dev,ml,tf --test-tools
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy"
.venv/bin/mypy
echo "== promtool"
promtool check config prometheus.yml
promtool check rules alert_rules.yml
promtool test rules tests/rules/*.yml
echo "== pytest"
exec .venv/bin/pytest "$@"
