"""Free TCP ports on the loopback interface, for servers started by a test or a benchmark."""

from __future__ import annotations

import socket

from unistack.configkeys import LOOPBACK


def free_ports(count: int) -> list[int]:
    """COUNT distinct ports that were free on 127.0.0.1 a moment ago.

    All sockets stay bound until every port is known, so the ports are distinct.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
