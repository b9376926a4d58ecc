"""`latbot data convert | info | stats` from the command line (real processes, real exit codes)."""

from __future__ import annotations

import json
import subprocess
import sys

from latbot.data.store import EpisodeStore
from latbot.testing.samples import make_lerobot_v30
from tests.conftest import REPO


def latbot(*args):
    return subprocess.run(
        [sys.executable, "-m", "latbot", *args], capture_output=True, text=True, cwd=REPO, timeout=300
    )


def test_convert_with_adapter_options_then_info_and_stats(tmp_path):
    src = make_lerobot_v30(tmp_path / "src", episodes=2, steps=10, codec="libx264")
    out = tmp_path / "store"
    # state: xyz + a quaternion in the source's state vector, read into the unified state
    proc = latbot(
        "data",
        "convert",
        str(src),
        "--format",
        "lerobot",
        "--out",
        str(out),
        "--image-size",
        "16",
        "--set",
        "arms=[{state_position: [0, 3], state_rotation: [3, 7]}]",
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 episode(s) added, 0 already present, 0 failed; 2 in the store" in proc.stdout
    info = json.loads(latbot("data", "info", str(out), "--json").stdout)
    assert info["episodes"] == 2 and info["frames"] == 20 and info["cameras"] == ["top"]
    assert info["image_size"] == [16, 16] and info["embodiments"] == {"widowx": 2}
    assert info["instructions"] == ["open the top drawer", "pick up the red cube"] and info["has_stats"]
    with EpisodeStore.open(out) as s:
        assert s.records[0].masks()[1][8:15].all() and not s.records[0].masks()[1][15]  # no gripper state given
    text = latbot("data", "info", str(out)).stdout
    assert "episodes: 2" in text and "- pick up the red cube" in text
    stats = latbot("data", "stats", str(out))
    assert stats.returncode == 0 and "recomputed over 20 frames" in stats.stdout
    again = latbot("data", "convert", str(src), "--format", "lerobot", "--out", str(out), "--image-size", "16")
    assert "0 episode(s) added, 2 already present" in again.stdout


def test_convert_errors_are_one_line_with_exit_2(tmp_path):
    src = make_lerobot_v30(tmp_path / "src", episodes=1, steps=6, codec="libx264")
    bad_option = latbot(
        "data",
        "convert",
        str(src),
        "--format",
        "lerobot",
        "--out",
        str(tmp_path / "s"),
        "--set",
        "arms=[{arm: middle}]",
    )
    assert bad_option.returncode == 2 and "lerobot option arms.0.arm" in bad_option.stderr
    unknown = latbot("data", "convert", str(src), "--format", "lerobt", "--out", str(tmp_path / "s"))
    assert unknown.returncode == 2 and "did you mean 'lerobot'?" in unknown.stderr
    missing = latbot("data", "convert", str(tmp_path / "nope"), "--format", "lerobot", "--out", str(tmp_path / "s"))
    assert missing.returncode == 2 and "source not found" in missing.stderr
    not_store = latbot("data", "info", str(tmp_path))
    assert not_store.returncode == 2 and "not an episode store" in not_store.stderr
    for proc in (bad_option, unknown, missing, not_store):
        assert "Traceback" not in proc.stderr
