"""Loader benchmark: random 16-frame clips from the same frames stored five ways, in one run.

    python tools/bench/bench_loader.py --out bench_loader.json            # the full run (224², 1080p case)
    python tools/bench/bench_loader.py --quick --out /tmp/quick.json      # seconds; used by the tests

Cases (all read the same clips, same frames, one process, one decoding thread — a DataLoader worker):
  zarr_<codec>     the episode store (Zarr v3, sharded, chunked along time), EpisodeStore.read
  raw_npy          one uncompressed .npy, memory-mapped: the physical limit of reading these bytes
  pyav_av1/h264    LeRobot-style mp4 per episode (GOP 2, yuv420p), seek + decode with PyAV
  decord_h264      the same h264 files with decord (skipped when the `decord` extra is absent)
  1080p_*          an EgoDex-like 1920×1080 h264 source decoded + resized to 224 per clip, vs the store
Reported: frames/s per case, bytes on disk per case, and the ratios zarr/pyav and zarr/raw.
Frames are synthetic camera-like images (smooth scene + sensor noise), so compression ratios are
realistic for real cameras (≈1–1.5× lossless), not for flat simulator renders.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def camera_like_frames(t: int, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    frames = np.empty((t, h, w, 3), np.uint8)
    phase = rng.uniform(0, 6, 3)
    for i in range(t):
        scene = np.stack([np.sin(6 * xx + phase[c] + 0.05 * i) * np.cos(4 * yy - 0.03 * i) for c in range(3)], -1)
        img = 110 + 70 * scene + rng.normal(0, 8, (h, w, 3))
        frames[i] = img.clip(0, 255).astype(np.uint8)
    return frames


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def timed(fn, clips) -> float:
    """frames per second over `clips` (a warm-up clip first)."""
    fn(*clips[0])
    t0 = time.perf_counter()
    n = sum(len(fn(ep, start)) for ep, start in clips)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench_loader.json"))
    ap.add_argument("--episodes", type=int, default=6)
    ap.add_argument("--steps", type=int, default=160)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--clips", type=int, default=60)
    ap.add_argument("--clip-frames", type=int, default=16)
    ap.add_argument("--hd-steps", type=int, default=48, help="frames of the 1080p source")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmark runs")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.episodes, args.steps, args.size, args.clips, args.hd_steps = 2, 40, 32, 6, 20

    from latbot.data.convert import finalize
    from latbot.data.spaces import UnifiedTrajectory
    from latbot.data.store import Episode, EpisodeStore
    from latbot.data.video import decode_frames, encode_video, resize_frame

    work = Path(tempfile.mkdtemp(prefix="bench_loader_", dir=args.workdir))
    size, T, K = args.size, args.steps, args.clip_frames
    rng = np.random.default_rng(0)
    frames = [camera_like_frames(T, size, size, seed=e) for e in range(args.episodes)]
    clips = [(int(rng.integers(args.episodes)), int(rng.integers(T - K))) for _ in range(args.clips)]
    results: dict[str, dict] = {}

    # -- (a) the episode store, per codec -----------------------------------------------------------------
    for codec in ("zstd", "lz4", "none"):
        path = work / f"store_{codec}"
        with EpisodeStore.create(path, cameras=["cam"], image_size=(size, size), codec=codec) as store:
            for e, f in enumerate(frames):
                store.append(
                    Episode(key=str(e), frames={"cam": f}, trajectory=UnifiedTrajectory.empty(T), instruction="x")
                )
            finalize(store)
        store = EpisodeStore.open(path)
        arr = store.array("frames/cam")
        fps = timed(
            lambda ep, s, arr=arr, store=store: arr[store.records[ep].offset + s : store.records[ep].offset + s + K],
            clips,
        )
        results[f"zarr_{codec}"] = {"frames_per_s": fps, "bytes": du(path / "frames")}
        got = arr[store.records[1].offset : store.records[1].offset + K]
        assert np.array_equal(got, frames[1][:K]), "store must return the exact frames"

    # -- (d) raw: memory-mapped uncompressed frames, the physical limit ------------------------------------
    raw_path = work / "raw.npy"
    np.save(raw_path, np.concatenate(frames))
    raw = np.load(raw_path, mmap_mode="r")
    os.sync()
    results["raw_npy"] = {
        "frames_per_s": timed(lambda ep, s: np.array(raw[ep * T + s : ep * T + s + K]), clips),
        "bytes": raw_path.stat().st_size,
    }

    # -- (b) LeRobot-style mp4 per episode, decoded with PyAV -----------------------------------------------
    fps_video = 30
    for codec, name in (("libsvtav1", "av1"), ("libx264", "h264")):
        folder = work / f"mp4_{name}"
        folder.mkdir()
        for e, f in enumerate(frames):
            encode_video(folder / f"{e}.mp4", f, fps_video, codec=codec, gop=2)

        def read(ep, s, folder=folder):
            return list(
                decode_frames(
                    folder / f"{ep}.mp4", start=s / fps_video, stop=(s + K) / fps_video, expected=K, threaded=False
                )
            )

        results[f"pyav_{name}"] = {"frames_per_s": timed(read, clips), "bytes": du(folder)}

    # -- (c) decord on the h264 files ------------------------------------------------------------------------
    try:
        import decord

        readers = {}

        def read_decord(ep, s):
            if ep not in readers:
                readers[ep] = decord.VideoReader(str(work / "mp4_h264" / f"{ep}.mp4"), ctx=decord.cpu(0), num_threads=1)
            return readers[ep].get_batch(list(range(s, s + K))).asnumpy()

        results["decord_h264"] = {"frames_per_s": timed(read_decord, clips), "bytes": du(work / "mp4_h264")}
    except ImportError:
        results["decord_h264"] = {"skipped": "decord not installed (pip install 'latbot[decord]')"}

    # -- 1080p source (EgoDex-like) → 224 clips -----------------------------------------------------------
    hd = camera_like_frames(args.hd_steps, 1080 if not args.quick else 108, 1920 if not args.quick else 192, seed=99)
    hd_mp4 = work / "hd.mp4"
    encode_video(hd_mp4, hd, fps_video, codec="libx264", gop=2)
    hd_clips = [(0, int(rng.integers(args.hd_steps - K + 1))) for _ in range(max(3, args.clips // 6))]

    def read_hd(ep, s):
        src = decode_frames(hd_mp4, start=s / fps_video, stop=(s + K) / fps_video, expected=K, threaded=False)
        return [resize_frame(f, (size, size), "pad") for f in src]

    results["1080p_pyav_decode_resize"] = {"frames_per_s": timed(read_hd, hd_clips), "bytes": hd_mp4.stat().st_size}
    hd_store = work / "store_hd"
    with EpisodeStore.create(hd_store, cameras=["cam"], image_size=(size, size)) as store:
        resized = np.stack([resize_frame(f, (size, size), "pad") for f in hd])
        store.append(
            Episode(key="hd", frames={"cam": resized}, trajectory=UnifiedTrajectory.empty(len(hd)), instruction="x")
        )
    arr = EpisodeStore.open(hd_store).array("frames/cam")
    results["1080p_zarr_zstd"] = {
        "frames_per_s": timed(lambda ep, s: arr[s : s + K], hd_clips),
        "bytes": du(hd_store / "frames"),
    }

    z = results["zarr_zstd"]["frames_per_s"]
    ratios = {
        "zarr_zstd_vs_pyav_av1": z / results["pyav_av1"]["frames_per_s"],
        "zarr_zstd_vs_pyav_h264": z / results["pyav_h264"]["frames_per_s"],
        "zarr_zstd_vs_raw": z / results["raw_npy"]["frames_per_s"],
        "zarr_zstd_vs_zarr_uncompressed": z / results["zarr_none"]["frames_per_s"],
        "zarr_lz4_vs_pyav_h264": results["zarr_lz4"]["frames_per_s"] / results["pyav_h264"]["frames_per_s"],
        "zarr_lz4_vs_zarr_uncompressed": results["zarr_lz4"]["frames_per_s"] / results["zarr_none"]["frames_per_s"],
        "1080p_zarr_vs_pyav": results["1080p_zarr_zstd"]["frames_per_s"]
        / results["1080p_pyav_decode_resize"]["frames_per_s"],
        "compression_zstd": results["raw_npy"]["bytes"] / results["zarr_zstd"]["bytes"],
        "mp4_av1_vs_zarr_zstd_bytes": results["zarr_zstd"]["bytes"] / results["pyav_av1"]["bytes"],
    }
    if "frames_per_s" in results["decord_h264"]:
        ratios["zarr_zstd_vs_decord_h264"] = z / results["decord_h264"]["frames_per_s"]
    report = {
        "benchmark": "bench_loader",
        "setup": {
            "episodes": args.episodes,
            "steps": T,
            "size": size,
            "clip_frames": K,
            "clips": args.clips,
            "hd_steps": args.hd_steps,
            "quick": args.quick,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "results": results,
        "ratios": ratios,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    width = max(map(len, results))
    for name, r in results.items():
        line = f"{r['frames_per_s']:9.0f} frames/s  {r['bytes'] / 1e6:8.2f} MB" if "frames_per_s" in r else r["skipped"]
        print(f"{name:<{width}}  {line}")
    for name, v in ratios.items():
        print(f"{name:<{width}}  {v:9.2f}")
    print(f"wrote {args.out}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
