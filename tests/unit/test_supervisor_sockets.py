"""The supervisor's hold on the address when each worker listens on a socket of its own
(``SO_REUSEPORT``): the family uvicorn would pick, and a port another server listens on
refused, even one that lets others share it."""

from __future__ import annotations

import socket

import pytest

from taskexec.server import supervisor


def test_the_reserved_address_is_ipv4_for_localhost_as_uvicorn_binds_it() -> None:
    sock = supervisor._reserve("localhost", 0)
    try:
        assert sock.family == socket.AF_INET
        assert sock.getsockname()[1] > 0
    finally:
        sock.close()


def test_a_port_another_server_shares_with_its_workers_is_refused() -> None:
    # What another `taskexec serve --workers 2` has: listening sockets open to sharing.
    other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", 0))
    other.listen()
    try:
        with pytest.raises(OSError):
            supervisor._reserve("127.0.0.1", other.getsockname()[1])
    finally:
        other.close()
