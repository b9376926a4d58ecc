"""The frame-codec frontier of the episode store: bytes per frame, quality, and warm and cold reading speed per
codec, against PyAV/decord decoding h264 mp4s of the same frames and a memory-mapped raw .npy, in one run.

    python tools/bench/bench_codecs.py --out tools/bench/results/bench_codecs.json \
        --table-out tools/bench/results/bench_codecs_table.json                    # the full run (~4 min)
    python tools/bench/bench_codecs.py --quick --out /tmp/quick.json                 # seconds; used by the tests

Frames: natural-looking video, not noise: a large procedurally generated texture (1/f "pink" luminance and
chroma, the spectrum of natural images, with sharp-edged objects on it) seen by a camera that pans and zooms
smoothly over time, resampled bilinearly, plus Gaussian sensor noise (`--noise`, σ in 8-bit levels). Lossless
compression of camera frames depends mostly on that noise: the report records σ.

Cases (one process, one decoding thread — a DataLoader worker):
  store_<codec>[_c<k>]  EpisodeStore.read_steps (the fast reader, crc32c checked) over a store written with that
                        codec (none/lz4/zstd at 1 and 8 frames per chunk; png, qoi, webp-lossless,
                        jpegxl-lossless when imagecodecs has it, jpeg95, jpeg90: one image per chunk)
  pyav_h264             LeRobot-style mp4 per episode (libx264, crf 23, GOP 2, yuv420p) decoded with PyAV:
                        a clip is one seek + decode through it; strided and single frames seek per frame
  decord_h264           the same mp4s with decord (one VideoReader per file, kept), when importable
  raw_npy               one uncompressed .npy, memory-mapped, copied out: the physical limit
Access patterns: `clip` 16 contiguous frames, `strided` every 4th frame over 64 (16 frames), `single` one
random frame. frames/s counts the frames delivered.
Warm: the files are in the page cache (a warm-up read first). Cold: before each timed read, every file of the
case is evicted from the page cache with posix_fadvise(POSIX_FADV_DONTNEED) (untimed). That is best-effort:
it drops clean pages only (everything is synced after writing), and the fast reader keeps its open
descriptors and parsed shard indexes across reads, as a long-lived DataLoader worker does; the report checks
with mincore(2) how much of the raw file is still resident after an eviction (`eviction_check`).
Every case runs in each of `--rounds` interleaved rounds (order reversed every other round); medians are
reported (the machine is shared). Lossless codecs are asserted to round-trip exactly; lossy ones report PSNR.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loader import du

CLIP, STRIDE, STRIDED_SPAN = 16, 4, 64
FPS = 30
BYTE_CODECS = [("none", 1), ("none", 8), ("lz4", 1), ("lz4", 8), ("zstd", 1), ("zstd", 8)]
IMAGE_CODECS = ["png", "qoi", "webp-lossless", "jpegxl-lossless", "jpeg95", "jpeg90"]
PATTERNS = ("clip", "strided", "single")


# -- frames ----------------------------------------------------------------------------------------------------
def _pink(rng: np.random.Generator, n: int, beta: float) -> np.ndarray:
    """An n×n field with amplitude spectrum 1/f^beta (beta≈1: natural images), zero mean, unit std."""
    fy, fx = np.fft.fftfreq(n)[:, None], np.fft.rfftfreq(n)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    spectrum = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f**beta
    spectrum[0, 0] = 0
    field = np.fft.irfft2(spectrum, s=(n, n))
    return field / field.std()


def natural_texture(n: int, seed: int) -> np.ndarray:
    """An n×n×3 float RGB texture in [0, 255]: pink-noise luminance and chroma with sharp-edged objects."""
    rng = np.random.default_rng(seed)
    lum = 120 + 38 * _pink(rng, n, 1.0)
    cb, cr = 14 * _pink(rng, n, 1.4), 14 * _pink(rng, n, 1.4)
    yy, xx = np.mgrid[0:n, 0:n]
    for _ in range(max(4, n * n // 9000)):  # objects: flat-ish shapes with their own fine texture
        cy, cx = rng.uniform(0, n, 2)
        ry, rx = rng.uniform(0.015, 0.12, 2) * n
        inside = (
            ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
            if rng.random() < 0.5
            else (np.abs(yy - cy) < ry) & (np.abs(xx - cx) < rx)
        )
        lum[inside] = rng.uniform(30, 230) + 0.35 * (lum[inside] - 120)
        cb[inside], cr[inside] = rng.uniform(-40, 40), rng.uniform(-40, 40)
    rgb = np.stack([lum + 1.402 * cr, lum - 0.344 * cb - 0.714 * cr, lum + 1.772 * cb], -1)
    return rgb.clip(0, 255)


def natural_frames(t: int, h: int, w: int, seed: int, noise: float = 2.0) -> np.ndarray:
    """(t, h, w, 3) uint8: a camera panning and zooming smoothly over `natural_texture`, plus sensor noise σ."""
    from scipy.ndimage import map_coordinates

    rng = np.random.default_rng(seed + 1000)
    n = 3 * max(h, w)
    tex = natural_texture(n, seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy -= h / 2
    xx -= w / 2
    phase = rng.uniform(0, 2 * np.pi, 3)
    out = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        # pans of up to ~1 % of the image width per frame, zoom between 1.0× and 1.5× over 6 s, at 30 fps
        s = i / FPS
        zoom = 1.25 + 0.25 * math.sin(2 * math.pi * s / 6 + phase[0])
        cy = n / 2 + 0.5 * max(h, w) * math.sin(2 * math.pi * s / 13 + phase[1])
        cx = n / 2 + 0.5 * max(h, w) * math.sin(2 * math.pi * s / 11 + phase[2])
        coords = np.stack([cy + yy / zoom, cx + xx / zoom])
        img = np.stack([map_coordinates(tex[..., c], coords, order=1) for c in range(3)], -1)
        img += rng.normal(0, noise, img.shape)
        out[i] = img.round().clip(0, 255).astype(np.uint8)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


# -- the page cache ---------------------------------------------------------------------------------------------
def files_of(path: Path) -> list[Path]:
    return sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]


def evict(files: list[Path]) -> None:
    """Best-effort: drop each file's clean pages from the page cache (Linux; elsewhere cold = warm)."""
    if not hasattr(os, "posix_fadvise"):
        return
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_fraction(path: Path) -> float | None:
    """Fraction of `path`'s pages in the page cache (mincore(2)); None where it cannot be asked."""
    import ctypes
    import mmap

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        size = path.stat().st_size
        fd = os.open(path, os.O_RDONLY)
        try:
            addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            if addr in (None, ctypes.c_void_p(-1).value):
                return None
            pages = -(-size // mmap.PAGESIZE)
            vec = (ctypes.c_ubyte * pages)()
            ok = libc.mincore(ctypes.c_void_p(addr), size, vec) == 0
            libc.munmap(ctypes.c_void_p(addr), size)
        finally:
            os.close(fd)
        return sum(v & 1 for v in vec) / pages if ok else None
    except (OSError, AttributeError):
        return None


# -- timing ------------------------------------------------------------------------------------------------------
def warm(files: list[Path]) -> None:
    """Read every file whole, so that its pages are in the page cache."""
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(1 << 22):
                pass


def time_reads(fn, reads: list, files: list[Path], cold: bool, unmap=None, prefault=None, min_s: float = 0.0) -> float:
    """Frames per second over `reads` (repeated until `min_s` seconds of reading). Warm: the case's files are
    read into the page cache first (and a memory map's pages faulted in: `prefault()`), then one warm-up read.
    Cold: the files are evicted before each read, after `unmap()` has dropped a memory map's pages from this
    process (fadvise skips pages that are mapped); eviction is not timed."""
    if not cold:
        warm(files)
        if prefault is not None:
            prefault()
        fn(*reads[0])
    elapsed, frames = 0.0, 0
    while True:
        for args in reads:
            if cold:
                if unmap is not None:
                    unmap()
                evict(files)
            t0 = time.perf_counter()
            got = fn(*args)
            elapsed += time.perf_counter() - t0
            frames += len(got)
        if elapsed >= min_s:
            return frames / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench_codecs.json"))
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--steps", type=int, default=128, help="frames per episode (≥ 65)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--noise", type=float, default=2.0, help="sensor noise σ, 8-bit levels")
    ap.add_argument("--reads", type=int, default=12, help="timed clip/strided reads per case and round")
    ap.add_argument("--singles", type=int, default=60, help="timed single-frame reads per case and round")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are reported")
    ap.add_argument("--min-seconds", type=float, default=0.2, help="a timing repeats its reads at least this long")
    ap.add_argument("--codecs", default="", help="comma-separated subset of the store codecs (default: all)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmark runs")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument(
        "--table-out", type=Path, default=None, help="also write the bytes per frame as a `latbot plan --codec-table`"
    )
    args = ap.parse_args()
    if args.quick:
        args.episodes, args.steps, args.size, args.reads, args.singles, args.rounds = 2, 72, 32, 2, 4, 1
        args.min_seconds = 0.0

    from latbot.data import imagecodec
    from latbot.data.spaces import UnifiedTrajectory
    from latbot.data.store import DEFAULT_CHUNK_FRAMES, DEFAULT_CODEC, Episode, EpisodeStore
    from latbot.data.video import decode_frames, encode_video

    work = Path(tempfile.mkdtemp(prefix="bench_codecs_", dir=args.workdir))
    size, T, E = args.size, args.steps, args.episodes
    assert T > STRIDED_SPAN, "--steps must exceed the strided span (64)"
    t_start = time.perf_counter()
    frames = [natural_frames(T, size, size, seed=e, noise=args.noise) for e in range(E)]
    rng = np.random.default_rng(0)
    reads = {
        "clip": [(int(rng.integers(E)), int(rng.integers(T - CLIP + 1))) for _ in range(args.reads)],
        "strided": [(int(rng.integers(E)), int(rng.integers(T - STRIDED_SPAN + 1))) for _ in range(args.reads)],
        "single": [(int(rng.integers(E)), int(rng.integers(T))) for _ in range(args.singles)],
    }
    steps_of = {
        "clip": lambda s: np.arange(s, s + CLIP),
        "strided": lambda s: np.arange(s, s + STRIDED_SPAN, STRIDE),
        "single": lambda s: np.array([s]),
    }
    cases: dict[str, dict] = {}  # name → {"fns": {pattern: fn}, "files": [...], "bytes": int, extra}
    skipped: dict[str, str] = {}

    # -- the store, per codec ---------------------------------------------------------------------------------
    wanted = set(filter(None, args.codecs.split(",")))
    configs = [(c, k, f"store_{c}_c{k}") for c, k in BYTE_CODECS] + [(c, 1, f"store_{c}") for c in IMAGE_CODECS]
    for codec, chunk, name in configs:
        if wanted and codec not in wanted:
            continue
        if codec in IMAGE_CODECS and not imagecodec.available(codec):
            skipped[name] = "this imagecodecs build has no encoder for it"
            continue
        path = work / name
        t0 = time.perf_counter()
        with EpisodeStore.create(
            path, cameras=["cam"], image_size=(size, size), codec=codec, chunk_frames=chunk, shard_frames=256
        ) as store:
            for e, f in enumerate(frames):
                store.append(
                    Episode(key=str(e), frames={"cam": f}, trajectory=UnifiedTrajectory.empty(T), instruction="x")
                )
        write_s = time.perf_counter() - t0
        store = EpisodeStore.open(path)
        assert store._reader("frames/cam") is not None, f"{name}: must take the fast reader"
        back = [store.read_steps("frames/cam", e, slice(None)) for e in range(E)]
        quality = min(psnr(b, f) for b, f in zip(back, frames, strict=True))
        if imagecodec.is_lossless(codec):
            assert all(np.array_equal(b, f) for b, f in zip(back, frames, strict=True)), f"{name}: not lossless"
        cases[name] = {
            "codec": codec,
            "chunk_frames": chunk,
            "lossless": imagecodec.is_lossless(codec),
            "bytes": du(path / "frames"),
            "psnr_db": quality,
            "write_frames_per_s": E * T / write_s,
            "files": files_of(path / "frames"),
            "fns": {
                p: (lambda ep, s, st=store, p=p: st.read_steps("frames/cam", ep, steps_of[p](s))) for p in PATTERNS
            },
        }
        if codec in ("none", "lz4") and chunk == 1:  # the same reads without crc32c checks (what they cost)
            unchecked = EpisodeStore.open(path, verify_checksums=False)
            cases[f"{name}_nocrc"] = cases[name] | {
                "verify_checksums": False,
                "fns": {
                    p: (lambda ep, s, st=unchecked, p=p: st.read_steps("frames/cam", ep, steps_of[p](s)))
                    for p in PATTERNS
                },
            }

    # -- raw: memory-mapped uncompressed frames ------------------------------------------------------------------
    raw_path = work / "raw.npy"
    np.save(raw_path, np.concatenate(frames))
    raw = np.load(raw_path, mmap_mode="r")

    def unmap_raw():  # the memmap's faulted pages would pin the file's pages in the page cache
        import mmap

        raw._mmap.madvise(mmap.MADV_DONTNEED)

    def prefault_raw():  # a memmap in use has its pages mapped: no page faults in the timed reads
        np.add.reduce(raw[:, 0, 0, 0])  # one byte of every frame ...
        np.array(raw)  # ... and every page

    # basic slices (views) copied out: fancy indexing of a memmap is ~30× slower than the copy itself
    raw_slices = {
        "clip": lambda s: slice(s, s + CLIP),
        "strided": lambda s: slice(s, s + STRIDED_SPAN, STRIDE),
        "single": lambda s: slice(s, s + 1),
    }
    cases["raw_npy"] = {
        "unmap": unmap_raw,
        "prefault": prefault_raw,
        "bytes": raw_path.stat().st_size,
        "lossless": True,
        "psnr_db": math.inf,
        "files": [raw_path],
        "fns": {p: (lambda ep, s, p=p: np.array(raw[raw_slices[p](ep * T + s)])) for p in PATTERNS},
    }

    # -- h264 mp4s: PyAV and decord ----------------------------------------------------------------------------
    mp4 = work / "mp4_h264"
    mp4.mkdir()
    for e, f in enumerate(frames):
        encode_video(mp4 / f"{e}.mp4", f, FPS, codec="libx264", gop=2)
    decoded = np.stack(list(decode_frames(mp4 / "0.mp4", threaded=False)))
    h264_psnr = psnr(decoded, frames[0])

    def pyav_clip(ep, s):
        return list(decode_frames(mp4 / f"{ep}.mp4", s / FPS, (s + CLIP) / FPS, expected=CLIP, threaded=False))

    def pyav_seek_each(ep, idx):  # seek to each frame (GOP 2: at most one extra frame decoded per frame)
        import av

        out = []
        with av.open(str(mp4 / f"{ep}.mp4")) as container:
            stream = container.streams.video[0]
            for i in idx:
                target = i / FPS
                container.seek(int(max(0.0, target - 0.5) / stream.time_base), stream=stream, backward=True)
                for frame in container.decode(stream):
                    if frame.time is not None and frame.time >= target - 1e-4:
                        out.append(frame.to_ndarray(format="rgb24"))
                        break
        assert len(out) == len(idx)
        return out

    mp4_files = files_of(mp4)
    cases["pyav_h264"] = {
        "bytes": du(mp4),
        "lossless": False,
        "psnr_db": h264_psnr,
        "files": mp4_files,
        "fns": {
            "clip": pyav_clip,
            "strided": lambda ep, s: pyav_seek_each(ep, steps_of["strided"](s)),
            "single": lambda ep, s: pyav_seek_each(ep, [s]),
        },
    }
    try:
        import decord

        readers: dict[int, object] = {}

        def read_decord(ep, idx):
            if ep not in readers:
                readers[ep] = decord.VideoReader(str(mp4 / f"{ep}.mp4"), ctx=decord.cpu(0), num_threads=1)
            return readers[ep].get_batch([int(i) for i in idx]).asnumpy()

        cases["decord_h264"] = {
            "bytes": du(mp4),
            "lossless": False,
            "psnr_db": h264_psnr,
            "files": mp4_files,
            "fns": {p: (lambda ep, s, p=p: read_decord(ep, steps_of[p](s))) for p in PATTERNS},
        }
    except ImportError:
        skipped["decord_h264"] = "decord is not installed (pip install 'latbot[decord]')"

    os.sync()  # fadvise drops clean pages only
    probes = {"raw_npy": raw_path, "pyav_h264": mp4_files[0]}
    probes |= {n: c["files"][0] for n, c in cases.items() if n.startswith("store_")}
    eviction_check = {}
    for name, f in probes.items():  # read a file whole, evict it: what stays in the page cache
        c = cases[name]
        for p in PATTERNS:
            time_reads(c["fns"][p], reads[p][:2], c["files"], False, prefault=c.get("prefault"))
        before = resident_fraction(f)
        if c.get("unmap"):
            c["unmap"]()
        evict([f])
        eviction_check[name] = {"file": f.name, "resident_before": before, "resident_after_evict": resident_fraction(f)}

    # -- interleaved rounds ------------------------------------------------------------------------------------
    jobs = [(name, p, mode) for name in cases for p in PATTERNS for mode in ("warm", "cold")]
    runs: dict[tuple, list[float]] = {}
    for r in range(args.rounds):
        for name, p, mode in jobs if r % 2 == 0 else jobs[::-1]:
            c = cases[name]
            cold = mode == "cold"
            fps = time_reads(
                c["fns"][p], reads[p], c["files"], cold, c.get("unmap"), c.get("prefault"), args.min_seconds
            )
            runs.setdefault((name, p, mode), []).append(fps)

    n_frames = E * T
    results: dict[str, dict] = {}
    for name, c in cases.items():
        entry = {k: v for k, v in c.items() if k not in ("fns", "files", "unmap", "prefault")}
        entry["bytes_per_frame"] = c["bytes"] / n_frames
        entry["psnr_db"] = None if math.isinf(c["psnr_db"]) else c["psnr_db"]  # JSON: null = lossless (inf)
        for (n, p, mode), v in runs.items():
            if n == name:
                entry[f"{p}_{mode}_frames_per_s"] = statistics.median(v)
                entry[f"{p}_{mode}_runs"] = v
        results[name] = entry
    results |= {name: {"skipped": why} for name, why in skipped.items()}

    def fps(name, p="clip", mode="warm"):
        return results[name][f"{p}_{mode}_frames_per_s"]

    stores = [n for n in results if n.startswith("store_") and "skipped" not in results[n]]
    ratios: dict[str, dict] = {}
    for name in stores:
        ratios[name] = {
            f"vs_pyav_h264_{p}_{mode}": fps(name, p, mode) / fps("pyav_h264", p, mode)
            for p in PATTERNS
            for mode in ("warm", "cold")
        }
        ratios[name] |= {f"vs_raw_{p}_warm": fps(name, p) / fps("raw_npy", p) for p in PATTERNS}
        ratios[name]["bytes_vs_h264"] = results[name]["bytes"] / results["pyav_h264"]["bytes"]
    lossless = [n for n in stores if results[n]["lossless"]]
    smallest = min(lossless, key=lambda n: results[n]["bytes"]) if lossless else None
    default = f"store_{DEFAULT_CODEC}_c{DEFAULT_CHUNK_FRAMES}"
    default = default if default in results else f"store_{DEFAULT_CODEC}"
    targets: dict[str, dict] = {}
    if default in results and "skipped" not in results[default]:
        h264 = "pyav_h264"
        for mode, bound in (("warm", 30.0), ("cold", 3.0)):
            value = fps(default, "clip", mode) / fps(h264, "clip", mode)
            targets[f"store_vs_pyav_h264_clip_{mode}"] = {"case": default, "value": value, "target": f">= {bound}",
                                                           "met": value >= bound}  # fmt: skip
    for name in ("store_none_c1", "store_none_c1_nocrc"):
        if name in results and "skipped" not in results[name]:
            value = fps(name) / fps("raw_npy")
            targets[f"uncompressed_store_vs_raw_clip_warm{name[len('store_none_c1') :]}"] = {
                "case": name, "value": value, "target": ">= 0.5", "met": value >= 0.5
            }  # fmt: skip
    if smallest:
        value = results[smallest]["bytes"] / results["pyav_h264"]["bytes"]
        targets["lossless_bytes_vs_h264_bytes"] = {
            "case": smallest,
            "value": value,
            "target": "<= 10",
            "met": value <= 10,
        }
    report = {
        "benchmark": "bench_codecs",
        "setup": {
            "episodes": E,
            "steps": T,
            "size": size,
            "frames": "natural_frames: pink-noise texture with objects, panned and zoomed, + Gaussian sensor noise",
            "noise_sigma": args.noise,
            "patterns": {
                "clip": f"{CLIP} contiguous",
                "strided": f"every {STRIDE}th over {STRIDED_SPAN}",
                "single": "1",
            },
            "reads": args.reads,
            "singles": args.singles,
            "rounds": args.rounds,
            "min_seconds_per_timing": args.min_seconds,
            "h264": "libx264 crf 23 (default), GOP 2, yuv420p, one mp4 per episode",
            "cold": "posix_fadvise(DONTNEED) on every file of the case before each timed read (best-effort)",
            "quick": args.quick,
            "order": "interleaved rounds, case order reversed every other round; medians",
            "machine_shared": "yes: 2 cores shared with other engineers' jobs",
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "seconds": None,
        },
        "eviction_check": eviction_check,
        "results": results,
        "ratios": ratios,
        "defaults": {"codec": DEFAULT_CODEC, "chunk_frames": DEFAULT_CHUNK_FRAMES},
        "targets": targets,
    }
    report["setup"]["seconds"] = time.perf_counter() - t_start
    if args.table_out is not None:  # latbot plan --codec-table: store codec → bytes of one camera frame
        per = {}
        for name in stores:
            r = results[name]
            if r.get("verify_checksums", True) and r["chunk_frames"] == DEFAULT_CHUNK_FRAMES:
                per[r["codec"]] = r["bytes_per_frame"]
        source = f"tools/bench/bench_codecs.py: frames/ bytes / {n_frames} frames of {size}² natural_frames "
        source += f"(sensor noise σ={args.noise}), chunk_frames {DEFAULT_CHUNK_FRAMES}"
        table = {"image_size": size, "bytes_per_frame": per, "source": source}
        args.table_out.write_text(json.dumps(table, indent=2) + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown_table(results))
    left = max((v["resident_after_evict"] or 0.0) for v in eviction_check.values())
    print(f"page cache after an eviction: at most {left:.1%} of a file still resident (mincore)")
    for name, t in targets.items():
        print(f"{name}: {t['value']:.2f} ({t['case']}; target {t['target']}: {'met' if t['met'] else 'MISSED'})")
    print(f"wrote {args.out} ({report['setup']['seconds']:.0f} s)")
    shutil.rmtree(work, ignore_errors=True)


def markdown_table(results: dict[str, dict]) -> str:
    head = "| case | bytes/frame | PSNR dB | " + " | ".join(f"{p} warm | {p} cold" for p in PATTERNS) + " |"
    lines = [head, "|" + "---|" * (3 + 2 * len(PATTERNS))]
    for name, r in results.items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} |")
            continue
        q = "∞ (lossless)" if r["psnr_db"] is None else f"{r['psnr_db']:.1f}"
        cells = " | ".join(f"{r[f'{p}_warm_frames_per_s']:,.0f} | {r[f'{p}_cold_frames_per_s']:,.0f}" for p in PATTERNS)
        lines.append(f"| {name} | {r['bytes_per_frame'] / 1e3:,.1f} kB | {q} | {cells} |")
    return "\n".join(lines) + "\n(frames/s, medians over rounds)"


if __name__ == "__main__":
    main()
