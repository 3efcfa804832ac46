#!/usr/bin/env bash
# Installs what unistack needs, idempotently, and does nothing when all is in place:
#   - redis-server and prometheus from Debian's packages (as root; otherwise prints
#     the exact command to run),
#   - the virtualenv .venv with unistack and the extras asked for (default: none).
# Usage: scripts/bootstrap.sh [--quiet] [--extras dev,ml]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
quiet=0
extras=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quiet) quiet=1 ;;
    --extras) extras="$2"; shift ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bootstrap.sh: unknown argument '$1' (expected --quiet or --extras LIST)" >&2; exit 2 ;;
  esac
  shift
done
say() { [ "$quiet" = 1 ] || echo "bootstrap: $*"; }

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing ${missing[*]} from Debian's packages ..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "bootstrap: missing ${missing[*]}; run as root:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
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
  echo "bootstrap: creating $venv ..."
  python3 -m venv "$venv"
fi
all="$(printf '%s\n' ${installed//,/ } ${extras//,/ } | sort -u | paste -sd, -)"
echo "bootstrap: installing unistack${all:+ with extras $all} into $venv ..."
"$venv/bin/pip" install --quiet --disable-pip-version-check --editable "$root${all:+[$all]}"
"$venv/bin/python" -c "import unistack"
printf '%s\n%s\n' "$hash" "$all" > "$stamp"
say "done"
