"""Whether a Redis answers, and from which pid: PING and INFO over a raw socket with one
deadline, with no client library's retries or connect-time extras."""

from __future__ import annotations

import re
import socket
import time

from harness.processes import process_age
from unistack.configkeys import LOOPBACK

PING_TIMEOUT = 0.25  # one PING poll; a SIGSTOPped Redis accepts TCP and never answers


def _resp(*args: str) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    parts += [f"${len(arg.encode())}\r\n{arg}\r\n".encode() for arg in args]
    return b"".join(parts)


def _read_replies(sock: socket.socket, deadline: float) -> bytes:
    """Read until INFO's bulk reply is complete or an error reply arrived."""
    data = b""
    while not data.endswith(b"\r\n\r\n") and b"\r\n-" not in b"\r\n" + data:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def answering_pid(port: int, password: str) -> int | None:
    """The pid of the Redis on PORT if it answers PING (after AUTH with PASSWORD), else None."""
    commands = ([_resp("AUTH", password)] if password else []) + [_resp("PING"),
                                                                  _resp("INFO", "server")]
    deadline = time.monotonic() + PING_TIMEOUT
    try:
        with socket.create_connection((LOOPBACK, port), timeout=PING_TIMEOUT) as sock:
            sock.sendall(b"".join(commands))
            text = _read_replies(sock, deadline).decode(errors="replace")
    except OSError:
        return None
    found = re.search(r"process_id:(\d+)", text)
    if "+PONG" not in text or re.search(r"^-", text, re.MULTILINE) or not found:
        return None
    return int(found.group(1))


def settled_redis(port: int, password: str, settle: float) -> int | None:
    """The pid of the Redis on PORT once it answers and has lived SETTLE seconds, else None."""
    pid = answering_pid(port, password)
    return pid if pid and process_age(pid) >= settle else None
