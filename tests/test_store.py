"""The episode store: atomic commits, resume after a kill, and `data verify` finding every kind of damage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from latbot.data.convert import convert, finalize
from latbot.data.spaces import UnifiedTrajectory, fill_arm
from latbot.data.store import LOG_NAME, Episode, EpisodeStore, StoreError
from latbot.data.verify import verify_store
from latbot.testing.samples import make_libero_hdf5, synthetic_frames
from tests.conftest import REPO


def episode(key: str, steps: int = 12, size: int = 16, seed: int = 0) -> Episode:
    rng = np.random.default_rng(seed)
    traj = UnifiedTrajectory.empty(steps)
    fill_arm(traj, "right", position=np.cumsum(rng.normal(size=(steps, 3)), 0), gripper=rng.uniform(size=steps))
    return Episode(
        key=key,
        frames={"cam": synthetic_frames(steps, size, size, seed)},
        trajectory=traj,
        instruction=f"task {seed}",
        task=f"t{seed % 2}",
        subtasks=[(0, steps // 2, "reach")],
    )


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "store"
    with EpisodeStore.create(path, cameras=["cam"], image_size=(16, 16), chunk_frames=4, shard_frames=16) as s:
        for i in range(5):
            s.append(episode(f"ep{i}", steps=10 + i, seed=i))
        finalize(s)
    return path


def test_round_trip_reads_what_was_written(store_path):
    with EpisodeStore.open(store_path) as s:
        assert s.num_episodes == 5 and s.num_frames == sum(10 + i for i in range(5))
        for i in range(5):
            ref = episode(f"ep{i}", steps=10 + i, seed=i)
            got = s.read(i, slice(0, 10 + i))
            np.testing.assert_array_equal(got["frames/cam"], ref.frames["cam"])
            np.testing.assert_array_equal(got["actions"], ref.trajectory.actions)
            np.testing.assert_array_equal(s.read(i, np.array([1, 4, 7]))["states"], ref.trajectory.states[[1, 4, 7]])
        assert s.records[3].subtask_at(2) == "reach" and s.records[3].subtask_at(9) is None
        assert s.stats["actions"]["q01"][7] is not None and s.stats["actions"]["q01"][0] is None  # right arm only
    assert verify_store(store_path) == []


def test_files_are_sharded_not_per_episode(store_path):
    with EpisodeStore.open(store_path) as s:
        n = s.num_frames
    shard_files = list((store_path / "frames/cam").rglob("c/*/0/0/0"))
    assert len(shard_files) == -(-n // 16)  # ceil: one file per 16 frames, whatever the episode count


def test_append_guards(store_path):
    with EpisodeStore.open(store_path, mode="a") as s:
        with pytest.raises(StoreError, match="already in the store"):
            s.append(episode("ep0"))
        bad = episode("new")
        bad.frames["cam"] = bad.frames["cam"][:, :8]
        with pytest.raises(StoreError, match=r"camera 'cam' frames are uint8\(12, 8, 16, 3\)"):
            s.append(bad)
        nan = episode("nan")
        nan.trajectory.actions[3, 8] = np.nan
        with pytest.raises(StoreError, match="non-finite action value at step 3"):
            s.append(nan)
        with pytest.raises(StoreError, match=rf"another LatBot process \(pid {os.getpid()}\) is writing"):
            EpisodeStore.open(store_path, mode="a")
    with EpisodeStore.open(store_path) as s, pytest.raises(StoreError, match="read-only"):
        s.append(episode("x"))


def test_torn_commit_record_is_repaired_on_reopen(store_path):
    log = store_path / LOG_NAME
    good = log.read_bytes()
    log.write_bytes(good + b'{"index": 5, "offset"')  # a kill in the middle of the commit write
    assert any("torn" in p.what for p in verify_store(store_path))
    with EpisodeStore.open(store_path, mode="a") as s:
        assert s.num_episodes == 5
        s.append(episode("ep5", seed=5))
    assert log.read_bytes().startswith(good) and log.read_bytes().count(b"\n") == 6


def test_uncommitted_array_tail_is_truncated_on_resume(store_path):
    with EpisodeStore.open(store_path, mode="a") as s:
        n = s.num_frames
        s.array("frames/cam").resize((n + 7, 16, 16, 3))  # data written, commit never happened
        s.array("actions").resize((n + 7, 44))
    with EpisodeStore.open(store_path, mode="a") as s:
        assert s.array("frames/cam").shape[0] == n and s.array("actions").shape[0] == n


def test_verify_finds_wrong_format_version(store_path):
    meta = json.loads((store_path / "zarr.json").read_text())
    meta["attributes"]["latbot"]["format_version"] = 99
    (store_path / "zarr.json").write_text(json.dumps(meta))
    (problem,) = verify_store(store_path)
    assert "format version 99" in problem.what and "re-convert" in problem.what


def test_verify_finds_a_corrupt_chunk(store_path):
    shard = sorted((store_path / "frames/cam").rglob("c/*/0/0/0"))[1]
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF  # one flipped byte inside a compressed chunk
    shard.write_bytes(bytes(data))
    problems = verify_store(store_path)
    assert any("frames/cam" in p.where and "cannot be read" in p.what for p in problems), problems


def test_verify_finds_index_array_mismatch(store_path):
    log = store_path / LOG_NAME
    lines = log.read_text().splitlines()
    last = json.loads(lines[-1])
    last["length"] += 5
    log.write_text("\n".join([*lines[:-1], json.dumps(last)]) + "\n")
    problems = verify_store(store_path)
    assert any("has 60 frames, the commit log 65" in p.what for p in problems), problems


def test_verify_finds_nan_and_missing_manifest(store_path):
    with EpisodeStore.open(store_path, mode="a") as s:
        s.array("actions")[s.records[2].offset + 1, 9] = np.nan
    (store_path / "latbot.json").unlink()
    problems = [str(p) for p in verify_store(store_path)]
    assert any("NaN/inf at frame" in p and "episode 2, step 1" in p and "dims [9]" in p for p in problems), problems
    assert any("no latbot.json" in p and "interrupted" in p for p in problems)


def test_data_verify_cli_exit_codes(store_path):
    run = [sys.executable, "-m", "latbot", "data", "verify", str(store_path)]
    assert subprocess.run(run, capture_output=True, timeout=120).returncode == 0
    (store_path / "latbot.json").unlink()
    proc = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "problem:" in proc.stdout


def test_kill_during_convert_then_rerun_holds_each_episode_once(tmp_path):
    src = make_libero_hdf5(tmp_path / "src/task_demo.hdf5", demos=40, steps=20, size=32)
    out = tmp_path / "store"
    cmd = [
        sys.executable,
        "-m",
        "latbot",
        "data",
        "convert",
        str(src),
        "--format",
        "libero_hdf5",
        "--out",
        str(out),
        "--image-size",
        "32",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    log = out / LOG_NAME
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (log.is_file() and log.read_bytes().count(b"\n") >= 5):
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with EpisodeStore.open(out) as s:
        partial = s.num_episodes
    assert 5 <= partial < 40, "the kill must land in the middle of the conversion"
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{40 - partial} episode(s) added, {partial} already present" in done.stdout
    assert verify_store(out) == []
    reference = tmp_path / "reference"
    convert(registry_config(), src, reference, image_size=32, progress=False)
    with EpisodeStore.open(out) as s, EpisodeStore.open(reference) as ref:
        assert sorted(r.key for r in s.records) == sorted(r.key for r in ref.records)
        assert len({r.key for r in s.records}) == 40
        by_key = {r.key: r.index for r in ref.records}
        for rec in s.records:
            a, b = s.read(rec.index, slice(None)), ref.read(by_key[rec.key], slice(None))
            for name in a:
                np.testing.assert_array_equal(a[name], b[name])


def registry_config():
    from latbot import registry

    return registry.get("datasets", "libero_hdf5").Config()
