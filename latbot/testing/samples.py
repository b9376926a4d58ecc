"""Small source datasets written in each real on-disk schema (LeRobot v2.1 / v3.0, LIBERO HDF5, EgoDex
HDF5 + mp4), for the tests, the loader benchmark and the demo: a way to try every adapter without
downloading anything. The schemas follow docs/data.md (and the formats' own loaders).

Frames are synthetic but structured (a gradient plus a square that moves with time), so a frame read
from the wrong step or camera is detectable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from latbot.data.video import encode_video


def synthetic_frames(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """(t, h, w, 3) uint8: a colour gradient and a bright square whose position encodes the step."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / max(w - 1, 1), yy * 255 / max(h - 1, 1), np.full((h, w), rng.integers(0, 255))], -1)
    frames = np.repeat(base[None], t, 0).astype(np.float64)
    side = max(2, min(h, w) // 5)
    for i in range(t):
        y = (i * 3 + seed * 7) % max(1, h - side)
        x = (i * 5 + seed * 3) % max(1, w - side)
        frames[i, y : y + side, x : x + side] = [255, 255 - 8 * (i % 16), 40]
    return frames.clip(0, 255).astype(np.uint8)


# -- LIBERO / robomimic ---------------------------------------------------------------------------------
def make_libero_hdf5(
    path: Path,
    demos: int = 3,
    steps: int = 20,
    size: int = 32,
    seed: int = 0,
    instruction: str = "put the black bowl on the plate",
) -> Path:
    import h5py

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps(
            {
                "problem_name": "libero_tabletop_manipulation",
                "domain_name": "robosuite",
                "language_instruction": instruction,
            }
        )
        data.attrs["env_name"] = "Libero_Tabletop_Manipulation"
        data.attrs["env_args"] = json.dumps({"env_name": "Libero_Tabletop_Manipulation", "type": 1})
        data.attrs["bddl_file_name"] = "libero/bddl_files/libero_goal/task.bddl"
        data.attrs["num_demos"] = demos
        data.attrs["total"] = demos * steps
        for i in range(demos):
            g = data.create_group(f"demo_{i}")
            g.attrs["num_samples"] = steps
            actions = np.concatenate([rng.uniform(-1, 1, (steps, 6)) * 0.5, np.sign(rng.uniform(-1, 1, (steps, 1)))], 1)
            g.create_dataset("actions", data=actions)
            quat = rng.normal(size=(steps, 4))
            quat /= np.linalg.norm(quat, axis=1, keepdims=True)
            grip = rng.uniform(0, 0.04, (steps, 1))
            robot = np.concatenate([grip, -grip, rng.normal(size=(steps, 3)) * 0.1, quat], 1)
            g.create_dataset("robot_states", data=robot)
            g.create_dataset("states", data=rng.normal(size=(steps, 47)))
            g.create_dataset("rewards", data=np.r_[np.zeros(steps - 1), 1].astype(np.uint8))
            g.create_dataset("dones", data=np.r_[np.zeros(steps - 1), 1].astype(np.uint8))
            obs = g.create_group("obs")
            obs.create_dataset("agentview_rgb", data=synthetic_frames(steps, size, size, seed=10 * i + 1))
            obs.create_dataset("eye_in_hand_rgb", data=synthetic_frames(steps, size, size, seed=10 * i + 2))
            obs.create_dataset("gripper_states", data=robot[:, :2])
            obs.create_dataset("joint_states", data=rng.normal(size=(steps, 7)))
            obs.create_dataset("ee_pos", data=robot[:, 2:5])
    return path


# -- LeRobot ----------------------------------------------------------------------------------------------
def _features(size: int, codec: str, fps: int, state_dim: int, action_dim: int) -> dict:
    video = {
        "dtype": "video",
        "shape": [size, size, 3],
        "names": ["height", "width", "channels"],
        "info": {
            "video.height": size,
            "video.width": size,
            "video.codec": "av1" if codec == "libsvtav1" else "h264",
            "video.pix_fmt": "yuv420p",
            "video.is_depth_map": False,
            "video.fps": fps,
            "video.channels": 3,
            "has_audio": False,
        },
    }
    return {
        "observation.images.top": video,
        "observation.state": {"dtype": "float32", "shape": [state_dim], "names": None},
        "action": {"dtype": "float32", "shape": [action_dim], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }


def _episode_table(ep: int, steps: int, start_index: int, fps: int, rng, task_index: int = 0):
    import pyarrow as pa

    return pa.table(
        {
            "observation.state": pa.array(
                list(rng.normal(size=(steps, 8)).astype(np.float32)), pa.list_(pa.float32(), 8)
            ),
            "action": pa.array(
                list((rng.uniform(-1, 1, (steps, 7)) * 0.1).astype(np.float32)), pa.list_(pa.float32(), 7)
            ),
            "timestamp": pa.array((np.arange(steps) / fps).astype(np.float32)),
            "frame_index": pa.array(np.arange(steps, dtype=np.int64)),
            "episode_index": pa.array(np.full(steps, ep, dtype=np.int64)),
            "index": pa.array(np.arange(start_index, start_index + steps, dtype=np.int64)),
            "task_index": pa.array(np.full(steps, task_index, dtype=np.int64)),
        }
    )


TASKS = ["pick up the red cube", "open the top drawer"]


def make_lerobot_v21(
    root: Path,
    episodes: int = 2,
    steps: int = 12,
    size: int = 32,
    codec: str = "libsvtav1",
    fps: int = 10,
    seed: int = 0,
) -> Path:
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    (root / "meta").mkdir(parents=True, exist_ok=True)
    info = {
        "codebase_version": "v2.1",
        "robot_type": "franka",
        "total_episodes": episodes,
        "total_frames": episodes * steps,
        "total_tasks": len(TASKS),
        "total_videos": episodes,
        "total_chunks": 1,
        "chunks_size": 1000,
        "fps": fps,
        "splits": {"train": f"0:{episodes}"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": _features(size, codec, fps, 8, 7),
    }
    (root / "meta/info.json").write_text(json.dumps(info, indent=2))
    (root / "meta/tasks.jsonl").write_text(
        "".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(TASKS))
    )
    lines = []
    for ep in range(episodes):
        table = _episode_table(ep, steps, ep * steps, fps, rng, task_index=ep % len(TASKS))
        data = root / f"data/chunk-000/episode_{ep:06d}.parquet"
        data.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, data)
        video = root / f"videos/chunk-000/observation.images.top/episode_{ep:06d}.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        encode_video(video, synthetic_frames(steps, size, size, seed=ep), fps, codec=codec)
        lines.append(json.dumps({"episode_index": ep, "tasks": [TASKS[ep % len(TASKS)]], "length": steps}))
    (root / "meta/episodes.jsonl").write_text("\n".join(lines) + "\n")
    (root / "meta/episodes_stats.jsonl").write_text("")
    return root


def make_lerobot_v30(
    root: Path,
    episodes: int = 3,
    steps: int = 12,
    size: int = 32,
    codec: str = "libsvtav1",
    fps: int = 10,
    seed: int = 0,
) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    (root / "meta/episodes/chunk-000").mkdir(parents=True, exist_ok=True)
    info = {
        "codebase_version": "v3.0",
        "robot_type": "widowx",
        "total_episodes": episodes,
        "total_frames": episodes * steps,
        "total_tasks": len(TASKS),
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "fps": fps,
        "splits": {"train": f"0:{episodes}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": _features(size, codec, fps, 8, 7),
    }
    (root / "meta/info.json").write_text(json.dumps(info, indent=2))
    pq.write_table(
        pa.table({"task_index": pa.array(np.arange(len(TASKS), dtype=np.int64)), "__index_level_0__": pa.array(TASKS)}),
        root / "meta/tasks.parquet",
    )
    tables, frames, rows = [], [], []
    for ep in range(episodes):
        tables.append(_episode_table(ep, steps, ep * steps, fps, rng, task_index=ep % len(TASKS)))
        frames.append(synthetic_frames(steps, size, size, seed=ep))
        key = "observation.images.top"
        rows.append(
            {
                "episode_index": ep,
                "tasks": [TASKS[ep % len(TASKS)]],
                "length": steps,
                "data/chunk_index": 0,
                "data/file_index": 0,
                "dataset_from_index": ep * steps,
                "dataset_to_index": (ep + 1) * steps,
                f"videos/{key}/chunk_index": 0,
                f"videos/{key}/file_index": 0,
                f"videos/{key}/from_timestamp": ep * steps / fps,
                f"videos/{key}/to_timestamp": (ep + 1) * steps / fps,
                "meta/episodes/chunk_index": 0,
                "meta/episodes/file_index": 0,
            }
        )
    data = root / "data/chunk-000/file-000.parquet"
    data.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.concat_tables(tables), data)
    video = root / "videos/observation.images.top/chunk-000/file-000.mp4"
    video.parent.mkdir(parents=True, exist_ok=True)
    encode_video(video, np.concatenate(frames), fps, codec=codec)
    pq.write_table(pa.Table.from_pylist(rows), root / "meta/episodes/chunk-000/file-000.parquet")
    return root


# -- EgoDex -----------------------------------------------------------------------------------------------
def egodex_joints() -> list[str]:
    joints = []
    for s in ("left", "right"):
        joints += [f"{s}Shoulder", f"{s}Arm", f"{s}Forearm", f"{s}Hand"]
        joints += [f"{s}Thumb{p}" for p in ("Knuckle", "IntermediateBase", "IntermediateTip", "Tip")]
        for finger in ("Index", "Middle", "Ring", "Little"):
            joints += [
                f"{s}{finger}Finger{p}" for p in ("Metacarpal", "Knuckle", "IntermediateBase", "IntermediateTip", "Tip")
            ]
    joints += ["hip"] + [f"spine{i}" for i in range(1, 8)] + [f"neck{i}" for i in range(1, 5)]
    return joints


def _random_poses(rng, n: int, centre: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    poses = np.tile(np.eye(4), (n, 1, 1))
    rotvec = rng.normal(size=3) + np.cumsum(rng.normal(size=(n, 3)) * 0.05, 0)
    poses[:, :3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    poses[:, :3, 3] = centre + np.cumsum(rng.normal(size=(n, 3)) * 0.01, 0)
    return poses.astype(np.float32)


def make_egodex(
    root: Path,
    task: str = "basic_pick_place",
    episodes: int = 1,
    steps: int = 10,
    width: int = 64,
    height: int = 36,
    seed: int = 0,
    reversible: bool = True,
) -> Path:
    import h5py

    rng = np.random.default_rng(seed)
    folder = root / task
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(episodes):
        with h5py.File(folder / f"{i}.hdf5", "w") as f:
            f.create_dataset(
                "camera/intrinsic", data=np.array([[736.6339, 0, 960], [0, 736.6339, 540], [0, 0, 1]], np.float32)
            )
            f.create_dataset("transforms/camera", data=_random_poses(rng, steps, np.array([0, 1.5, 0])))
            for j, joint in enumerate(egodex_joints()):
                centre = np.array([0.3 if joint.startswith("right") else -0.3, 1.0, -0.4]) + 0.01 * j
                f.create_dataset(f"transforms/{joint}", data=_random_poses(rng, steps, centre))
                f.create_dataset(f"confidences/{joint}", data=rng.uniform(0.5, 1, steps).astype(np.float32))
            f.attrs["llm_description"] = "Pick up the cup and place it on the saucer."
            f.attrs["llm_description2"] = "Pick up the cup from the saucer and put it down."
            f.attrs["which_llm_description"] = "2" if reversible else "1"
            f.attrs["llm_type"] = "reversible" if reversible else "irreversible"
            f.attrs["task"] = task
            f.attrs["environment"] = "kitchen"
        encode_video(folder / f"{i}.mp4", synthetic_frames(steps, height, width, seed=i), 30, codec="libx264")
    return root


def write_all(root: Path) -> dict[str, Path]:
    """One small dataset per supported format under `root` (what `make demo` converts)."""
    root = Path(root)
    return {
        "lerobot_v30": make_lerobot_v30(root / "lerobot_v30", episodes=4, steps=24, size=96, codec="libsvtav1"),
        "lerobot_v21": make_lerobot_v21(root / "lerobot_v21", episodes=3, steps=24, size=96, codec="libx264"),
        "libero": make_libero_hdf5(
            root / "libero/KITCHEN_SCENE1_put_the_black_bowl_on_the_plate_demo.hdf5", demos=4, steps=24, size=128
        ),
        "egodex": make_egodex(root / "egodex", episodes=2, steps=24, width=320, height=180),
    }


if __name__ == "__main__":
    import sys

    for name, path in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "demo/sources")).items():
        print(f"{name:12s} {path}")
