"""MetaWorld: scripted demonstrations into a store, and the closed-loop harness checked against known
answers (the experts succeed, a random policy does not)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from latbot import registry
from latbot.data.store import EpisodeStore
from latbot.data.verify import verify_store
from latbot.sim.base import SimulatorError, wilson_interval
from latbot.sim.evaluate import RandomPolicy, evaluate
from latbot.sim.generate import generate
from tests.conftest import REPO


def config(**kw):
    return registry.get("simulators", "metaworld").Config(**kw)


def test_wilson_interval_known_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)


def test_scripted_experts_through_the_harness_succeed():
    report = evaluate(config(), "scripted", ["reach", "drawer-open", "button-press-topdown"], 3, progress=False)
    assert report["overall"]["success_rate"] >= 0.9, report["tasks"]
    assert report["overall"]["errors"] == 0
    assert {t["task"] for t in report["tasks"]} == {"reach", "drawer-open", "button-press-topdown"}
    assert all(0 < t["mean_length"] < 500 for t in report["tasks"])


def test_random_policy_scores_near_zero_with_images_and_videos(tmp_path):
    class CameraRandom(RandomPolicy):
        def __init__(self):
            super().__init__(4, seed=1)
            self.cameras = ["corner"]

        def predict(self, observation):
            assert observation["images"]["corner"].shape == (64, 64, 3)
            return np.repeat(super().predict(observation), 3, axis=0)  # a 3-step chunk

    report = evaluate(
        config(max_steps=60),
        lambda task: CameraRandom(),
        ["pick-place", "drawer-open"],
        2,
        image_size=64,
        execute_steps=3,
        video_dir=tmp_path / "videos",
        progress=False,
    )
    assert report["overall"]["success_rate"] <= 0.25
    assert all(e["steps"] == 60 for e in report["episodes"] if not e["success"])
    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 4 and all(v.stat().st_size > 0 for v in videos)


def test_a_crash_in_one_episode_is_reported_and_the_others_run():
    class Flaky(RandomPolicy):
        calls = 0

        def reset(self, task, instruction):
            Flaky.calls += 1
            if Flaky.calls == 2:
                raise RuntimeError("policy server went away")

    report = evaluate(config(max_steps=10), lambda task: Flaky(4), ["reach"], 3, progress=False, allow_crashes=True)
    errors = [e["error"] for e in report["episodes"]]
    assert errors[0] is None and errors[2] is None and "policy server went away" in errors[1]
    assert report["tasks"][0]["errors"] == 1 and report["overall"]["episodes"] == 3  # the crash is a failure


def test_gen_sim_store_language_subtasks_frames_and_determinism(tmp_path):
    out = tmp_path / "mt"
    result = generate(config(), ["pick-place", "drawer-open"], 2, out, image_size=64, seed=3, progress=False)
    assert result.added == 4 and result.per_task == {"pick-place": 2, "drawer-open": 2}
    assert verify_store(out) == []
    with EpisodeStore.open(out) as s:
        assert s.cameras == ["corner"] and s.image_size == (64, 64)
        pick = next(r for r in s.records if r.task == "pick-place")
        assert pick.instruction == "pick up the puck and place it at the goal" and pick.success
        assert [t for _, _, t in pick.subtasks] == ["reach the puck", "grasp the puck", "move the puck to the goal"]
        assert pick.subtasks[0][0] == 0 and pick.subtasks[-1][1] == pick.length
        drawer = next(r for r in s.records if r.task == "drawer-open")
        assert [t for _, _, t in drawer.subtasks] == ["reach the drawer handle", "pull the drawer open"]
        data = s.read(pick.index, slice(None))
        native = s.array("native_actions")[pick.offset : pick.stop]
        np.testing.assert_allclose(data["actions"][:, 7:10], native[:, :3], atol=1e-6)  # right slot = xyz delta
        np.testing.assert_allclose(data["actions"][:, 13], (native[:, 3] + 1) / 2, atol=1e-6)
        mask = pick.masks()[0]
        assert mask[7:10].all() and mask[13] and not mask[10:13].any() and mask.sum() == 4
        frames = data["frames/corner"].astype(int)
        assert frames.mean() > 40 and frames.std() > 20, "frames must not be black or blank"
        # right way up: the wooden table fills the lower half of the corner view, not the upper
        wood = (frames[..., 0] > frames[..., 2] + 25) & (frames[..., 1] > frames[..., 2] + 10) & (frames[..., 1] > 50)
        assert wood[:, 32:].mean() > 2 * wood[:, :32].mean()
    again = generate(config(), ["pick-place", "drawer-open"], 2, out, image_size=64, seed=3, progress=False)
    assert again.added == 0 and again.skipped == 4  # resumed: nothing duplicated
    twin = tmp_path / "twin"
    generate(config(), ["pick-place"], 1, twin, image_size=64, seed=3, progress=False)
    with EpisodeStore.open(out) as a, EpisodeStore.open(twin) as b:
        assert a.records[0].key == b.records[0].key
        for key, value in a.read(0, slice(None)).items():
            np.testing.assert_array_equal(value, b.read(0, slice(None))[key])  # deterministic per seed


def test_action_noise_perturbs_the_applied_actions_reproducibly(tmp_path):
    """`action_noise` σ: the recorded actions are the noisy ones applied (clipped to MetaWorld's [−1, 1]), differ
    from the clean expert's from the first step, repeat for the same seed, and the store records σ."""
    import json

    clean, noisy, again = (tmp_path / n for n in ("clean", "noisy", "again"))
    generate(config(), ["reach"], 1, clean, image_size=32, seed=1, progress=False)
    for out in (noisy, again):
        generate(config(), ["reach"], 1, out, image_size=32, seed=1, progress=False, action_noise=0.3)
    native = {}
    for out in (clean, noisy, again):
        with EpisodeStore.open(out) as s:
            native[out.name] = s.array("native_actions")[: s.records[0].stop]
    first = min(len(native["clean"]), len(native["noisy"]))
    diff = native["noisy"][:first] - native["clean"][:first]
    assert np.abs(diff[0]).max() > 0.01 and 0.1 < diff[:, :3].std() < 0.6  # σ = 0.3 on the arm, clipped
    assert np.abs(native["noisy"]).max() <= 1.0 and np.array_equal(native["noisy"], native["again"])
    assert json.loads((noisy / "latbot.json").read_text())["extra"]["action_noise"] == 0.3
    assert "action_noise" not in json.loads((clean / "latbot.json").read_text())["extra"]
    from latbot.data.store import StoreError

    before = (noisy / "latbot.json").read_bytes()
    with pytest.raises(StoreError, match=r"--action-noise 0.3, not 0.1; choose another --out"):
        generate(config(), ["reach"], 2, noisy, image_size=32, seed=1, progress=False, action_noise=0.1)
    assert (noisy / "latbot.json").read_bytes() == before  # refused before anything was written
    from latbot.sim.generate import Perturbation, _check_same_perturbation, _open_store

    unfinished = tmp_path / "unfinished"  # created, interrupted before its first episode was finished
    _open_store(config(), unfinished, ["corner"], 32, "zstd", Perturbation(0.3)).close()
    _check_same_perturbation(unfinished, Perturbation(0.3))
    with pytest.raises(StoreError, match=r"--action-noise 0.3, not 0.0"):
        generate(config(), ["reach"], 1, unfinished, image_size=32, seed=1, progress=False)


def test_gripper_holds_replace_the_experts_gripper_in_runs_and_the_fingers_follow(tmp_path):
    """`gripper_holds` p: the reach expert commands the gripper 0 throughout; with holds the recorded command is
    fully open (−1) or closed (+1) in runs of at least 8 steps, the arm's commands are the expert's, the fingers
    open and close with it, the same seed repeats, the store records p, and resuming with another p is refused."""
    from latbot.data.store import StoreError
    from latbot.sim.generate import HOLD_STEPS

    clean, held, again = (tmp_path / n for n in ("clean", "held", "again"))
    generate(config(), ["reach"], 1, clean, image_size=32, seed=3, progress=False)
    for out in (held, again):
        generate(config(), ["reach"], 1, out, image_size=32, seed=3, progress=False, gripper_holds=0.1)
    native, opening = {}, {}
    for out in (clean, held, again):
        with EpisodeStore.open(out) as s:
            stop = s.records[0].stop
            native[out.name], opening[out.name] = s.array("native_actions")[:stop], s.array("native_states")[:stop, 3]
    assert np.all(native["clean"][:, 3] == 0.0) and np.array_equal(native["held"], native["again"])
    grip = native["held"][:, 3]
    assert set(np.unique(grip)) <= {-1.0, 0.0, 1.0} and {-1.0, 1.0} <= set(np.unique(grip))
    edges = np.flatnonzero(np.diff(np.r_[0, (grip != 0).astype(int), 0]))
    runs = edges[1::2] - edges[::2]
    ends_early = edges[1::2] == len(grip)  # a run cut short by the episode's end
    assert np.all((runs >= HOLD_STEPS[0]) | ends_early), runs
    first = min(len(grip), len(native["clean"]))
    np.testing.assert_allclose(native["held"][:first, :3], native["clean"][:first, :3], atol=0.05)
    assert opening["clean"].min() > 0.9 and opening["held"].min() < 0.8  # closing holds close the fingers
    extra = {out.name: json.loads((out / "latbot.json").read_text())["extra"] for out in (clean, held)}
    assert extra["held"]["gripper_holds"] == 0.1 and "gripper_holds" not in extra["clean"]
    before = (held / "latbot.json").read_bytes()
    with pytest.raises(StoreError, match=r"--gripper-holds 0.1, not 0; choose another --out"):
        generate(config(), ["reach"], 2, held, image_size=32, seed=3, progress=False)
    assert (held / "latbot.json").read_bytes() == before


def test_gripper_holds_on_a_robot_without_a_gripper_exit_2(tmp_path):
    """The example plugin's dot robot has no gripper: `gen-sim --gripper-holds` says so and writes nothing."""
    out = tmp_path / "dots"
    result = subprocess.run(
        [sys.executable, "-m", "latbot", "data", "gen-sim", "--sim", "dot_reach", "--tasks", "reach-red",
         "--episodes", "1", "-o", str(out), "--image-size", "32", "--gripper-holds", "0.1"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2 and "has no gripper; drop the option" in result.stderr, result.stderr
    assert not out.exists()


def test_two_live_simulators_do_not_render_black_frames():
    a, b = registry.build("simulators", config()), registry.build("simulators", config())
    try:
        ea, eb = a.episode("reach", 0, ["corner"], 48), b.episode("door-open", 0, ["corner"], 48)
        for _ in range(3):
            for env in (ea, eb, ea):
                env.step(np.zeros(4))
                assert env.render("corner").mean() > 40
    finally:
        a.close()
        b.close()


def test_unknown_task_and_camera_are_clear_errors():
    sim = registry.build("simulators", config())
    with pytest.raises(SimulatorError, match="unknown MetaWorld task 'pick-plce'; did you mean pick-place"):
        sim.task_names(["pick-plce"])
    assert sim.task_names(["MT10"])[:3] == ["reach", "push", "pick-place"] and len(sim.task_names(["MT50"])) == 50
    assert sim.task_names(["reach-v3,push", "reach"]) == ["reach", "push"]
    with pytest.raises(SimulatorError, match="unknown MetaWorld camera"):
        sim.episode("reach", 0, ["front"], 32)
    proc = subprocess.run(
        [sys.executable, "-m", "latbot", "eval", "sim", "--policy", "scripted", "--tasks", "pick-plce"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2 and "did you mean pick-place" in proc.stderr and "Traceback" not in proc.stderr


def test_eval_cli_json_report():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "latbot",
            "eval",
            "sim",
            "--policy",
            "scripted",
            "--tasks",
            "reach",
            "--episodes",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["overall"]["successes"] == 2 and report["tasks"][0]["ci95"][1] == 1.0
