"""The policy server: one `LatBotPolicy` loaded once, served over websockets.

Protocol (openpi's): on connect the server sends the policy's metadata (msgpack map); then each binary
message from the client is an observation (latbot.policy) and the answer is {"actions": (H, A) float32,
"server_timing": {"infer_ms": float}}. A request that cannot be served gets a text message
"400 Bad Request: <why>" (or "500 Internal Server Error: <why>") — openpi's client raises it as an
error — and the connection stays open for the next request. `GET /healthz` answers 200 with a JSON body.

Limits (`ServerLimits`, `latbot serve --max-message-mb/--max-connections/--max-per-client/--max-inflight-mb/
--idle-timeout`): a message larger than `max_message_bytes` closes its connection with code 1009 before it
is buffered; a connection beyond `max_connections`, or beyond `max_per_client` from one IP address, is
refused with HTTP 503 naming the cap; a connection that completes no message for `idle_timeout_s` (an idle
client, or one that starts a message and stalls) is closed with code 1000 and a reason naming the timeout,
so idle clients cannot hold every slot; a request arriving while `max_inflight_bytes` of received requests
wait for the model is answered "503 Service Unavailable" (retry later). The library's own timeouts bound
the rest: the opening handshake (`OPEN_TIMEOUT_S`), keepalive pings (`PING_INTERVAL_S`, `PING_TIMEOUT_S`)
and the closing handshake (`SHUTDOWN_S`). Each connection buffers at most one message (`max_queue=1`: the
socket applies back-pressure), so memory stays below about max_connections × max_message_bytes plus the
model. Observations are checked strictly
(`LatBotPolicy.check(strict=True)`); images must be at the policy's size unless `resize` is on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from latbot.errors import LatBotError
from latbot.serve.wire import WireError, pack, unpack

log = logging.getLogger("latbot.serve")
MAX_MESSAGE = 32 << 20  # bytes: three 1080p cameras (6 MB each) fit; 224² ones need 150 KB
SHUTDOWN_S = 0.5  # close handshake allowance per connection (on shutdown, and after any server-side close)
OPEN_TIMEOUT_S = 10.0  # TCP accept → websocket handshake done; a socket that sends nothing is dropped after it
PING_INTERVAL_S = PING_TIMEOUT_S = 20.0  # keepalive: a peer that stops answering pings is closed (1011)
CLOSE_REASON_BYTES = 123  # RFC 6455 §5.5: a control frame's payload is at most 125 bytes, 2 of them the code


@dataclass(frozen=True)
class ServerLimits:
    max_message_bytes: int = MAX_MESSAGE
    max_connections: int = 16
    max_inflight_bytes: int = 256 << 20
    max_per_client: int = 4  # connections from one IP address: one robot needs one, a few tools a few more
    idle_timeout_s: float = 60.0  # seconds without a complete message before a connection is closed

    def __post_init__(self) -> None:
        for name, lo, hi in (
            ("max_message_bytes", 1 << 10, 1 << 32),
            ("max_connections", 1, 10_000),
            ("max_inflight_bytes", 1 << 10, 1 << 40),
            ("max_per_client", 1, 10_000),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise LatBotError(f"server limit {name} must be an integer in [{lo}, {hi}], got {value!r}")
        idle = self.idle_timeout_s
        if isinstance(idle, bool) or not isinstance(idle, int | float) or not 0.01 <= idle <= 86_400:
            raise LatBotError(f"server limit idle_timeout_s must be a number of seconds in [0.01, 86400], got {idle!r}")
        if self.max_inflight_bytes < self.max_message_bytes:
            raise LatBotError(
                f"max_inflight_bytes ({self.max_inflight_bytes}) must be at least max_message_bytes "
                f"({self.max_message_bytes}), or no full-size request could ever be served"
            )


class _ByteBudget:
    """Bytes of received requests not answered yet; `take` fails instead of waiting when it is spent."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        with self._lock:
            if self.used + n > self.limit:
                return False
            self.used += n
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self.used -= n


class _OneLine(logging.Filter):
    """The websockets library logs expected network failures (keepalive timeouts, resets) with
    tracebacks; the server log gets one line for each instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {exc}"
            record.args, record.exc_info, record.exc_text = (), None, None
            if record.levelno >= logging.ERROR:
                record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _library_logger() -> logging.Logger:
    lib = logging.getLogger("latbot.serve.websockets")
    if not any(isinstance(f, _OneLine) for f in lib.filters):
        lib.addFilter(_OneLine())
    return lib


def _client(connection) -> str:
    """The peer's IP address (without its port): the key of the per-client cap."""
    try:
        return str(connection.remote_address[0])
    except (OSError, TypeError, IndexError):
        return "unknown"


def _reason(text: str) -> str:
    """A close reason cut to fit its control frame."""
    data = text.encode()
    return text if len(data) <= CLOSE_REASON_BYTES else data[: CLOSE_REASON_BYTES - 3].decode(errors="ignore") + "..."


