"""`latbot data export STORE --format lerobot --out DIR`: a LeRobot v3.0 dataset that LeRobot reads, and that
LatBot's own LeRobot reader turns back into the same store.

(a) What LeRobot 0.6.1 read (`LeRobotDataset(..., video_backend="pyav")`, every frame; recorded by
    tools/lerobot_dataset_check/check.py in tests/fixtures/lerobot_dataset/read.json) equals what LatBot
    exports from the same deterministic store, rebuilt here, in four variants (the defaults; a file per
    episode; AV1; yuv444p): counts, shapes, tasks, index ranges, file layout, action/state vectors bit for bit
    (sha256), frames at PSNR ≥ FIXTURE_PSNR against the store's, each nearest the store's frame of its own time,
    and (defaults) each decoded frame's 4x4 block means within FIXTURE_BLOCK_TOL of the store's frame, nearer to
    it than to the frames before and after it, checked against the store rebuilt here.
(b) export → `latbot data convert DIR --format lerobot --config DIR/meta/latbot_convert.json` → a store equal to
    the original: actions, states, native vectors, masks, instructions, subtasks, keys, lengths, order,
    embodiment, fps and statistics exact; frames within the codec's tolerance: PSNR ≥ ROUND_TRIP_PSNR dB for
    every frame, mean |difference| ≤ ROUND_TRIP_MEAN_ABS and max ≤ ROUND_TRIP_MAX_ABS (0..255; h264, CRF 18,
    yuv420p: the colour planes are halved, so sharp colour edges move most), each frame nearest its own.
(c) Refusals: a non-empty --out, a damaged store, an unfinished one, bad options: one line, exit 2, nothing
    written (no dataset, no temporary folder, no created parents).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from latbot.data.export import STATS
from latbot.data.store import EpisodeStore
from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("lerobot_dataset_check", REPO / "tools/lerobot_dataset_check/check.py")
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)

FIXTURE = REPO / "tests/fixtures/lerobot_dataset/read.json"
FIXTURE_BLOCK_TOL = 6.0  # 0..255: LeRobot's decoded block means vs the store's (measured: ≤ 4.4)
# the lowest PSNR of a frame LeRobot decoded, against the store's, per variant (measured: 37.3, 37.3, 26.4, 38.0):
# h264 at CRF 18; AV1 at LeRobot's own CRF 30, whose in-between frames are coarser
FIXTURE_PSNR = {"dataset": 35.0, "split": 35.0, "av1": 24.0, "yuv444p": 35.0}
ROUND_TRIP_PSNR = 35.0  # dB, every frame (measured: ≥ 37.3)
ROUND_TRIP_MEAN_ABS = 3.0  # per frame (measured: ≤ 2.1)
ROUND_TRIP_MAX_ABS = 64  # any pixel, any channel (measured: 54, at the square's coloured edge)


def latbot(*args):
    return subprocess.run(
        [sys.executable, "-m", "latbot", *args], capture_output=True, text=True, cwd=REPO, timeout=600
    )


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The store of tools/lerobot_dataset_check (the same vectors and tasks every time), exported as it does."""
    work = tmp_path_factory.mktemp("export")
    store = check.make_store(work)
    return store, check.export_datasets(store, work)


def _blocks(lines):
    return np.array([[int(v) for v in line.split()] for line in lines], np.float64)


def _stored_blocks(s, cam, rec):
    frames = s.read_steps(f"frames/{cam}", rec.index, slice(None))
    return check.block_means(frames).reshape(rec.length, -1)


def _nearest_is_own(got: np.ndarray, want: np.ndarray, distance) -> None:
    """Frame t of `got` is nearer to frame t of `want` than to frames t-1 and t+1 (decoded at the right time)."""
    for t in range(len(got)):
        own = distance(got[t], want[t])
        for u in (t - 1, t + 1):
            if 0 <= u < len(got) and not np.array_equal(want[u], want[t]):
                assert own < distance(got[t], want[u]), f"frame {t} looks like frame {u}"


