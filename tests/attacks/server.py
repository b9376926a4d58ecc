"""Attack cases: server — clients of `latbot serve` that hold connections without using them (idle, half-sent
or dripped messages, silent sockets, too many from one address). Each runs a `PolicyServer` with a stand-in
policy (tools/bad_inputs.py) on 127.0.0.1 in the case's own process, with a short idle timeout set by the
case, and states what a real client then gets."""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import time
from contextlib import ExitStack

from tests.attacks import REPO, Trial, attack

IDLE_S = 1.0  # the idle timeout the cases set (the default is 60 s)
HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
HALF_FRAME = bytes([0x82, 0x80 | 126]) + (1000).to_bytes(2, "big") + os.urandom(4)  # masked binary, 1000 bytes


def _bad_inputs():
    if "bad_inputs" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bad_inputs", REPO / "tools" / "bad_inputs.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["bad_inputs"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["bad_inputs"]


def _server(**limits):
    """A server with these limits; one that lacks some (an older `latbot/`, with `--tree`) runs without them."""
    import inspect

    from latbot.serve.server import PolicyServer

    known = inspect.signature(PolicyServer.__init__).parameters
    limits = {k: v for k, v in limits.items() if k in known}
    return PolicyServer(_bad_inputs().stub_policy(), "127.0.0.1", 0, **limits).__enter__()


def _connect(server):
    from websockets.sync.client import connect

    return connect(f"ws://127.0.0.1:{server.port}", open_timeout=5, close_timeout=1)


def _try_client(server) -> str:
    """What a real client gets: "served" (metadata, then actions for one observation) or the refusal."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    from latbot.serve.wire import pack

    try:
        with _connect(server) as ws:
            ws.recv(timeout=5)
            ws.send(pack(_bad_inputs().good_observation()))
            return "served" if isinstance(ws.recv(timeout=5), bytes) else "a text reply"
    except InvalidStatus as e:
        return f"HTTP {e.response.status_code}: {e.response.body.decode(errors='replace').strip()}"
    except ConnectionClosed as e:
        return f"closed {e.rcvd.code if e.rcvd else '?'}: {e.rcvd.reason if e.rcvd else ''}"


def _served_within(server, seconds: float) -> tuple[bool, float, str]:
    t0, last = time.monotonic(), ""
    while time.monotonic() - t0 < seconds:
        last = _try_client(server)
        if last == "served":
            return True, time.monotonic() - t0, last
        time.sleep(0.1)
    return False, time.monotonic() - t0, last


def _closed_by_server(sock: socket.socket, seconds: float, drip: bool = False) -> bytes | None:
    """Everything the server sent until it closed the socket, or None if it kept it open for `seconds`
    (with `drip`, one more byte of the message is sent every 0.2 s meanwhile)."""
    received, deadline = b"", time.monotonic() + seconds
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if drip:
                sock.send(b"x")
            block = sock.recv(4096)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return received
        if not block:
            return received
        received += block
    return None


@attack("server", "16 idle clients hold every slot: closed after --idle-timeout, then a real client is served")
def _(t: Trial):
    from websockets.exceptions import ConnectionClosed

    server = _server(max_connections=16, max_per_client=16, idle_timeout=IDLE_S)
    try:
        with ExitStack() as stack:
            idle = [stack.enter_context(_connect(server)) for _ in range(16)]
            for ws in idle:
                ws.recv(timeout=5)  # the metadata; then nothing
            first = _try_client(server)
            t.expect("--max-connections 16" in first, f"a 17th client was not refused naming the cap: {first}")
            served, seconds, last = _served_within(server, IDLE_S + 5)
            t.expect(served, f"a real client was not served within {IDLE_S + 5:.0f} s; last: {last}")
            t.expect(seconds < IDLE_S + 3, f"a real client waited {seconds:.1f} s (idle timeout {IDLE_S} s)")
            reasons = []
            for ws in idle:
                try:
                    ws.recv(timeout=2)
                except ConnectionClosed as e:
                    reasons.append(e.rcvd.reason if e.rcvd else "")
                except TimeoutError:
                    reasons.append("still open")
            t.expect(all("--idle-timeout" in r for r in reasons), f"idle clients not closed with a reason: {reasons}")
    finally:
        server.shutdown()
    t.handled()


@attack("server", "20 connections from one address: the 5th on refused (HTTP 503 naming --max-per-client 4)")
def _(t: Trial):
    server = _server()  # the defaults: 16 connections, 4 per address, 60 s idle timeout
    try:
        with ExitStack() as stack:
            kept = [stack.enter_context(_connect(server)) for _ in range(4)]
            for ws in kept:
                ws.recv(timeout=5)
            refusals = [_try_client(server) for _ in range(16)]
            bad = [r for r in refusals if "--max-per-client 4" not in r or "127.0.0.1" not in r]
            t.expect(not bad, f"over-cap connections not refused naming the cap and the address: {bad[:2]}")
            from latbot.serve.wire import pack

            for ws in kept:  # the first four stay served
                ws.send(pack(_bad_inputs().good_observation()))
                t.expect(isinstance(ws.recv(timeout=5), bytes), "a connection within the cap was not served")
    finally:
        server.shutdown()
    t.handled()


@attack("server", "half-sent message (frame announces 1000 bytes, 10 arrive): closed after --idle-timeout")
def _(t: Trial):
    server = _server(idle_timeout=IDLE_S)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(HANDSHAKE)
            sock.sendall(HALF_FRAME + b"x" * 10)
            other = _try_client(server)
            t.expect(other == "served", f"another client was not served meanwhile: {other}")
            received = _closed_by_server(sock, IDLE_S + 4)
        t.expect(received is not None, f"the half-sent connection was still open after {IDLE_S + 4:.0f} s")
        t.expect(b"--idle-timeout" in received, f"closed without a reason naming the timeout: {received[-80:]!r}")
    finally:
        server.shutdown()
    t.handled()


@attack("server", "message dripped a byte every 0.2 s: closed after --idle-timeout though bytes keep coming")
def _(t: Trial):
    server = _server(idle_timeout=IDLE_S)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(HANDSHAKE)
            sock.sendall(HALF_FRAME)
            t0 = time.monotonic()
            received = _closed_by_server(sock, IDLE_S + 5, drip=True)
            seconds = time.monotonic() - t0
        t.expect(received is not None, f"the dripping connection was still open after {IDLE_S + 5:.0f} s")
        t.expect(seconds < IDLE_S + 3, f"closed only after {seconds:.1f} s")
        t.expect(_try_client(server) == "served", "a real client was not served afterwards")
    finally:
        server.shutdown()
    t.handled()


@attack("server", "50 TCP connections that never send a handshake: a real client is still served")
def _(t: Trial):
    server = _server(idle_timeout=IDLE_S)
    try:
        with ExitStack() as stack:
            for _ in range(50):
                stack.enter_context(socket.create_connection(("127.0.0.1", server.port), timeout=5))
            got = _try_client(server)
            t.expect(got == "served", f"a real client was not served: {got}")
    finally:
        server.shutdown()
    t.handled()


@attack("server", "a TCP connection that never sends a handshake is dropped after 10 s", fast=False, timeout_s=40)
def _(t: Trial):
    from latbot.serve import server as module

    open_timeout = getattr(module, "OPEN_TIMEOUT_S", 10.0)  # before it was named: the library's default
    server = _server(idle_timeout=IDLE_S)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            t0 = time.monotonic()
            received = _closed_by_server(sock, open_timeout + 5)
            seconds = time.monotonic() - t0
        t.expect(received is not None, f"the silent socket was still open after {open_timeout + 5:.0f} s")
        t.expect(seconds < open_timeout + 3, f"dropped only after {seconds:.1f} s")
    finally:
        server.shutdown()
    t.handled()
