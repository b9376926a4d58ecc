"""Peak memory of `latbot serve` under many large concurrent requests (loopback only, bounded).

A server process (the real `PolicyServer`, with a stand-in policy that answers zeros, so the model's own
memory is not measured) is started on 127.0.0.1; N clients connect at once and each sends one message
of SIZE MB (a valid observation holding one huge image, so the server has to decode it to refuse it);
the server's peak RSS (VmHWM) is read from /proc when all clients are done. Scenarios: 30 × 60 MB (the
issue's), and 30 × 30 MB (under the default 32 MiB message limit, so the connection cap and the
one-message-per-connection queue are what bound memory).

    python tools/bench/bench_server_memory.py                   # → tools/bench/results/server_memory.json
    PYTHONPATH=/path/to/old/checkout python tools/bench/bench_server_memory.py --label before --out ...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
MAX_CLIENTS = 64  # bounded: this is a benchmark on loopback, not a load generator
MAX_SECONDS = 180


class ZeroPolicy:
    """Answers every valid observation with zeros; checks nothing (the server's limits are measured)."""

    metadata: ClassVar[dict] = {"cameras": ["corner"], "image_size": [64, 64], "state_dim": 4, "action_dim": 4}

    def predict(self, observation, **kwargs):
        return np.zeros((4, 4), np.float32)


def serve(port_file: Path) -> None:
    import signal

    from latbot.serve.server import PolicyServer

    server = PolicyServer(ZeroPolicy(), port=0)
    port_file.write_text(str(server.port))
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def observation_bytes(size_mb: float) -> bytes:
    from latbot.serve.wire import pack

    side = int((size_mb * (1 << 20) / 3) ** 0.5)
    image = np.zeros((side, side, 3), np.uint8)
    return pack({"images": {"corner": image}, "state": np.zeros(4, np.float32), "instruction": "reach"})


def scenario(clients: int, size_mb: float) -> dict:
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    clients = min(clients, MAX_CLIENTS)
    port_file = Path(f"/tmp/latbot-bench-port-{os.getpid()}")
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port_file)])
    try:
        deadline = time.time() + 60
        while not port_file.exists() or not port_file.read_text():
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("server did not start")
            time.sleep(0.1)
        port = int(port_file.read_text())
        baseline = peak_rss_mb(proc.pid)
        message = observation_bytes(size_mb)
        outcomes: list[str] = []
        lock = threading.Lock()
        start = threading.Barrier(clients)

        def client() -> None:
            waited = False
            try:
                with connect(f"ws://127.0.0.1:{port}", max_size=None, open_timeout=30, close_timeout=5) as ws:
                    ws.recv(timeout=30)
                    waited = True
                    start.wait(timeout=60)  # every client connected (or refused): send all at once
                    ws.send(message)
                    reply = ws.recv(timeout=MAX_SECONDS / 2)
                    result = "answered" if isinstance(reply, bytes) else reply.split(":")[0]
            except InvalidStatus as e:
                result = f"refused HTTP {e.response.status_code}"
            except ConnectionClosed as e:
                result = f"closed {e.rcvd.code if e.rcvd else 'abnormally'}"
            except Exception as e:  # a timeout or reset is an outcome to report, not a crash of the bench
                result = type(e).__name__
            if not waited:
                try:
                    start.wait(timeout=60)
                except threading.BrokenBarrierError:
                    pass
            with lock:
                outcomes.append(result)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=MAX_SECONDS)
        seconds = time.perf_counter() - t0
        peak = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        t_term = time.perf_counter()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        stop_s = time.perf_counter() - t_term
        port_file.unlink(missing_ok=True)
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o] = counts.get(o, 0) + 1
    return {
        "clients": clients,
        "message_mb": round(len(message) / (1 << 20), 1),
        "server_rss_baseline_mb": round(baseline, 1),
        "server_peak_rss_mb": round(peak, 1),
        "outcomes": counts,
        "seconds": round(seconds, 2),
        "sigterm_to_exit_s": round(stop_s, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--label", default="after")
    ap.add_argument("--out", type=Path, default=RESULTS / "server_memory.json")
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    import latbot.serve.server as mod

    rows = []
    for clients, size in ((30, 60.0), (30, 30.0)):
        row = {"label": args.label, "server_module": mod.__file__, **scenario(clients, size)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    old = json.loads(args.out.read_text()) if args.out.exists() else []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([r for r in old if r.get("label") != args.label] + rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