# -- (a) what LeRobot read ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(check.VARIANTS))
def test_lerobot_reads_what_latbot_exports(sample, variant):
    store, datasets = sample
    fixture = json.loads(FIXTURE.read_text())
    assert fixture["lerobot_version"] == "0.6.1" and fixture["video_backend"] == "pyav"
    read = fixture["datasets"][variant]
    root = datasets[variant]
    info = json.loads((root / "meta/info.json").read_text())
    with EpisodeStore.open(store) as s:
        records = s.records
        assert read["codebase_version"] == info["codebase_version"] == "v3.0"
        assert read["fps"] == info["fps"] == check.FPS == records[0].fps
        assert read["robot_type"] == info["robot_type"] == check.ROBOT
        assert read["total_episodes"] == read["num_episodes"] == len(records) == info["total_episodes"] == 3
        assert read["total_frames"] == read["len"] == s.num_frames == info["total_frames"] == sum(check.LENGTHS)
        assert read["features"] == {k: {"dtype": v["dtype"], "shape": v["shape"]} for k, v in info["features"].items()}
        keys = [f"observation.images.{cam}" for cam in s.cameras]
        assert read["video_keys"] == keys and s.cameras == list(check.CAMERAS)
        assert read["features"]["action"]["shape"] == [s.array("native_actions").shape[1]] == [7]
        assert read["features"]["observation.state"]["shape"] == [s.array("native_states").shape[1]] == [8]
        texts = [t for r in records for t in [r.instruction, *(x[2] for x in r.subtasks)]]
        assert read["tasks"] == list(dict.fromkeys(texts))
        assert read["stats_keys"] == sorted(STATS)
        shapes = {k: [3, 1, 1] if v["dtype"] == "video" else v["shape"] for k, v in info["features"].items()}
        assert read["stats_shapes"] == shapes
        for got, rec in zip(read["episodes"], records, strict=True):
            assert got["episode_index"] == rec.index and got["length"] == got["meta_length"] == rec.length
            assert got["index"] == got["dataset_index"] == [rec.offset, rec.stop]
            assert got["frame_index_ok"] and got["timestamp_error"] < 1e-6
            assert got["tasks"][0] == rec.instruction
            expected = [list(x) for x in rec.subtasks] or [[0, rec.length, rec.instruction]]
            assert got["frame_tasks"] == expected
            for what, array in (("action", "native_actions"), ("state", "native_states")):
                values = s.read_steps(array, rec.index, slice(None))
                assert got[f"{what}_shape"] == list(values.shape)
                assert got[f"{what}_sha256"] == check.digest(values)  # bit for bit
                assert got[f"{what}_sum"] == pytest.approx(float(values.astype(np.float64).sum()), rel=1e-12)
            for cam, key in zip(s.cameras, keys, strict=True):
                decoded = got["cameras"][key]
                assert decoded["shape"] == [3, *s.image_size] and decoded["dtype"] == "torch.float32"
                assert decoded["psnr_min"] >= FIXTURE_PSNR[variant] and decoded["aligned"], (rec.index, cam)
                if variant in check.DETAILED:  # checked here too, against the store rebuilt now
                    lerobot, stored = _blocks(decoded["blocks"]), _stored_blocks(s, cam, rec)
                    assert np.abs(lerobot - stored).max() <= FIXTURE_BLOCK_TOL, (variant, rec.index, cam)
                    _nearest_is_own(lerobot, stored, lambda a, b: np.abs(a - b).max())
        rows = _episode_rows(root)
        for got, row in zip(read["episodes"], rows, strict=True):
            assert got["files"]["data"] == [row["data/chunk_index"], row["data/file_index"]]
            for key in keys:
                assert got["files"][key] == [row[f"videos/{key}/chunk_index"], row[f"videos/{key}/file_index"]]
    layout = [[0, 0], [0, 1], [1, 0]] if variant == "split" else [[0, 0]] * 3  # split: a file per episode
    assert [e["files"]["data"] for e in read["episodes"]] == layout
    assert [e["files"][keys[1]] for e in read["episodes"]] == layout
    video = info["features"][keys[0]]["info"]
    expected = {"av1": ("av1", "yuv420p"), "yuv444p": ("h264", "yuv444p")}.get(variant, ("h264", "yuv420p"))
    assert (video["video.codec"], video["video.pix_fmt"]) == expected
    # a policy's action-chunk query: padded past the episode's end, the camera padded before its start
    for q in read["delta_queries"]["items"]:
        assert q["action_shape"] == [3, 7] and q["camera_shape"] == [2, 3, *s.image_size]
        first = q["index"] in {r.offset for r in records}
        assert q["camera_is_pad"] == [first, False]
        assert q["action_is_pad"] == ([False, False, False] if first else [False, True, True])


