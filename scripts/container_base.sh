#!/usr/bin/env bash
# Prepares podman and a local Debian base image for building Dockerfile.unified on a
# machine without Docker and without a registry (tests/container/ use it).
# Idempotent: a second run with everything in place only checks and takes seconds.
#   1. podman, runc and debootstrap from Debian's packages when missing (as root;
#      otherwise prints the exact command and exits 1),
#   2. a containers.conf outside /etc (runc, lowered default ulimits: these VMs withhold
#      CAP_SYS_RESOURCE, so crun's and podman's defaults fail) under
#      ${XDG_CACHE_HOME:-$HOME/.cache}/unistack/containers/; point podman at it with
#      `export CONTAINERS_CONF=PATH` (the last line printed is that assignment),
#   3. a debootstrap minbase bookworm rootfs imported as localhost/unistack-base:bookworm,
#      only when that image is not there yet.
# Usage: scripts/container_base.sh [--arch amd64|arm64] [--quiet] [--print-conf]
#   --arch arm64   the emulated GH200 base (qemu-user-static, binfmt_misc):
#                  localhost/unistack-base:bookworm-arm64
#   --print-conf   only write the containers.conf and print its path (no install, no image)
#   --quiet        print only the final CONTAINERS_CONF=... line
set -euo pipefail

arch=""
quiet=0
print_conf=0
while [ $# -gt 0 ]; do
  case "$1" in
    --arch)
      [ $# -ge 2 ] || { echo "container_base.sh: --arch needs amd64 or arm64" >&2; exit 2; }
      arch="$2"; shift ;;
    --arch=*) arch="${1#--arch=}" ;;
    --quiet) quiet=1 ;;
    --print-conf) print_conf=1 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "container_base.sh: unknown argument '$1' (expected --arch amd64|arm64, --quiet, --print-conf or --help)" >&2; exit 2 ;;
  esac
  shift
done

host_arch="$(dpkg --print-architecture 2>/dev/null || uname -m)"
case "$host_arch" in x86_64) host_arch=amd64 ;; aarch64) host_arch=arm64 ;; esac
arch="${arch:-$host_arch}"
case "$arch" in
  amd64|arm64) ;;
  *) echo "container_base.sh: --arch '$arch' is not supported (expected amd64 or arm64)" >&2; exit 2 ;;
esac
if [ "$arch" = "$host_arch" ]; then
  image="localhost/unistack-base:bookworm"
else
  image="localhost/unistack-base:bookworm-$arch"
fi

say() { [ "$quiet" = 1 ] || echo "container_base: $*"; }
as_root() {
  # Run "$@" when root; otherwise print it and fail: nothing here uses sudo by itself.
  if [ "$(id -u)" = 0 ]; then
    "$@"
  else
    echo "container_base: needs root; run:" >&2
    echo "  sudo $*" >&2
    exit 1
  fi
}

# 2. containers.conf (first: --print-conf needs nothing else).
cache="${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/unistack/containers"
conf="$cache/containers.conf"
wanted='# Written by scripts/container_base.sh. runc, and ulimits a VM without
# CAP_SYS_RESOURCE can set (crun and the default nofile fail there).
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"'
mkdir -p "$cache"
if [ -f "$conf" ] && [ "$(cat "$conf")" = "$wanted" ]; then
  say "containers.conf in place: $conf"
else
  printf '%s\n' "$wanted" > "$conf.tmp"
  mv "$conf.tmp" "$conf"
  say "wrote $conf (runtime runc, default_ulimits nofile=1024:1024 nproc=4096:4096)"
fi
export CONTAINERS_CONF="$conf"
if [ "$print_conf" = 1 ]; then
  echo "CONTAINERS_CONF=$conf"
  exit 0
fi

# 1. Packages.
packages=()
command -v podman >/dev/null 2>&1 || packages+=(podman)
command -v runc >/dev/null 2>&1 || packages+=(runc)
command -v debootstrap >/dev/null 2>&1 || packages+=(debootstrap)
if [ "$arch" != "$host_arch" ]; then
  command -v qemu-aarch64-static >/dev/null 2>&1 || packages+=(qemu-user-static)
  command -v update-binfmts >/dev/null 2>&1 || packages+=(binfmt-support)
fi
if [ ${#packages[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "container_base: missing ${packages[*]}; run as root:" >&2
    echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${packages[*]}" >&2
    exit 1
  fi
  say "installing ${packages[*]} from Debian's packages ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  say "installed ${packages[*]}"
else
  say "podman, runc and debootstrap present ($(podman --version))"
fi

# Emulation for a foreign base: binfmt_misc with qemu's interpreter registered.
if [ "$arch" != "$host_arch" ]; then
  if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    say "mounting binfmt_misc on /proc/sys/fs/binfmt_misc"
    as_root mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  qemu="qemu-aarch64"
  if [ -f "/proc/sys/fs/binfmt_misc/$qemu" ] && grep -q '^enabled' "/proc/sys/fs/binfmt_misc/$qemu"; then
    say "binfmt $qemu enabled"
  else
    say "enabling binfmt $qemu"
    as_root update-binfmts --enable "$qemu"
  fi
fi

# 3. The base image, built only once.
if podman image exists "$image"; then
  say "base image $image present ($(podman image inspect --format '{{.Architecture}}, {{.Size}} bytes' "$image"))"
else
  [ "$(id -u)" = 0 ] || { echo "container_base: building $image needs root (debootstrap); run: sudo $0 --arch $arch" >&2; exit 1; }
  # ca-certificates is in the base already: a test build mounts the host's CA bundle
  # read-only over /etc/ssl/certs (its PyPI proxy), where the package's postinst could
  # not write; the image's own bundle is the one that ships.
  rootfs="$(mktemp -d "${TMPDIR:-/tmp}/unistack-rootfs.XXXXXX")"
  trap 'rm -rf "$rootfs"' EXIT
  begun=$SECONDS
  say "debootstrap --variant=minbase --include=ca-certificates --arch=$arch bookworm into $rootfs (about 1 min native, 3 min emulated) ..."
  debootstrap --variant=minbase --include=ca-certificates --arch="$arch" bookworm "$rootfs" http://deb.debian.org/debian >"$rootfs.log" 2>&1 || {
    tail -n 20 "$rootfs.log" >&2
    echo "container_base: debootstrap failed; full log: $rootfs.log" >&2
    exit 1
  }
  rm -f "$rootfs.log"
  # No package lists or caches in the image; apt in a build runs `apt-get update` first.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  say "importing the rootfs as $image ..."
  tar -C "$rootfs" -c . | podman import --quiet --arch "$arch" \
    --change 'CMD ["/bin/bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$image" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  say "built $image in $((SECONDS - begun)) s"
fi

echo "CONTAINERS_CONF=$conf"
