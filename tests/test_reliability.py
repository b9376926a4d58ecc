"""Every bad-input class of the Reliability issue, as regression tests: each case of tools/bad_inputs.py
must end as one clear error (or, for the retry cases, just work); plus what a table cannot show."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import threading
import time

import numpy as np
import pytest

from latbot.data.store import EpisodeStore, StoreError
from latbot.data.verify import verify_store
from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("bad_inputs", REPO / "tools" / "bad_inputs.py")
bad_inputs = importlib.util.module_from_spec(_spec)
sys.modules["bad_inputs"] = bad_inputs  # dataclasses look their module up there
_spec.loader.exec_module(bad_inputs)


@pytest.mark.parametrize("case", bad_inputs.CASES, ids=[f"{c.entry}: {c.name}" for c in bad_inputs.CASES])
def test_bad_input_class(case):
    outcome, _ = bad_inputs.run_case(case)
    assert outcome == ("ok" if case.expect == "ok" else "clear"), f"{case.entry}: {case.name} → {outcome}"


def _store_with_native(tmp_path):
    from latbot.data.spaces import UnifiedTrajectory, fill_arm
    from latbot.data.store import Episode
    from latbot.testing.samples import synthetic_frames

    path = tmp_path / "store"
    with EpisodeStore.create(path, cameras=["a", "b"], image_size=(8, 8), chunk_frames=2, shard_frames=4) as s:
        for i in range(2):
            traj = UnifiedTrajectory.empty(6)
            fill_arm(traj, "right", position=np.zeros((6, 3)), gripper=np.zeros(6))  # all zeros: still written
            frames = {c: np.zeros((6, 8, 8, 3), np.uint8) if i == 0 else synthetic_frames(6, 8, 8) for c in "ab"}
            s.append(
                Episode(f"e{i}", frames, traj, "x", native_actions=np.zeros((6, 7)), native_states=np.ones((6, 2)))
            )
    return path


ARRAYS = ["frames/a", "frames/b", "actions", "states", "native_actions", "native_states"]


@pytest.mark.parametrize("name", ARRAYS)
def test_a_deleted_block_of_every_array_is_found_by_verify_and_fails_reads(tmp_path, name):
    path = _store_with_native(tmp_path)
    assert verify_store(path) == [] or all("manifest" in str(p) or "latbot.json" in str(p) for p in verify_store(path))
    block = sorted(p for p in (path / name / "c").rglob("*") if p.is_file())[0]  # all-zero blocks exist on disk
    block.unlink()
    assert any("missing" in p.what and name in p.where for p in verify_store(path))
    with EpisodeStore.open(path) as s, pytest.raises(StoreError, match="missing on disk"):
        if name.startswith("native"):
            s.read_rows(name, 0, s.num_frames)
        else:
            s.read(0, slice(None))


def test_a_record_longer_than_the_arrays_is_refused_on_open(tmp_path):
    path = _store_with_native(tmp_path)
    log = path / "episodes.jsonl"
    lines = log.read_text().splitlines()
    rec = json.loads(lines[-1])
    rec["length"] += 3
    log.write_text("\n".join([*lines[:-1], json.dumps(rec)]) + "\n")
    with pytest.raises(StoreError, match="commit log's episodes need 15"):
        EpisodeStore.open(path)
    assert any("has 12 frames, the commit log 15" in p.what for p in verify_store(path))


def test_retry_after_any_failure_converts_everything(tmp_path):
    from latbot.data.adapters.base import SourceError
    from latbot.data.adapters.lerobot import LeRobotAdapter
    from latbot.data.convert import convert
    from latbot.testing.samples import make_lerobot_v21

    src = make_lerobot_v21(tmp_path / "src", episodes=3, steps=6, size=16, codec="libx264")
    second = src / "data/chunk-000/episode_000001.parquet"
    good = second.read_bytes()
    second.write_bytes(b"garbage")
    out = tmp_path / "out"
    with pytest.raises(SourceError):
        convert(LeRobotAdapter.Config(), src, out, image_size=16, progress=False)
    assert (out / "zarr.json").exists()  # one episode committed: kept, resumable
    second.write_bytes(good)
    result = convert(LeRobotAdapter.Config(), src, out, image_size=16, progress=False)
    assert (result.added, result.skipped, result.total_episodes) == (2, 1, 3)
    assert verify_store(out) == []


def test_server_shuts_down_within_a_second_with_clients_connected():
    from latbot.serve.client import PolicyClient
    from latbot.serve.server import PolicyServer

    server = PolicyServer(bad_inputs.stub_policy(), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    clients = [PolicyClient(port=server.port) for _ in range(3)]
    t0 = time.perf_counter()
    server.shutdown()
    assert time.perf_counter() - t0 < 1.0
    for c in clients:
        c.close()


def test_keepalive_timeouts_log_one_line(caplog):
    import logging

    from latbot.serve.server import _library_logger

    try:
        raise TimeoutError("keepalive ping timeout")
    except TimeoutError:
        with caplog.at_level(logging.INFO, logger="latbot.serve.websockets"):
            _library_logger().error("connection handler failed", exc_info=True)
    (record,) = caplog.records
    assert record.exc_info is None and "TimeoutError: keepalive ping timeout" in record.getMessage()
    assert "Traceback" not in caplog.text


def test_server_limits_are_validated():
    from latbot.errors import LatBotError
    from latbot.serve.server import ServerLimits

    with pytest.raises(LatBotError, match="max_connections"):
        ServerLimits(max_connections=0)
    with pytest.raises(LatBotError, match="at least max_message_bytes"):
        ServerLimits(max_message_bytes=1 << 20, max_inflight_bytes=1 << 19)


def test_in_flight_budget_answers_503_instead_of_buffering():
    from latbot.serve.server import _ByteBudget

    budget = _ByteBudget(100)
    assert budget.take(60) and not budget.take(60)
    budget.give(60)
    assert budget.take(100)


def test_stats_refuse_non_finite_valid_values(tmp_path):
    from latbot.data.convert import finalize

    path = _store_with_native(tmp_path)
    with EpisodeStore.open(path, mode="a") as s:
        s.array("actions")[3, 7] = np.nan  # dim 7 is valid (right arm x)
        with pytest.raises(StoreError, match="non-finite value in episode 0"):
            finalize(s)
    shutil.rmtree(path)
