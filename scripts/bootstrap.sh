#!/usr/bin/env bash
# Installs what unistack needs, idempotently, and does nothing when all is in place:
#   - redis-server and prometheus from Debian's packages (as root; otherwise prints
#     the exact command to run),
#   - the virtualenv .venv with unistack and the extras asked for (default: none),
#   - with --test-tools (scripts/run_tests.sh), what only the tests and benchmarks use:
#     Debian's chromium (browser tests), wrk (benchmarks/dashboard.py) and, when no
#     kubectl is installed, kubernetes-client (kubectl kustomize for tests/static).
# Usage: scripts/bootstrap.sh [--quiet] [--extras dev,ml] [--test-tools]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
quiet=0
extras=""
test_tools=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quiet) quiet=1 ;;
    --extras) extras="$2"; shift ;;
    --test-tools) test_tools=1 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bootstrap.sh: unknown argument '$1' (expected --quiet, --extras LIST or --test-tools)" >&2; exit 2 ;;
  esac
  shift
done
# Progress goes to stderr: stdout belongs to the command bootstrap runs before (e.g.
# `manage_production.sh status --json` on a first run).
say() { [ "$quiet" = 1 ] || echo "bootstrap: $*" >&2; }

# Debian's packages start and enable their own redis-server (6379) and prometheus (9090)
# on install. unistack runs its own under supervisord (REDIS_PORT 6380, PROMETHEUS_PORT
# 9190 by default), so the install runs with service starts denied (policy-rc.d exit
# 101), and on a systemd host the packages' units are disabled and stopped afterwards.
# Seams for tests: UNISTACK_POLICY_RC_D (the policy file), UNISTACK_SYSTEMD_DIR.
policy="${UNISTACK_POLICY_RC_D:-/usr/sbin/policy-rc.d}"
systemd_dir="${UNISTACK_SYSTEMD_DIR:-/run/systemd/system}"
units=(redis-server.service prometheus.service)
running_units() {
  [ -d "$systemd_dir" ] || return 0
  local unit
  for unit in "${units[@]}"; do
    if systemctl is-active --quiet "$unit" 2>/dev/null; then printf '%s ' "$unit"; fi
  done
}
missing=()
command -v "${REDIS_SERVER_BIN:-redis-server}" >/dev/null 2>&1 || missing+=(redis-server)
command -v "${PROMETHEUS_BIN:-prometheus}" >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    before="$(running_units)"
    [ -z "$before" ] || echo "bootstrap: already running before the install: $before(left as they are)" >&2
    echo "bootstrap: installing ${missing[*]} from Debian's packages (their own services not started) ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    own_policy=0
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\n# unistack bootstrap: no service starts during this install\nexit 101\n' > "$policy"
      chmod 755 "$policy"
      own_policy=1
      trap '[ "$own_policy" = 1 ] && rm -f "$policy"' EXIT
    fi
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [ "$own_policy" = 1 ]; then rm -f "$policy"; own_policy=0; fi
    if [ -d "$systemd_dir" ]; then
      for unit in "${units[@]}"; do
        case " $before " in *" $unit "*) continue ;; esac  # the operator's own: untouched
        systemctl disable --now --quiet "$unit" 2>/dev/null || true
      done
      echo "bootstrap: disabled the packages' own units (${units[*]}); unistack runs its own" >&2
    fi
  else
    echo "bootstrap: missing ${missing[*]}; run as root:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
fi
still="$(running_units)"
[ -z "$still" ] || say "note: $still running beside unistack (Debian's own; unistack uses other ports)"

# Test-only tools, never for `manage_production.sh start`. Neither package has a service
# of its own, so no policy-rc.d is needed. Playwright drives this chromium through its
# executable_path: `playwright install` (a browser download) is never run.
# Seams for tests: CHROMIUM_BIN, WRK_BIN, KUBECTL_BIN.
if [ "$test_tools" = 1 ]; then
  tools=()
  command -v "${CHROMIUM_BIN:-chromium}" >/dev/null 2>&1 || tools+=(chromium)
  command -v "${WRK_BIN:-wrk}" >/dev/null 2>&1 || tools+=(wrk)
  command -v "${KUBECTL_BIN:-kubectl}" >/dev/null 2>&1 || tools+=(kubernetes-client)
  if [ ${#tools[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      echo "bootstrap: installing the test tools ${tools[*]} from Debian's packages ..." >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >&2
      apt-get install -y -qq --no-install-recommends "${tools[@]}" >/dev/null
    else
      echo "bootstrap: missing the test tools ${tools[*]}; run as root:" >&2
      echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${tools[*]}" >&2
      exit 1
    fi
  fi
fi

venv="$root/.venv"
stamp="$venv/.unistack-installed"
# The stamp holds the hash of pyproject.toml and the extras installed with it: a
# request is satisfied when the hash matches and its extras are among those.
hash="$(sha256sum "$root/pyproject.toml" | cut -c1-64)"
installed=""
current=0
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(head -n 1 "$stamp")" = "$hash" ]; then
  installed="$(sed -n 2p "$stamp")"
  current=1
fi
for extra in ${extras//,/ }; do
  case ",$installed," in *",$extra,"*) ;; *) current=0 ;; esac
done
if [ "$current" = 1 ]; then
  say "up to date"
  exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "bootstrap: creating $venv ..." >&2
  python3 -m venv "$venv"
fi
all="$(printf '%s,%s' "$installed" "$extras" | tr ',' '\n' | sed '/^$/d' | sort -u | paste -sd, -)"
echo "bootstrap: installing unistack${all:+ with extras $all} into $venv ..." >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check --editable "$root${all:+[$all]}" >&2
"$venv/bin/python" -c "import unistack"
printf '%s\n%s\n' "$hash" "$all" > "$stamp"
say "done"
