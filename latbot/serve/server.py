"""The policy server: one `LatBotPolicy` loaded once, served over websockets.

Protocol (openpi's): on connect the server sends the policy's metadata (msgpack map); then each binary
message from the client is an observation (latbot.policy) and the answer is {"actions": (H, A) float32,
"server_timing": {"infer_ms": float}}. A request that cannot be served gets a text message
"400 Bad Request: <why>" (or "500 Internal Server Error: <why>") — openpi's client raises it as an
error — and the connection stays open for the next request. `GET /healthz` answers 200 with a JSON body.

Limits (`ServerLimits`, `latbot serve --max-message-mb/--max-connections/--max-inflight-mb`): a message
larger than `max_message_bytes` closes its connection with code 1009 before it is buffered; a connection
beyond `max_connections` is refused with HTTP 503; a request arriving while `max_inflight_bytes` of
received requests wait for the model is answered "503 Service Unavailable" (retry later). Each connection
buffers at most one message (`max_queue=1`: the socket applies back-pressure), so memory stays below
about max_connections × max_message_bytes plus the model. Observations are checked strictly
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
SHUTDOWN_S = 0.5  # close handshake allowance per connection on shutdown


@dataclass(frozen=True)
class ServerLimits:
    max_message_bytes: int = MAX_MESSAGE
    max_connections: int = 16
    max_inflight_bytes: int = 256 << 20

    def __post_init__(self) -> None:
        for name, lo, hi in (
            ("max_message_bytes", 1 << 10, 1 << 32),
            ("max_connections", 1, 10_000),
            ("max_inflight_bytes", 1 << 10, 1 << 40),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise LatBotError(f"server limit {name} must be an integer in [{lo}, {hi}], got {value!r}")
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
        resize: bool = False,
    ):
        from websockets.sync.server import serve

        defaults = ServerLimits()
        self.limits = ServerLimits(
            max_message or defaults.max_message_bytes,
            max_connections or defaults.max_connections,
            max_inflight or max(defaults.max_inflight_bytes, max_message or 0),
        )
        self.policy = policy
        self.resize = resize
        self.lock = threading.Lock()  # one model, one inference at a time
        self.requests = self.errors = self.refused = 0
        self._inflight = _ByteBudget(self.limits.max_inflight_bytes)
        self._active = 0
        self._active_lock = threading.Lock()
        self._server = serve(
            self._handle,
            host,
            port,
            compression=None,
            max_size=self.limits.max_message_bytes,
            max_queue=1,  # one buffered message per connection: TCP back-pressure, not memory, holds the rest
            close_timeout=SHUTDOWN_S,
            process_request=self._http,
            logger=_library_logger(),
        )
        self.host, self.port = self._server.socket.getsockname()[:2]

    # -- HTTP side: health, and refusing connections over the cap -------------------------------------------
    def _http(self, connection, request):
        if request.path != "/healthz" and self._active >= self.limits.max_connections:
            self.refused += 1
            return connection.respond(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"server busy: {self._active} connections open (--max-connections {self.limits.max_connections}); "
                "retry later\n",
            )
        if request.path == "/healthz":
            body = {
                "status": "ok",
                "requests": self.requests,
                "errors": self.errors,
                "refused": self.refused,
                "connections": self._active,
                **self.policy.metadata,
            }
            response = connection.respond(HTTPStatus.OK, json.dumps(body) + "\n")
            response.headers["Content-Type"] = "application/json"
            return response
        return None  # everything else continues as a websocket handshake

    # -- websocket side: metadata, then observation → actions ----------------------------------------------
    def _handle(self, connection) -> None:
        from websockets.exceptions import ConnectionClosed

        with self._active_lock:
            self._active += 1
            over = self._active > self.limits.max_connections
        try:
            if over:  # opened in the same instant as others: past the cap after all
                self.refused += 1
                connection.close(1013, "server busy: too many connections; retry later")
                return
            connection.send(pack(self.policy.metadata))
            while True:
                message = connection.recv()
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
