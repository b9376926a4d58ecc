"""A small Python client for `latbot serve` (openpi's `WebsocketClientPolicy` works too)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from latbot.serve.wire import pack, unpack


class ServerError(RuntimeError):
    """The server refused a request (400) or failed on it (500); the message says why."""


class PolicyClient:
    def __init__(self, host: str = "127.0.0.1", port: int = 8000, timeout: float = 30.0):
        from contextlib import ExitStack

        from websockets.sync.client import connect

        self.url = f"ws://{host}:{port}"
        self.health_url = f"http://{host}:{port}/healthz"
        self._stack = ExitStack()
        self._ws = self._stack.enter_context(connect(self.url, compression=None, max_size=None, open_timeout=timeout))
        self.metadata: dict[str, Any] = unpack(self._ws.recv(timeout=timeout))

    def infer(self, observation: dict[str, Any]) -> dict[str, Any]:
        """The server's whole reply: {"actions": (H, A), "server_timing": {...}}."""
        self._ws.send(pack(observation))
        reply = self._ws.recv()
        if isinstance(reply, str):
            raise ServerError(reply)
        return unpack(reply)

    def predict(self, observation: dict[str, Any]) -> np.ndarray:
        return self.infer(observation)["actions"]

    def health(self) -> dict[str, Any]:
        from urllib.request import urlopen

        with urlopen(self.health_url, timeout=10) as r:
            return json.loads(r.read())

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
