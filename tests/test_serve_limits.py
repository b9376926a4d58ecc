"""`latbot serve`'s connection limits on a live server (127.0.0.1 only): idle clients are closed after the
idle timeout so others get served, a half-sent message does not hold its connection, and one address
cannot open more than `max_per_client` connections."""

from __future__ import annotations

import os
import socket
import time
from contextlib import ExitStack

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from latbot.errors import LatBotError
from latbot.serve.server import PolicyServer, ServerLimits
from latbot.serve.wire import pack
from tests.test_reliability import bad_inputs

HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.fixture
def serve():
    servers = []

    def start(**limits) -> PolicyServer:
        server = PolicyServer(bad_inputs.stub_policy(), "127.0.0.1", 0, **limits).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()


def url(server: PolicyServer) -> str:
    return f"ws://127.0.0.1:{server.port}"


def served(server: PolicyServer) -> bool:
    """A fresh client gets the metadata and an answer to one observation."""
    with connect(url(server), open_timeout=5) as ws:
        ws.recv(timeout=5)
        ws.send(pack(bad_inputs.good_observation()))
        return isinstance(ws.recv(timeout=5), bytes)


def refusal(server: PolicyServer) -> str:
    """Why the server refuses a new connection: its HTTP 503 body, or the reason it closes a connection
    whose handshake raced past the check with (1013)."""
    try:
        with connect(url(server), open_timeout=5) as ws:
            ws.recv(timeout=5)
    except InvalidStatus as e:
        assert e.response.status_code == 503
        return e.response.body.decode()
    except ConnectionClosed as e:
        assert e.rcvd.code == 1013
        return e.rcvd.reason
    raise AssertionError("a connection over the cap was served")


def test_idle_clients_are_closed_then_a_new_client_is_served(serve):
    server = serve(max_connections=3, max_per_client=3, idle_timeout=1)
    with ExitStack() as stack:
        idle = [stack.enter_context(connect(url(server), open_timeout=5)) for _ in range(3)]
        for ws in idle:
            ws.recv(timeout=5)  # the metadata: the server counts the connection from here on
        assert "--max-connections 3" in refusal(server)  # every slot is held by an idle client
        for ws in idle:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd.code == 1000
            assert "--idle-timeout 1" in closed.value.rcvd.reason
    deadline = time.monotonic() + 5
    while server._active and time.monotonic() < deadline:  # their handlers finish their close handshake
        time.sleep(0.05)
    assert served(server)
    assert server.idle_closed == 3


def test_a_half_sent_message_is_closed_after_the_idle_timeout(serve):
    server = serve(idle_timeout=0.5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(HANDSHAKE)
        # a masked binary frame announcing 1000 bytes, of which 10 are sent
        sock.sendall(bytes([0x82, 0x80 | 126]) + (1000).to_bytes(2, "big") + os.urandom(4) + b"x" * 10)
        assert served(server)  # meanwhile, others are served
        t0, received = time.monotonic(), b""
        while block := sock.recv(4096):
            received += block
        assert time.monotonic() - t0 < 3
    assert b"\x03\xe8idle: no complete message in 0.5 s" in received  # close frame: code 1000, the reason


def test_per_client_cap_refuses_the_next_connection_and_keeps_the_others(serve):
    server = serve(max_per_client=2, idle_timeout=30)
    with connect(url(server), open_timeout=5) as a, connect(url(server), open_timeout=5) as b:
        for ws in (a, b):
            ws.recv(timeout=5)
        why = refusal(server)
        assert "--max-per-client 2" in why and "127.0.0.1" in why
        for ws in (a, b):  # the two open connections are still served
            ws.send(pack(bad_inputs.good_observation()))
            assert isinstance(ws.recv(timeout=5), bytes)
    assert server.refused == 1


def test_new_limits_are_validated():
    with pytest.raises(LatBotError, match="max_per_client"):
        ServerLimits(max_per_client=0)
    for bad in (0, -1, float("nan"), float("inf"), True):
        with pytest.raises(LatBotError, match="idle_timeout_s"):
            ServerLimits(idle_timeout_s=bad)