def _episode_rows(root):
    import pyarrow.parquet as pq

    rows = []
    for path in sorted((root / "meta/episodes").rglob("*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return sorted(rows, key=lambda r: r["episode_index"])


def test_the_dataset_is_written_in_lerobots_schema(sample):
    import pyarrow.parquet as pq

    store, datasets = sample
    root = datasets["dataset"]
    info = json.loads((root / "meta/info.json").read_text())
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert info["chunks_size"] == 1000 and info["splits"] == {"train": "0:3"} and info["total_tasks"] == 4
    video = info["features"]["observation.images.top"]
    assert video["names"] == ["height", "width", "channels"]
    assert video["info"]["video.codec"] == "h264" and video["info"]["video.pix_fmt"] == "yuv420p"
    assert video["info"]["video.fps"] == check.FPS and video["info"]["is_depth_map"] is False
    data = pq.read_table(root / "data/chunk-000/file-000.parquet")
    assert data.schema.names == ["observation.state", "action", "timestamp", "frame_index", "episode_index", "index",
                                 "task_index"]  # fmt: skip
    assert str(data.schema.field("action").type) == "fixed_size_list<element: float>[7]"
    assert str(data.schema.field("timestamp").type) == "float"
    assert pq.ParquetFile(root / "data/chunk-000/file-000.parquet").num_row_groups == 3  # one per episode
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    stats = json.loads((root / "meta/stats.json").read_text())
    with EpisodeStore.open(store) as s:
        actions = s.read_rows("native_actions", 0, s.num_frames).astype(np.float64)
    assert np.allclose(stats["action"]["mean"], actions.mean(0)) and np.allclose(stats["action"]["std"], actions.std(0))
    assert stats["action"]["min"] == actions.min(0).tolist() and stats["action"]["count"] == [len(actions)]
    note = json.loads((root / "meta/latbot_export.json").read_text())
    assert note["vectors"] == {"observation.state": "native_states", "action": "native_actions"}
    assert note["store"] == str(store) and note["store_content_hash"].startswith("sha256:")
    options = json.loads((root / "meta/latbot_convert.json").read_text())
    assert options["action_key"] == "action" and options["state_key"] == "observation.state"
    assert options["arms"][0]["state_position"] == [0, 3]
    assert sorted(p.name for p in root.parent.iterdir() if p.name.startswith(".")) == []  # no temporary folder


# -- (b) the round trip ------------------------------------------------------------------------------------------
def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.mark.parametrize("variant", ["dataset", "split"])
def test_round_trip_through_data_convert_gives_the_same_store(sample, variant, tmp_path):
    store, datasets = sample
    root = datasets[variant]
    back = tmp_path / "back"
    options = root / "meta/latbot_convert.json"
    proc = latbot("data", "convert", str(root), "--format", "lerobot", "--config", str(options),
                  "--image-size", str(check.SIZE), "--out", str(back))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with EpisodeStore.open(store) as a, EpisodeStore.open(back) as b:
        assert (b.cameras, b.image_size, b.num_episodes, b.num_frames) == (a.cameras, a.image_size, 3, a.num_frames)
        for ra, rb in zip(a.records, b.records, strict=True):
            da, db = dataclasses.asdict(ra), dataclasses.asdict(rb)
            assert da.pop("source").startswith(str(store.parent / "source")) and db.pop("source").startswith(str(root))
            assert da == db  # key, offset, length, instruction, task, subtasks, embodiment, fps, success, masks
        assert any(r.subtasks for r in a.records) and a.records[0].masks()[1].any()  # the sample has both
        for name in ("actions", "states", "native_actions", "native_states"):
            x, y = a.read_rows(name, 0, a.num_frames), b.read_rows(name, 0, b.num_frames)
            assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), name
        assert a.stats == b.stats
        for cam in a.cameras:
            for rec in a.records:
                x = a.read_steps(f"frames/{cam}", rec.index, slice(None))
                y = b.read_steps(f"frames/{cam}", rec.index, slice(None))
                assert x.shape == y.shape
                diff = np.abs(x.astype(np.int16) - y.astype(np.int16))
                assert diff.max() <= ROUND_TRIP_MAX_ABS, (cam, rec.index, diff.max())
                for t in range(rec.length):
                    assert _psnr(x[t], y[t]) >= ROUND_TRIP_PSNR, (cam, rec.index, t, _psnr(x[t], y[t]))
                    assert diff[t].mean() <= ROUND_TRIP_MEAN_ABS, (cam, rec.index, t)
                _nearest_is_own(y, x, lambda p, q: -_psnr(p, q))


def test_a_store_without_native_vectors_exports_the_unified_ones(tmp_path):
    from latbot.data.convert import finalize
    from latbot.data.export import export_lerobot, unified_names
    from latbot.data.spaces import UnifiedTrajectory
    from latbot.data.store import Episode
    from latbot.testing.samples import synthetic_frames

    path = tmp_path / "store"
    rng = np.random.default_rng(0)
    with EpisodeStore.create(path, cameras=["ego"], image_size=(16, 16), source_format="egodex") as s:
        for i, (n, body) in enumerate(((5, "human"), (7, "human"))):
            traj = UnifiedTrajectory.empty(n)
            traj.actions[:] = rng.normal(size=traj.actions.shape)
            traj.states[:] = rng.normal(size=traj.states.shape)
            traj.action_mask[:14] = traj.state_mask[:16] = True
            s.append(Episode(key=f"e{i}", frames={"ego": synthetic_frames(n, 16, 16, seed=i)}, trajectory=traj,
                             instruction="wave", embodiment=body, fps=30.0, success=True))  # fmt: skip
        finalize(s, extra={"adapter": {"type": "egodex"}})
    result = export_lerobot(path, tmp_path / "ds")
    assert result.vectors == {"observation.state": "states", "action": "actions"}
    assert result.episodes == 2 and result.frames == 12 and result.tasks == 1
    assert any("not by the LeRobot adapter" in note for note in result.notes)
    info = json.loads((tmp_path / "ds/meta/info.json").read_text())
    action_names, state_names = unified_names()
    assert info["features"]["action"] == {"dtype": "float32", "shape": [44], "names": action_names}
    assert info["features"]["observation.state"]["names"] == state_names and info["robot_type"] == "human"
    assert action_names[7:14] == ["right_dx", "right_dy", "right_dz", "right_droll", "right_dpitch", "right_dyaw",
                                  "right_gripper"]  # fmt: skip
    assert not (tmp_path / "ds/meta/latbot_convert.json").exists()
    # LatBot's reader takes the 44-D vectors back as the source's own (native) action, bit for bit
    back = tmp_path / "back"
    proc = latbot("data", "convert", str(tmp_path / "ds"), "--format", "lerobot", "--image-size", "16",
                  "--set", "arms=[]", "--out", str(back))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with EpisodeStore.open(path) as a, EpisodeStore.open(back) as b:
        assert np.array_equal(a.read_rows("actions", 0, 12), b.read_rows("native_actions", 0, 12))
        assert np.array_equal(a.read_rows("states", 0, 12), b.read_rows("native_states", 0, 12))


# -- (c) refusals ------------------------------------------------------------------------------------------------
def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _refused(proc, *words):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_refusals_are_one_line_exit_2_and_write_nothing(sample, tmp_path):
    store, _ = sample
    work = tmp_path / "work"
    work.mkdir()
    (work / "full").mkdir()
    (work / "full" / "notes.txt").write_text("mine")
    (work / "a-file").write_text("x")
    before = _tree(work)

    def export(src, out, *more):
        return latbot("data", "export", str(src), "--format", "lerobot", "--out", str(out), *more)

    _refused(export(store, work / "full"), "--out", "notes.txt")
    _refused(export(store, work / "a-file"), "not a directory")
    _refused(export(store, store), "--out")
    _refused(export(store, store / "inside"), "artifact")
    _refused(latbot("data", "export", str(store), "--format", "openpi", "--out", str(work / "new")), "lerobot")
    _refused(export(store, work / "new", "--codec", "vp9"), "--codec")
    _refused(export(store, work / "new", "--crf", "99"), "--crf")
    _refused(export(tmp_path / "nowhere", work / "new"), "nowhere")
    assert _tree(work) == before and not (store / "inside").exists()

    # a damaged commit log: refused when the store is opened
    bad_log = tmp_path / "bad-log"
    shutil.copytree(store, bad_log)
    log = bad_log / "episodes.jsonl"
    log.write_text(log.read_text().replace('"length":9', '"length":8'))
    _refused(export(bad_log, work / "new" / "ds"), "bad-log")
    # a missing block of frames: found while the dataset is being written; what was written goes again
    bad_block = tmp_path / "bad-block"
    shutil.copytree(store, bad_block)
    (bad_block / "frames/wrist/c/0/0/0/0").unlink()
    _refused(export(bad_block, work / "new" / "ds"), "missing")
    # an unfinished store (no manifest)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(store, unfinished)
    (unfinished / "latbot.json").unlink()
    _refused(export(unfinished, work / "new"), "finish")
    assert _tree(work) == before  # not even the parent folder `new` that the failed exports would have made


def test_a_failure_midway_leaves_nothing(sample, tmp_path, monkeypatch):
    from latbot.data import export

    store, _ = sample
    calls = []

    def fail_on_third(self, frames):
        calls.append(len(frames))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, frames)

    original = export._RollingVideo.write
    monkeypatch.setattr(export._RollingVideo, "write", fail_on_third)
    (tmp_path / "empty").mkdir()
    with pytest.raises(KeyboardInterrupt):
        export.export_lerobot(store, tmp_path / "empty")
    assert _tree(tmp_path) == ["empty"]  # the empty --out stays as it was, no temporary folder beside it
    monkeypatch.setattr(export._RollingVideo, "write", original)
    monkeypatch.setattr(export, "EPISODE_FLUSH", 1)  # episode rows written one at a time: the same table
    result = export.export_lerobot(store, tmp_path / "empty")  # an empty folder is a valid --out
    assert result.episodes == 3 and (tmp_path / "empty/meta/info.json").is_file()
    rows = [_episode_rows(root) for root in (tmp_path / "empty", sample[1]["dataset"])]
    assert rows[0] == rows[1] and len(rows[0]) == 3
    data = "data/chunk-000/file-000.parquet"
    digests = {
        hashlib.sha256((root / data).read_bytes()).hexdigest() for root in (tmp_path / "empty", sample[1]["dataset"])
    }
    assert len(digests) == 1  # deterministic: the same bytes as the command line's export
