"""Read throughput of an episode store on object storage vs local disk: the same store, three ways.

    python tools/bench/bench_object_store.py --out tools/bench/results/bench_object_store.json
    python tools/bench/bench_object_store.py --quick --out /tmp/quick.json      # seconds

Cases (all read the same random 16-frame clips through `ClipDataset[i]`, what LAM training reads, one process):
  local      a directory: the fast reader (latbot/data/fastread.py, pread on the shard files)
  file_url   the same directory as file://: zarr's own pipeline through fsspec (FsspecStore), no network;
             isolates what leaving the fast reader costs
  s3_moto    the same store uploaded to an S3-compatible server on 127.0.0.1: moto (`moto_server`, a
             separate process), read through s3fs + zarr's FsspecStore
Also: the time to open the store (commit log, group and array metadata), per case.

moto is an in-process emulator written in Python, on loopback: it has no network latency (real S3: tens of
ms to the first byte of each GET, and per-connection bandwidth limits) and its own Python overhead per
request. The numbers say what the zarr/fsspec pipeline costs here, not what a bucket in a region delivers;
measure against your own bucket with `--s3-url s3://bucket/prefix` (credentials and endpoint from the
environment, docs/data.md "Stores on object storage").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loader import camera_like_frames


def build_store(path: Path, episodes: int, steps: int, size: int) -> None:
    from latbot.data.convert import finalize
    from latbot.data.spaces import UnifiedTrajectory, fill_arm
    from latbot.data.store import Episode, EpisodeStore

    rng = np.random.default_rng(0)
    with EpisodeStore.create(path, cameras=["cam"], image_size=(size, size)) as store:
        for e in range(episodes):
            traj = UnifiedTrajectory.empty(steps)
            fill_arm(traj, "right", position=np.cumsum(rng.normal(size=(steps, 3)), 0), gripper=rng.uniform(size=steps))
            frames = {"cam": camera_like_frames(steps, size, size, e)}
            store.append(Episode(key=f"ep{e}", frames=frames, trajectory=traj, instruction="reach"))
        finalize(store)


def start_moto() -> tuple[subprocess.Popen, str]:
    """`moto_server` on 127.0.0.1 at a free port, in its own process (so it does not share our GIL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto_server did not start within 30 s")


def clip_rate(location: str, clips: list[int], num_frames: int) -> tuple[float, float]:
    """(frames/s, seconds to open) reading `clips` (indices) through a fresh ClipDataset."""
    from latbot.data.clips import ClipDataset

    t0 = time.perf_counter()
    ds = ClipDataset(location, num_frames)
    ds[clips[0]]  # opens the store in this process (what a DataLoader worker does first)
    opened = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in clips[1:]:
        ds[i]
    return (len(clips) - 1) * num_frames / (time.perf_counter() - t0), opened


def request_times(fs, root: str, local: Path) -> dict[str, float]:
    """ms per GET on the server: a frame chunk's byte range inside a shard object (what zarr asks for), and a
    whole object of the same size. On moto the first costs several times the second (it slices the whole
    object in Python); on S3 both are one ranged/whole GET of the same bytes."""
    shard = next(p for p in sorted((local / "frames/cam").rglob("*")) if p.is_file() and p.name != "zarr.json")
    rel = shard.relative_to(local).as_posix()
    nbytes = min(shard.stat().st_size // 32, 4 << 20)
    fs.pipe_file(f"{root}/_probe", b"\0" * nbytes)
    out = {}
    for name, get in (
        ("range_get_in_shard_ms", lambda: fs.cat_file(f"{root}/{rel}", start=nbytes, end=2 * nbytes)),
        ("whole_get_same_bytes_ms", lambda: fs.cat_file(f"{root}/_probe")),
    ):
        get()
        t0 = time.perf_counter()
        for _ in range(10):
            get()
        out[name] = (time.perf_counter() - t0) * 100
    fs.rm_file(f"{root}/_probe")
    return out | {"bytes": nbytes, "shard_bytes": shard.stat().st_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench_object_store.json"))
    ap.add_argument("--episodes", type=int, default=6)
    ap.add_argument("--steps", type=int, default=160)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--clip-frames", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    ap.add_argument("--s3-url", default=None, help="an existing s3:// prefix to measure instead of moto")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmark runs")
    args = ap.parse_args()
    if args.quick:
        args.episodes, args.steps, args.size, args.clips, args.rounds = 2, 40, 32, 6, 1

    work = Path(tempfile.mkdtemp(prefix="bench_object_store_"))
    local = work / "store"
    build_store(local, args.episodes, args.steps, args.size)
    moto = None
    if args.s3_url is None:
        moto, endpoint = start_moto()
        os.environ.update(
            AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
        )  # fmt: skip
    try:
        import fsspec

        s3_url = (args.s3_url or "s3://latbot-bench").rstrip("/") + "/store"
        fs, root = fsspec.core.url_to_fs(s3_url)
        if args.s3_url is None:
            fs.mkdir(root.split("/")[0])
        t0 = time.perf_counter()
        fs.put(str(local) + "/", root, recursive=True)
        upload_s = time.perf_counter() - t0
        requests = request_times(fs, root, local)
        print("requests:", requests, flush=True)
        cases = {"local": str(local), "file_url": f"file://{local}", "s3_moto" if moto else "s3": s3_url}

        from latbot.data.clips import ClipDataset

        n = len(ClipDataset(str(local), args.clip_frames))
        clips = np.random.default_rng(1).integers(0, n, args.clips).tolist()
        rates: dict[str, list[float]] = {c: [] for c in cases}
        opens: dict[str, list[float]] = {c: [] for c in cases}
        for r in range(args.rounds):
            order = list(cases) if r % 2 == 0 else list(reversed(cases))
            for name in order:
                fps, opened = clip_rate(cases[name], clips, args.clip_frames)
                rates[name].append(fps)
                opens[name].append(opened)
                print(f"round {r} {name:9s} {fps:9.0f} frames/s  open {opened * 1000:7.1f} ms", flush=True)
        nbytes = sum(p.stat().st_size for p in local.rglob("*") if p.is_file())
        results = {
            name: {
                "frames_per_s": float(np.median(rates[name])),
                "clips_per_s": float(np.median(rates[name])) / args.clip_frames,
                "open_ms": 1000 * float(np.median(opens[name])),
                "rounds": [round(v, 1) for v in rates[name]],
            }
            for name in cases
        }
        base = results["local"]["frames_per_s"]
        report = {
            "what": "random 16-frame clips through ClipDataset[i], one process; same store local / file:// / S3",
            "note": (
                "s3_moto is moto_server (a Python S3 emulator) on 127.0.0.1: no network latency, its own "
                "per-request overhead; it measures the zarr/fsspec/s3fs pipeline, not real S3 latency or bandwidth"
                if moto
                else f"measured against {args.s3_url}"
            ),
            "config": {k: v for k, v in vars(args).items() if k != "out"} | {"store_bytes": nbytes},
            "upload_s": upload_s,
            "server_requests": requests,
            "results": results,
            "ratio_to_local": {name: results[name]["frames_per_s"] / base for name in cases},
            "machine": {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "date": time.strftime("%Y-%m-%d"),
            },
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report["ratio_to_local"], indent=1))
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(10)
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