class PolicyServer:
    def __init__(
        self,
        policy,
        host: str = "127.0.0.1",
        port: int = 8000,
        max_message: int | None = None,
        *,
        max_connections: int | None = None,
        max_inflight: int | None = None,
        max_per_client: int | None = None,
        idle_timeout: float | None = None,
        resize: bool = False,
    ):
        from websockets.sync.server import serve

        defaults = ServerLimits()
        self.limits = ServerLimits(
            max_message or defaults.max_message_bytes,
            max_connections or defaults.max_connections,
            max_inflight or max(defaults.max_inflight_bytes, max_message or 0),
            defaults.max_per_client if max_per_client is None else max_per_client,
            defaults.idle_timeout_s if idle_timeout is None else idle_timeout,
        )
        self.policy = policy
        self.resize = resize
        self.lock = threading.Lock()  # one model, one inference at a time
        self.requests = self.errors = self.refused = self.idle_closed = 0
        self._inflight = _ByteBudget(self.limits.max_inflight_bytes)
        self._active = 0
        self._per_client: dict[str, int] = {}  # open connections by client IP address
        self._active_lock = threading.Lock()
        self._server = serve(
            self._handle,
            host,
            port,
            compression=None,
            max_size=self.limits.max_message_bytes,
            max_queue=1,  # one buffered message per connection: TCP back-pressure, not memory, holds the rest
            open_timeout=OPEN_TIMEOUT_S,
            ping_interval=PING_INTERVAL_S,
            ping_timeout=PING_TIMEOUT_S,
            close_timeout=SHUTDOWN_S,
            process_request=self._http,
            logger=_library_logger(),
        )
        self.host, self.port = self._server.socket.getsockname()[:2]

    # -- HTTP side: health, and refusing connections over the caps ------------------------------------------
    def _busy(self, client: str) -> str | None:
        """Why a new connection from `client` is over a cap now, or None."""
        if self._active >= self.limits.max_connections:
            return (
                f"server busy: {self._active} connections open (--max-connections {self.limits.max_connections}); "
                "retry later"
            )
        if self._per_client.get(client, 0) >= self.limits.max_per_client:
            return (
                f"too many connections from {client}: {self._per_client[client]} open "
                f"(--max-per-client {self.limits.max_per_client}); close one and retry"
            )
        return None

    def _http(self, connection, request):
        if request.path != "/healthz":
            why = self._busy(_client(connection))
            if why is not None:
                self.refused += 1
                return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, why + "\n")
            return None  # continues as a websocket handshake
        body = {
            "status": "ok",
            "requests": self.requests,
            "errors": self.errors,
            "refused": self.refused,
            "idle_closed": self.idle_closed,
            "connections": self._active,
            **self.policy.metadata,
        }
        response = connection.respond(HTTPStatus.OK, json.dumps(body) + "\n")
        response.headers["Content-Type"] = "application/json"
        return response

    # -- websocket side: metadata, then observation → actions ----------------------------------------------
    def _handle(self, connection) -> None:
        from websockets.exceptions import ConnectionClosed

        client = _client(connection)
        with self._active_lock:  # handshakes in the same instant all passed `_http`: the caps are checked again
            why = self._busy(client)
            self._active += 1
            self._per_client[client] = self._per_client.get(client, 0) + 1
        try:
            if why is not None:
                self.refused += 1
                connection.close(1013, _reason(why))
                return
            connection.send(pack(self.policy.metadata))
            while True:
                try:  # the whole next message, however it is fragmented, within the idle timeout
                    message = connection.recv(timeout=self.limits.idle_timeout_s)
                except TimeoutError:
                    self.idle_closed += 1
                    idle = f"{self.limits.idle_timeout_s:g}"
                    connection.close(1000, _reason(f"idle: no complete message in {idle} s (--idle-timeout {idle})"))
                    return
                size = len(message)
                if not self._inflight.take(size):
                    self.refused += 1
                    reply: bytes | str = (
                        "503 Service Unavailable: server busy "
                        f"({self.limits.max_inflight_bytes} bytes of requests in flight); retry later"
                    )
                else:
                    try:
                        reply = self.answer(message)
                    finally:
                        self._inflight.give(size)
                del message
                connection.send(reply)
        except ConnectionClosed:
            return  # the client left, timed out, or sent more than --max-message-mb (close code 1009)
        except OSError as e:
            log.info("connection from %s lost: %s", connection.remote_address, e)
        finally:
            with self._active_lock:
                self._active -= 1
                self._per_client[client] -= 1
                if not self._per_client[client]:
                    del self._per_client[client]

    def answer(self, message: bytes | str) -> bytes | str:
        """One request → the packed reply (bytes) or an error line (str)."""
        from latbot.policy import ObservationError

        self.requests += 1
        try:
            if isinstance(message, str):
                raise WireError("expected a binary msgpack message, got text")
            observation = unpack(message)
            t0 = time.perf_counter()
            with self.lock:
                actions = self.policy.predict(observation, strict=True, resize=self.resize)
            return pack({"actions": actions, "server_timing": {"infer_ms": (time.perf_counter() - t0) * 1e3}})
        except (WireError, ObservationError) as e:
            self.errors += 1
            return f"400 Bad Request: {e}"
        except Exception as e:  # a model failure must not take the server down; a bug report needs the trace
            self.errors += 1
            log.exception("inference failed (a bug: please report it with this log)")
            return f"500 Internal Server Error: {type(e).__name__}: {e}"

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def shutdown(self, timeout: float = 1.0) -> None:
        """Stop accepting, close every connection (1001) and return within about `timeout` seconds; a
        handler still inside the model is left to finish in its (daemon) thread."""
        stopper = threading.Thread(target=self._server.shutdown, daemon=True)
        stopper.start()
        stopper.join(timeout)

    def __enter__(self) -> PolicyServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
