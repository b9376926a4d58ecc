"""Loader benchmark: random 16-frame clips from the same frames stored five ways, in one run.

    python tools/bench/bench_loader.py --out bench_loader.json            # the full run (224², 1080p case)
    python tools/bench/bench_loader.py --quick --out /tmp/quick.json      # seconds; used by the tests

Cases (all read the same clips, same frames, one process, one decoding thread — a DataLoader worker):
  zarr_<codec>     the episode store (Zarr v3, sharded, chunked along time), EpisodeStore.read
  raw_npy          one uncompressed .npy, memory-mapped: the physical limit of reading these bytes
  pyav_av1/h264    LeRobot-style mp4 per episode (GOP 2, yuv420p), seek + decode with PyAV
  decord_h264      the same h264 files with decord (skipped when the `decord` extra is absent)
  1080p_*          an EgoDex-like 1920×1080 h264 source decoded + resized to 224 per clip, vs the store
  store_<codec>_c<k> EpisodeStore.read_steps of the clip's frames: the fast reader (latbot/data/fastread.py)
                   over stores chunked k frames per chunk, what training reads; `_nocrc` without checksums
  clip_dataset_*   ClipDataset[i] (16 frames, actions, states, masks, text): a LAM training sample
  chunk_dataset_*  ChunkDataset[i] (one frame + an action chunk): a distillation/finetuning sample
Every case runs in each of `--rounds` interleaved rounds (case order reversed every other round); the
report gives the median per case (the machine is shared with other people's tests).
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


class Cases:
    """Benchmark cases, timed in interleaved rounds; the median per case is reported."""

    def __init__(self):
        self.fns: dict[str, tuple] = {}
        self.runs: dict[str, list[float]] = {}

    def add(self, name: str, fn, clips, nbytes: int) -> None:
        self.fns[name] = (fn, clips, nbytes)

    def run(self, rounds: int) -> dict[str, dict]:
        import statistics

        names = list(self.fns)
        for r in range(rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                fn, clips, _ = self.fns[name]
                self.runs.setdefault(name, []).append(timed(fn, clips))
        return {
            n: {"frames_per_s": statistics.median(v), "runs": v, "bytes": self.fns[n][2]} for n, v in self.runs.items()
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench_loader.json"))
    ap.add_argument("--episodes", type=int, default=6)
    ap.add_argument("--steps", type=int, default=160)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--clips", type=int, default=60)
    ap.add_argument("--clip-frames", type=int, default=16)
    ap.add_argument("--hd-steps", type=int, default=48, help="frames of the 1080p source")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are reported")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmark runs")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.episodes, args.steps, args.size, args.clips, args.hd_steps, args.rounds = 2, 40, 32, 6, 20, 1

    from latbot.data.clips import ChunkDataset, ClipDataset
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
    cases = Cases()

    # -- (a) the episode store, per codec and chunk length ----------------------------------------------------
    for codec, chunk in [("zstd", 8), ("lz4", 8), ("none", 8), ("lz4", 1), ("lz4", 2), ("lz4", 4), ("none", 1),
                         ("none", 2), ("none", 4)]:  # fmt: skip
        path = work / f"store_{codec}_c{chunk}"
        with EpisodeStore.create(
            path, cameras=["cam"], image_size=(size, size), codec=codec, chunk_frames=chunk
        ) as store:
            for e, f in enumerate(frames):
                traj = UnifiedTrajectory.empty(T)
                store.append(Episode(key=str(e), frames={"cam": f}, trajectory=traj, instruction="x"))
            finalize(store)
        nbytes = du(path / "frames")
        store = EpisodeStore.open(path)
        if chunk == 8:  # zarr-python itself: arr[a:b] (the pre-fast-reader read path)
            arr = store.array("frames/cam")
            recs = store.records
            cases.add(f"zarr_{codec}", lambda ep, s, arr=arr, r=recs: arr[r[ep].offset + s : r[ep].offset + s + K],
                      clips, nbytes)  # fmt: skip
        cases.add(
            f"store_{codec}_c{chunk}",
            lambda ep, s, st=store: st.read_steps("frames/cam", ep, slice(s, s + K)),
            clips,
            nbytes,
        )
        if codec == "lz4":
            unchecked = EpisodeStore.open(path, verify_checksums=False)
            cases.add(
                f"store_{codec}_c{chunk}_nocrc",
                lambda ep, s, st=unchecked: st.read_steps("frames/cam", ep, slice(s, s + K)),
                clips,
                nbytes,
            )
            clip_ds = ClipDataset(path, K)
            index = {(e, t): i for i, (e, t) in enumerate(clip_ds.starts)}
            cases.add(f"clip_dataset_lz4_c{chunk}", lambda ep, s, d=clip_ds, ix=index: d[ix[(ep, s)]]["frames"],
                      clips, nbytes)  # fmt: skip
            chunk_ds = ChunkDataset(path, 10, normalize=False)
            cases.add(f"chunk_dataset_lz4_c{chunk}", lambda ep, s, d=chunk_ds: d[ep * T + s]["frames"], clips, nbytes)
        got = store.read_steps("frames/cam", 1, slice(0, K))
        assert np.array_equal(got, frames[1][:K]), "store must return the exact frames"

    # -- (d) raw: memory-mapped uncompressed frames, the physical limit ------------------------------------
    raw_path = work / "raw.npy"
    np.save(raw_path, np.concatenate(frames))
    raw = np.load(raw_path, mmap_mode="r")
    os.sync()
    cases.add("raw_npy", lambda ep, s: np.array(raw[ep * T + s : ep * T + s + K]), clips, raw_path.stat().st_size)

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

        cases.add(f"pyav_{name}", read, clips, du(folder))

    # -- (c) decord on the h264 files ------------------------------------------------------------------------
    try:
        import decord

        readers = {}

        def read_decord(ep, s):
            if ep not in readers:
                readers[ep] = decord.VideoReader(str(work / "mp4_h264" / f"{ep}.mp4"), ctx=decord.cpu(0), num_threads=1)
            return readers[ep].get_batch(list(range(s, s + K))).asnumpy()

        cases.add("decord_h264", read_decord, clips, du(work / "mp4_h264"))
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

    cases.add("1080p_pyav_decode_resize", read_hd, hd_clips, hd_mp4.stat().st_size)
    hd_store = work / "store_hd"
    with EpisodeStore.create(hd_store, cameras=["cam"], image_size=(size, size)) as store:
        resized = np.stack([resize_frame(f, (size, size), "pad") for f in hd])
        store.append(
            Episode(key="hd", frames={"cam": resized}, trajectory=UnifiedTrajectory.empty(len(hd)), instruction="x")
        )
    arr = EpisodeStore.open(hd_store).array("frames/cam")
    hd_reader = EpisodeStore.open(hd_store)
    cases.add("1080p_zarr_zstd", lambda ep, s: arr[s : s + K], hd_clips, du(hd_store / "frames"))
    cases.add("1080p_store_zstd", lambda ep, s: hd_reader.read_rows("frames/cam", s, s + K), hd_clips,
              du(hd_store / "frames"))  # fmt: skip
    results.update(cases.run(args.rounds))
    fps = {n: r["frames_per_s"] for n, r in results.items() if "frames_per_s" in r}
    best = max((n for n in fps if n.startswith("store_lz4_c") and not n.endswith("nocrc")), key=fps.get)

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
    ratios |= {
        "best_store_lz4_case": best,
        "store_lz4_vs_pyav_h264": fps[best] / fps["pyav_h264"],
        "store_lz4_vs_raw": fps[best] / fps["raw_npy"],
        "store_none_vs_raw": max(fps[n] for n in fps if n.startswith("store_none_c")) / fps["raw_npy"],
        "store_lz4_c8_vs_zarr_lz4": fps["store_lz4_c8"] / fps["zarr_lz4"],
        "clip_dataset_vs_store_read": fps[best.replace("store_lz4", "clip_dataset_lz4")] / fps[best],
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
            "rounds": args.rounds,
            "order": "interleaved rounds, case order reversed every other round; medians",
            "machine_shared": "yes: 2 cores shared with other engineers' test runs",
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
        print(f"{name:<{width}}  {v:9.2f}" if isinstance(v, float) else f"{name:<{width}}  {v}")
    print(f"wrote {args.out}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
