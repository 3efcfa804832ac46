"""Preflight: /proc parsing against a fixture tree; binding against real sockets."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from unistack.preflight import (
    Holder,
    bindable,
    describe,
    holder,
    listening_inodes,
    systemd_unit,
)

# /proc/net/tcp{,6} as the kernel writes them, cut after the inode column (field 10).
TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt uid ...
   0: 0100007F:18EC 00000000:0000 0A 00000000:00000000 00:00000000 00000000 101 0 4242
   1: 0100007F:18EC 0100007F:9C40 01 00000000:00000000 00:00000000 00000000 101 0 4343
   2: 00000000:23E6 00000000:0000 0A 00000000:00000000 00:00000000 00000000   0 0 5151
"""
TCP6 = """  sl  local_address remote_address st ...
0: 00000000000000000000000001000000:18EC 00000000000000000000000000000000:0000 0A 0 0 0 1 0 6161
"""


def fake_proc(root: Path) -> Path:
    (root / "net").mkdir(parents=True)
    (root / "net" / "tcp").write_text(TCP)
    (root / "net" / "tcp6").write_text(TCP6)
    process = root / "812"
    (process / "fd").mkdir(parents=True)
    os.symlink("socket:[4242]", process / "fd" / "6")
    os.symlink("/dev/null", process / "fd" / "0")
    (process / "cmdline").write_bytes(b"/usr/bin/redis-server\x00127.0.0.1:6380\x00")
    (process / "cgroup").write_text("0::/system.slice/redis-server.service\n")
    other = root / "900"
    (other / "fd").mkdir(parents=True)
    (other / "cgroup").write_text("0::/user.slice/user-1000.slice/session-3.scope\n")
    return root


def test_listening_sockets_on_a_port_in_both_tables(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path)
    assert listening_inodes(0x18EC, proc) == {"4242", "6161"}  # 6380; the connected one is not
    assert listening_inodes(0x23E6, proc) == {"5151"}
    assert listening_inodes(1, proc) == set()


def test_the_holder_with_its_command_line_and_systemd_unit(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path)
    found = holder(6380, proc)
    assert found == Holder(812, "/usr/bin/redis-server 127.0.0.1:6380", "redis-server.service")
    assert "pid 812 (/usr/bin/redis-server 127.0.0.1:6380)" in describe(found)
    assert "systemctl disable --now redis-server.service" in describe(found)


def test_a_holder_we_cannot_see_is_another_users_process(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path)
    assert holder(0x23E6, proc) == Holder(0, "", "")  # no visible fd links to inode 5151
    assert describe(Holder(0, "", "")) == "another user's process (its pid is not visible to us)"


def test_no_unit_outside_a_system_service(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path)
    assert systemd_unit(proc / "900") == ""
    assert systemd_unit(proc / "404") == ""


def test_bindable_sees_a_real_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.listen()
        assert not bindable(port)
    assert bindable(port)


def test_the_real_holder_of_a_real_listener_is_this_process() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        found = holder(sock.getsockname()[1])
    assert found.pid == os.getpid() and "pytest" in found.command
