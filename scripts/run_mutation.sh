#!/usr/bin/env bash
# Mutation testing with mutmut (pinned), run by itself: not part of scripts/run_tests.sh
# or .ci/run. Installs what it needs (scripts/bootstrap.sh with the dev and ml extras,
# then mutmut into .cache/mutation; both idempotent), runs each module's own unit tests against
# every mutant of it, then prints a row per module (mutants: killed, timeout, error = the
# tests could not even start, survived, no tests, other; score = the first three in % of
# all) and every mutant not detected. Exit 0 when every module scores at least 90 %, 1
# when one is below (named on stderr), 2 on a bad argument, 3 when mutmut fails.
# Usage: scripts/run_mutation.sh [--json] [MODULE ...]
#   MODULE: policy, router, protocol, outbox or config (default: all five), or a .py file
#   under src/, e.g. src/unistack/ml/protocol.py. Progress on stderr; work: mutants/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
for arg in "$@"; do
  case "$arg" in
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  esac
done
scripts/bootstrap.sh --quiet --extras dev,ml
mutmut_version="$(.venv/bin/python -c "from harness.mutation import MUTMUT; print(MUTMUT)")"
# mutmut and what it brings (setproctitle among them: installed, it makes gunicorn
# retitle the dashboard's processes) stay out of .venv, in a directory of their own that
# only this command puts on the path.
tools=".cache/mutation/mutmut-$mutmut_version"
if [ ! -d "$tools" ]; then
  echo "run_mutation: installing mutmut $mutmut_version into $tools ..." >&2
  rm -rf "$tools.partial"
  .venv/bin/pip install --quiet --disable-pip-version-check --target "$tools.partial" \
    "mutmut==$mutmut_version" >&2
  mv "$tools.partial" "$tools"
fi
PYTHONPATH="$root/$tools${PYTHONPATH:+:$PYTHONPATH}" exec .venv/bin/python -m harness.mutation "$@"
