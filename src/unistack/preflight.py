"""Preflight: before supervisord starts anything, every listening port of the registry
must be free on 127.0.0.1, or `start` fails at once naming the key, the port and the
process holding it (pid, command line, systemd unit), instead of a service that exits
too quickly 30 s later. `diagnose_container.sh` reports the same findings.

Holders are found the way `ss -ltnp` finds them: the listening socket's inode from
/proc/net/tcp and tcp6, then the process whose /proc/<pid>/fd links to that inode. The
/proc root is a parameter, so unit tests read a fixture tree.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from unistack.config import Settings
from unistack.configkeys import LOOPBACK
from unistack.services import REGISTRY, ServiceSpec

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column


class Holder(NamedTuple):
    pid: int  # 0: not visible (another user's process, or another network namespace)
    command: str
    unit: str  # the systemd unit it runs in, or ""


class Finding(NamedTuple):
    key: str
    port: int
    holder: Holder | None  # None: the port is free

    def sentence(self) -> str:
        who = describe(self.holder) if self.holder else "nothing we can see"
        return f"{self.key}={self.port} is taken by {who}"


class PreflightError(Exception):
    """A port the stack needs is held by another process; the message says which and how
    to choose another."""


def describe(holder: Holder) -> str:
    if not holder.pid:
        return "another user's process (its pid is not visible to us)"
    unit = f", systemd unit {holder.unit} (`systemctl disable --now {holder.unit}`)" \
        if holder.unit else ""
    return f"pid {holder.pid} ({holder.command}){unit}"


def bindable(port: int, address: str = LOOPBACK) -> bool:
    """Whether a server could listen on ADDRESS:PORT now (as Redis and Prometheus do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def listening_inodes(port: int, proc: Path = Path("/proc")) -> set[str]:
    """Inodes of sockets listening on PORT (any address, IPv4 or IPv6)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for fields in (line.split() for line in lines):
            if len(fields) > 9 and fields[3] == _LISTEN and \
                    int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _pids(proc: Path) -> Iterator[Path]:
    for entry in proc.iterdir():
        if entry.name.isdigit():
            yield entry


def _holds(process: Path, targets: set[str]) -> bool:
    try:
        fds = list((process / "fd").iterdir())
    except OSError:
        return False  # gone, or another user's: not visible
    return any(_socket_inode(fd) in targets for fd in fds)


def _socket_inode(fd: Path) -> str:
    try:
        link = os.readlink(fd)
    except OSError:
        return ""  # closed meanwhile (the listing's own descriptor, for one)
    return link[8:-1] if link.startswith("socket:[") else ""


def systemd_unit(process: Path) -> str:
    """The .service of PROCESS from its cgroup (`0::/system.slice/redis-server.service`)."""
    try:
        lines = (process / "cgroup").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        last = line.rsplit("/", 1)[-1]
        if last.endswith(".service") and "/user@" not in line:
            return last
    return ""


def holder(port: int, proc: Path = Path("/proc")) -> Holder:
    """Who listens on PORT: the first process holding one of its listening sockets."""
    targets = listening_inodes(port, proc)
    for process in _pids(proc):
        if targets and _holds(process, targets):
            raw = (process / "cmdline").read_bytes() if (process / "cmdline").exists() else b""
            command = raw.replace(b"\0", b" ").decode(errors="replace").strip()
            return Holder(int(process.name), command[:200] or "?", systemd_unit(process))
    return Holder(0, "", "")


def findings(settings: Settings, registry: tuple[ServiceSpec, ...] = REGISTRY,
             proc: Path = Path("/proc")) -> list[Finding]:
    """Every listening port of the registry, free (holder None) or taken (its holder)."""
    result = []
    for spec in registry:
        port = spec.port(settings)
        taken = not bindable(port, settings.unistack_bind_address)
        result.append(Finding(spec.port_key, port, holder(port, proc) if taken else None))
    return result


def free_port_near(port: int, avoid: set[int]) -> int:
    """A port above PORT that is free now, to suggest."""
    for candidate in range(port + 10, min(port + 1000, 65535)):
        if candidate not in avoid and bindable(candidate):
            return candidate
    return 0


def check(settings: Settings) -> None:
    """Raise PreflightError naming every taken port, its holder and how to move."""
    found = findings(settings)
    taken = [f for f in found if f.holder is not None]
    if not taken:
        return
    used = {f.port for f in found}
    lines = [f.sentence() + "." for f in taken]
    first = taken[0]
    suggestion = free_port_near(first.port, used)
    lines.append(f"Stop that process, or choose another port: set {first.key}="
                 f"{suggestion or '<port>'} (free now) in config.env or the environment"
                 + (", and likewise for the others." if len(taken) > 1 else "."))
    raise PreflightError(" ".join(lines))
