"""Check that LeRobot itself reads what `latbot data export --format lerobot` writes, and record what it read.

    .venv/bin/python tools/lerobot_dataset_check/check.py export /tmp/lerobot-check
        project venv: writes a small LeRobot v3.0 source (two cameras, episodes of 9, 14 and 11 frames at 15 Hz,
        one with two subtasks), converts it with `latbot data convert` into /tmp/lerobot-check/store, and
        exports that with `latbot data export --format lerobot` into /tmp/lerobot-check/dataset (the defaults:
        one file of each kind), and through the Python API /tmp/lerobot-check/split (tiny file limits: every
        episode in data and video files of its own, two files per chunk folder), .../av1 (AV1, CRF 30, as
        LeRobot records) and .../yuv444p (h264 in full colour); the store's frames go to .../frames/*.npy
    python tools/lerobot_dataset_check/check.py read /tmp/lerobot-check
        any Python: re-executes itself in the LeRobot venv (/tmp/lerobot-venv, created with
        `lerobot[dataset]==0.6.1` if missing; $LEROBOT_VENV to use another), opens the four datasets with
        `LeRobotDataset(repo_id=..., root=DIR, video_backend="pyav")`, reads every frame, and writes
        tests/fixtures/lerobot_dataset/read.json: per dataset its counts, feature shapes, tasks, stats keys, per
        episode its length, index range, files, per-frame tasks, sha256 and sums of the action and state
        vectors, timestamp errors, for each camera the lowest PSNR of a decoded frame against the store's and
        whether each decoded frame is nearest its own (time alignment), for `dataset` also each
        decoded frame's 4x4 block means (0..255, rounded; a line of 48 numbers per frame: blocks row-major,
        RGB innermost), and what a delta_timestamps query returns.

tests/test_data_export.py builds the same store (the functions below), exports it, and checks that what LeRobot
read equals what LatBot wrote: vectors bit for bit, frames within the codec's tolerance and aligned in time.
The vectors, tasks and tables are the same on every run; the frames may differ by a level here and there
(libx264 through PyAV does not always produce the same bytes from one process to the next on this machine),
which the test's frame tolerances absorb (the block means LeRobot decoded stay within 4 of 255 of every store
rebuilt so far).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("LEROBOT_VENV", "/tmp/lerobot-venv"))
PYTHON312 = "/root/.pyenv/versions/3.12.1/bin/python3"
PINS = ["lerobot[dataset]==0.6.1"]
FIXTURE = REPO / "tests" / "fixtures" / "lerobot_dataset" / "read.json"
REPO_ID = "latbot/export-check"

# The sample: a LeRobot v3.0 source in the schema LatBot's reader takes (latbot.testing.samples.make_lerobot_v30)
FPS = 15
SIZE = 64
LENGTHS = (9, 14, 11)
CAMERAS = ("top", "wrist")
ROBOT = "franka"
# per episode: the episode's tasks (the first is its instruction) and per-frame task segments [start, end)
EPISODE_TASKS = (
    (["pick up the red cube"], [(0, 9, "pick up the red cube")]),
    (
        ["put the red cube in the drawer", "open the top drawer", "place the red cube inside"],
        [(0, 6, "open the top drawer"), (6, 14, "place the red cube inside")],
    ),
    (["open the top drawer"], [(0, 11, "open the top drawer")]),
)
ARMS = "arms=[{arm: right, state_position: [0, 3], state_rotation: [3, 7], state_gripper: 7}]"
CONVERT_ARGS = ["--format", "lerobot", "--image-size", str(SIZE), "--set", ARMS]
# the exports checked, with their `export_lerobot` options; the first is made by `latbot data export` (defaults)
VARIANTS = {
    "dataset": {},
    "split": {"chunks_size": 2, "data_file_mb": 1e-6, "video_file_mb": 1e-6},  # every episode in files of its own
    "av1": {"codec": "av1"},
    "yuv444p": {"pix_fmt": "yuv444p"},
}
DETAILED = ("dataset",)  # variants whose every decoded frame is recorded (block means)
BLOCKS = 4  # frames are summarised as BLOCKS x BLOCKS block means per channel


# -- project venv: source → store → datasets ------------------------------------------------------------------
def write_source(root: Path) -> Path:
    """The sample source (LeRobot v3.0 layout, two h264 cameras, 8-D state: xyz, quaternion xyzw, gripper)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from latbot.data.video import encode_video
    from latbot.testing.samples import synthetic_frames

    rng = np.random.default_rng(7)
    tasks = list(dict.fromkeys(t for ep_tasks, _ in EPISODE_TASKS for t in ep_tasks))
    (root / "meta/episodes/chunk-000").mkdir(parents=True, exist_ok=True)
    video = {
        "dtype": "video",
        "shape": [SIZE, SIZE, 3],
        "names": ["height", "width", "channels"],
        "info": {"video.height": SIZE, "video.width": SIZE, "video.codec": "h264", "video.pix_fmt": "yuv420p",
                 "video.fps": FPS, "video.channels": 3, "has_audio": False},
    }  # fmt: skip
    features = {f"observation.images.{cam}": video for cam in CAMERAS} | {
        "observation.state": {"dtype": "float32", "shape": [8], "names": None},
        "action": {"dtype": "float32", "shape": [7], "names": None},
    }
    for name, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                        ("index", "int64"), ("task_index", "int64")):  # fmt: skip
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    info = {
        "codebase_version": "v3.0", "robot_type": ROBOT, "total_episodes": len(LENGTHS),
        "total_frames": sum(LENGTHS), "total_tasks": len(tasks), "chunks_size": 1000, "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200, "fps": FPS, "splits": {"train": f"0:{len(LENGTHS)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4", "features": features,
    }  # fmt: skip
    (root / "meta/info.json").write_text(json.dumps(info, indent=2))
    pq.write_table(
        pa.table({"task_index": pa.array(np.arange(len(tasks), dtype=np.int64)), "task": pa.array(tasks)}),
        root / "meta/tasks.parquet",
    )
    tables, rows, frames, start = [], [], {cam: [] for cam in CAMERAS}, 0
    for ep, (n, (ep_tasks, segments)) in enumerate(zip(LENGTHS, EPISODE_TASKS, strict=True)):
        position = np.cumsum(rng.normal(size=(n, 3)) * 0.01, 0) + np.array([0.4, 0.0, 0.2])
        quat = rng.normal(size=(n, 4)) * 0.05 + np.array([0.0, 0.0, 0.0, 1.0])
        quat /= np.linalg.norm(quat, axis=1, keepdims=True)
        state = np.concatenate([position, quat, rng.uniform(0, 1, (n, 1))], 1).astype(np.float32)
        action = np.concatenate([rng.uniform(-1, 1, (n, 6)) * 0.05, rng.integers(0, 2, (n, 1))], 1).astype(np.float32)
        task_index = np.zeros(n, np.int64)
        for a, b, text in segments:
            task_index[a:b] = tasks.index(text)
        tables.append(
            pa.table({
                "observation.state": pa.array(list(state), pa.list_(pa.float32(), 8)),
                "action": pa.array(list(action), pa.list_(pa.float32(), 7)),
                "timestamp": pa.array((np.arange(n) / FPS).astype(np.float32)),
                "frame_index": pa.array(np.arange(n, dtype=np.int64)),
                "episode_index": pa.array(np.full(n, ep, dtype=np.int64)),
                "index": pa.array(np.arange(start, start + n, dtype=np.int64)),
                "task_index": pa.array(task_index),
            })
        )  # fmt: skip
        row = {"episode_index": ep, "tasks": ep_tasks, "length": n, "data/chunk_index": 0, "data/file_index": 0,
               "dataset_from_index": start, "dataset_to_index": start + n}  # fmt: skip
        for c, cam in enumerate(CAMERAS):
            frames[cam].append(synthetic_frames(n, SIZE, SIZE, seed=10 * ep + c))
            key = f"observation.images.{cam}"
            row |= {f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0}
            row |= {f"videos/{key}/from_timestamp": start / FPS, f"videos/{key}/to_timestamp": (start + n) / FPS}
        rows.append(row | {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        start += n
    data = root / "data/chunk-000/file-000.parquet"
    data.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.concat_tables(tables), data)
    for cam in CAMERAS:
        path = root / f"videos/observation.images.{cam}/chunk-000/file-000.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        encode_video(path, np.concatenate(frames[cam]), FPS, codec="libx264")
    pq.write_table(pa.Table.from_pylist(rows), root / "meta/episodes/chunk-000/file-000.parquet")
    return root


def latbot(*args: str) -> subprocess.CompletedProcess:
    """`latbot ARGS` in a process of its own (the command line, exit codes and all)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "latbot", *args], capture_output=True, text=True, cwd=REPO, timeout=600, env=env
    )


def make_store(workdir: Path) -> Path:
    """workdir/source → `latbot data convert` → workdir/store."""
    source, store = write_source(workdir / "source"), workdir / "store"
    proc = latbot("data", "convert", str(source), *CONVERT_ARGS, "--out", str(store))
    if proc.returncode:
        raise RuntimeError(f"latbot data convert failed:\n{proc.stderr}")
    return store


def export_datasets(store: Path, workdir: Path) -> dict[str, Path]:
    """The store exported four ways (VARIANTS): by the command line with its defaults, then through the Python
    API with tiny file limits, as AV1 (LeRobot's own codec and CRF), and in full colour (yuv444p). The store's
    frames go to workdir/frames/<camera>.npy, for the reader's PSNR."""
    from latbot.data.export import export_lerobot
    from latbot.data.store import EpisodeStore

    out = {name: workdir / name for name in VARIANTS}
    proc = latbot("data", "export", str(store), "--format", "lerobot", "--out", str(out["dataset"]))
    if proc.returncode:
        raise RuntimeError(f"latbot data export failed:\n{proc.stderr}")
    for name, options in VARIANTS.items():
        if name != "dataset":
            export_lerobot(store, out[name], **options)
    (workdir / "frames").mkdir(exist_ok=True)
    with EpisodeStore.open(store) as s:
        for cam in s.cameras:
            np.save(workdir / "frames" / f"{cam}.npy", s.read_rows(f"frames/{cam}", 0, s.num_frames))
    return out


# -- shared: the frame summary ------------------------------------------------------------------------------
def block_means(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) → (T, BLOCKS, BLOCKS, 3): mean of each block, per channel, in 0..255."""
    t, h, w, c = frames.shape
    x = frames.astype(np.float64).reshape(t, BLOCKS, h // BLOCKS, BLOCKS, w // BLOCKS, c)
    return x.mean(axis=(2, 4))


def digest(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values, dtype=np.float32).tobytes()).hexdigest()


# -- LeRobot venv: read the datasets --------------------------------------------------------------------------
def ensure_venv() -> None:
    """Re-execute inside the LeRobot venv (created on first use)."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([PYTHON312, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PINS], check=True)
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def read_dataset(root: Path, reference: dict[str, np.ndarray], detailed: bool) -> dict:
    """What `LeRobotDataset` reads from `root`, every frame of it; the decoded frames are compared with
    `reference` (camera → the store's frames) and, when `detailed`, summarised frame by frame."""
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset(repo_id=REPO_ID, root=root, video_backend="pyav")
    meta = ds.meta
    cameras = list(meta.video_keys)
    frames: dict[int, list[dict]] = {}
    for i in range(len(ds)):
        item = ds[i]
        frames.setdefault(int(item["episode_index"]), []).append(item)
    episodes = []
    for ep in range(meta.total_episodes):
        items, row = frames[ep], meta.episodes[ep]
        action = torch.stack([it["action"] for it in items]).numpy()
        state = torch.stack([it["observation.state"] for it in items]).numpy()
        ts = np.array([float(it["timestamp"]) for it in items])
        fi = [int(it["frame_index"]) for it in items]
        tasks = [it["task"] for it in items]
        segments, a = [], 0
        for b in range(1, len(tasks) + 1):
            if b == len(tasks) or tasks[b] != tasks[a]:
                segments.append([a, b, tasks[a]])
                a = b
        decoded = {}
        for key in cameras:
            imgs = torch.stack([it[key] for it in items])  # (T, 3, H, W) float in [0, 1]
            u8 = (imgs * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            want = reference[key.removeprefix("observation.images.")][int(row["dataset_from_index"]) :][: len(items)]
            own = [psnr(u8[t], want[t]) for t in range(len(items))]
            aligned = all(
                own[t] > psnr(u8[t], want[u])
                for t in range(len(items))
                for u in (t - 1, t + 1)
                if 0 <= u < len(items) and not np.array_equal(want[u], want[t])
            )
            decoded[key] = {
                "shape": list(imgs.shape[1:]),
                "dtype": str(imgs.dtype),
                "psnr_min": round(min(own), 2),  # dB, against the store's frame
                "aligned": aligned,  # each decoded frame is nearest the store's frame of its own time
            }
            if detailed:
                means = np.rint(block_means(u8)).astype(int)
                decoded[key]["blocks"] = [" ".join(str(v) for v in f.reshape(-1)) for f in means]
        episodes.append({
            "episode_index": ep,
            "length": len(items),
            "meta_length": int(row["length"]),
            "tasks": list(row["tasks"]),
            "index": [int(items[0]["index"]), int(items[-1]["index"]) + 1],
            "dataset_index": [int(row["dataset_from_index"]), int(row["dataset_to_index"])],
            "frame_index_ok": fi == list(range(len(items))),
            "timestamp_error": float(np.abs(ts - np.arange(len(items)) / meta.fps).max()),
            "frame_tasks": segments,
            "files": {"data": [int(row["data/chunk_index"]), int(row["data/file_index"])]}
            | {key: [int(row[f"videos/{key}/chunk_index"]), int(row[f"videos/{key}/file_index"])] for key in cameras},
            "action_shape": list(action.shape),
            "state_shape": list(state.shape),
            "action_sha256": digest(action),
            "state_sha256": digest(state),
            "action_sum": float(action.astype(np.float64).sum()),
            "state_sum": float(state.astype(np.float64).sum()),
            "cameras": decoded,
        })  # fmt: skip
    # delta_timestamps, as a policy's data loader asks: an action chunk and two camera frames, at each episode's
    # first and last frame (out-of-episode steps come back padded)
    dt = 1 / meta.fps
    deltas = {"action": [0.0, dt, 2 * dt], cameras[0]: [-dt, 0.0]}
    chunked = LeRobotDataset(repo_id=REPO_ID, root=root, video_backend="pyav", delta_timestamps=deltas)
    queries = []
    for ep in range(meta.total_episodes):
        row = meta.episodes[ep]
        for idx in (int(row["dataset_from_index"]), int(row["dataset_to_index"]) - 1):
            item = chunked[idx]
            queries.append({
                "index": idx,
                "action_shape": list(item["action"].shape),
                "action_is_pad": item["action_is_pad"].tolist(),
                "action_sha256": digest(item["action"].numpy()),
                "camera_shape": list(item[cameras[0]].shape),
                "camera_is_pad": item[f"{cameras[0]}_is_pad"].tolist(),
            })  # fmt: skip
    return {
        "codebase_version": meta.info.codebase_version,
        "fps": meta.fps,
        "robot_type": meta.robot_type,
        "total_episodes": meta.total_episodes,
        "total_frames": meta.total_frames,
        "len": len(ds),
        "num_episodes": ds.num_episodes,
        "features": {k: {"dtype": v["dtype"], "shape": list(v["shape"])} for k, v in meta.features.items()},
        "video_keys": cameras,
        "tasks": list(meta.tasks.sort_values("task_index").index),
        "stats_keys": sorted({k for st in meta.stats.values() for k in st}),
        "stats_shapes": {f: list(np.shape(st["mean"])) for f, st in meta.stats.items()},
        "episodes": episodes,
        "delta_queries": {"deltas": deltas, "items": queries},
    }


def read(workdir: Path) -> None:
    ensure_venv()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lerobot

    reference = {path.stem: np.load(path) for path in sorted((workdir / "frames").glob("*.npy"))}
    out = {
        "lerobot_version": lerobot.__version__,
        "video_backend": "pyav",
        "made_by": "tools/lerobot_dataset_check/check.py (export, then read)",
        "datasets": {name: read_dataset(workdir / name, reference, name in DETAILED) for name in VARIANTS},
    }
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(_dumps(out) + "\n")
    for name, got in out["datasets"].items():
        worst = min(c["psnr_min"] for e in got["episodes"] for c in e["cameras"].values())
        print(f"{name}: {got['num_episodes']} episodes, {got['len']} frames, cameras {got['video_keys']}, "
              f"lowest PSNR {worst} dB")  # fmt: skip
    print(f"wrote {FIXTURE}")


def _dumps(value, indent: str = "") -> str:
    """JSON with one item per line, except what fits on a short line (shapes, flags, small records)."""
    inner = indent + " "
    flat = json.dumps(value, ensure_ascii=False)
    if not isinstance(value, dict | list) or (len(flat) <= 100 and not any(isinstance(v, dict) for v in value)):
        return flat
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k)}: {_dumps(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    return "[\n" + ",\n".join(f"{inner}{_dumps(v, inner)}" for v in value) + f"\n{indent}]"


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in ("export", "read"):
        raise SystemExit(__doc__)
    workdir = Path(sys.argv[2]).resolve()
    if sys.argv[1] == "read":
        read(workdir)
        return
    sys.path.insert(0, str(REPO))
    workdir.mkdir(parents=True, exist_ok=True)
    store = make_store(workdir)
    for name, path in export_datasets(store, workdir).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
