"""The policy server: one `LatBotPolicy` loaded once, served over websockets.

Protocol (openpi's): on connect the server sends the policy's metadata (msgpack map); then each binary
message from the client is an observation (latbot.policy) and the answer is {"actions": (H, A) float32,
"server_timing": {"infer_ms": float}}. A request that cannot be served gets a text message
"400 Bad Request: <why>" (or "500 Internal Server Error: <why>") — openpi's client raises it as an
error — and the connection stays open for the next request. `GET /healthz` answers 200 with a JSON body.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http import HTTPStatus
from typing import Any

from latbot.serve.wire import WireError, pack, unpack

log = logging.getLogger("latbot.serve")
MAX_MESSAGE = 64 << 20  # bytes: a few cameras at full resolution fit easily


class PolicyServer:
    def __init__(self, policy, host: str = "127.0.0.1", port: int = 8000, max_message: int = MAX_MESSAGE):
        from websockets.sync.server import serve

        self.policy = policy
        self.lock = threading.Lock()  # one model, one inference at a time
        self.requests = self.errors = 0
        self._server = serve(
            self._handle,
            host,
            port,
            compression=None,
            max_size=max_message,
            process_request=self._http,
        )
        self.host, self.port = self._server.socket.getsockname()[:2]

    # -- HTTP side: health --------------------------------------------------------------------------------
    def _http(self, connection, request):
        if request.path == "/healthz":
            body = {"status": "ok", "requests": self.requests, "errors": self.errors, **self.policy.metadata}
            response = connection.respond(HTTPStatus.OK, json.dumps(body) + "\n")
            response.headers["Content-Type"] = "application/json"
            return response
        return None  # everything else continues as a websocket handshake

    # -- websocket side: metadata, then observation → actions ----------------------------------------------
    def _handle(self, connection) -> None:
        from websockets.exceptions import ConnectionClosed

        connection.send(pack(self.policy.metadata))
        while True:
            try:
                message = connection.recv()
            except ConnectionClosed:
                return
            reply = self.answer(message)
            try:
                connection.send(reply)
            except ConnectionClosed:
                return

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
                actions = self.policy.predict(observation)
            return pack({"actions": actions, "server_timing": {"infer_ms": (time.perf_counter() - t0) * 1e3}})
        except (WireError, ObservationError) as e:
            self.errors += 1
            return f"400 Bad Request: {e}"
        except Exception as e:  # a model failure must not take the server down
            self.errors += 1
            log.exception("inference failed")
            return f"500 Internal Server Error: {type(e).__name__}: {e}"

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def shutdown(self) -> None:
        self._server.shutdown()

    def __enter__(self) -> PolicyServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
