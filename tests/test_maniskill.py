"""ManiSkill3 (`maniskill`) and SIMPLER (`simpler`): the scripted experts succeed, demonstrations go through
gen-sim into a store, a tiny policy finetuned on them is evaluated closed-loop through `eval sim`; SIMPLER
refuses Google-robot tasks and says which assets are missing (and how to get them) before writing anything.
The real SIMPLER tasks run only where their assets are (skipped here: docs/simulators.md)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("mani_skill", reason="the `maniskill` extra is not installed")

from latbot import registry
from latbot.sim import maniskill as ms
from latbot.sim.base import SimulatorError
from latbot.sim.evaluate import evaluate, run_episode
from tests.conftest import REPO

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def config(**kw):
    return registry.get("simulators", "maniskill").Config(**kw)


def cli(*args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "latbot", *args], capture_output=True, text=True, cwd=REPO, env=env or ENV,
        timeout=timeout,
    )  # fmt: skip


def errors(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def test_scripted_experts_succeed_through_the_harness():
    report = evaluate(config(), "scripted", ["cubes"], 2, progress=False)
    assert [t["task"] for t in report["tasks"]] == ["PickCube-v1", "PushCube-v1", "PullCube-v1", "StackCube-v1"]
    assert report["overall"]["successes"] == 8, report["tasks"]
    assert report["embodiment"] == "franka_panda" and report["overall"]["errors"] == 0
    assert all(0 < t["mean_length"] <= 50 for t in report["tasks"])  # within ManiSkill's own step limit


@pytest.mark.parametrize(
    ("task", "texts"),
    [
        ("PickCube-v1", ["reach the red cube", "grasp the red cube", "move the red cube to the goal"]),
        ("StackCube-v1", ["reach the red cube", "grasp the red cube", "put the red cube on the green cube",
                          "release the red cube"]),
        ("PullCube-v1", ["reach the cube", "pull the cube onto the target"]),
    ],
)  # fmt: skip
def test_expert_demonstrations_are_cut_into_subtasks(task, texts):
    from latbot.sim.generate import rollout_expert

    sim = registry.build("simulators", config())
    try:
        demo = rollout_expert(sim, task, 3, [], 32)
        segments = sim.subtask_segments(task, demo)
    finally:
        sim.close()
    assert demo.success and demo.states.shape == (len(demo), 8) and demo.actions.shape == (len(demo), 7)
    assert [t for _, _, t in segments] == texts
    assert segments[0][0] == 0 and segments[-1][1] == len(demo)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(segments))  # contiguous


def test_actions_are_converted_to_maniskill_conventions():
    # franka_panda: gripper −1 open / +1 close, axis-angle in units of 0.1 rad; ManiSkill: +1 open, and its
    # controller applies −0.1 × the (XYZ Euler) rotation action
    a = ms.panda_env_action(np.array([0.5, 0, 2.0, 0, 0, 0.5, 1.0]))
    np.testing.assert_allclose(a, [0.5, 0, 1.0, 0, 0, -0.5, -1.0], atol=1e-6)
    assert ms.panda_env_action(np.array([0, 0, 0, 3.0, 4.0, 0, -1]))[6] == 1.0
    np.testing.assert_allclose(np.linalg.norm(ms.native_panda_action(np.array([0, 0, 0, 3.0, 4.0, 0, 0]))[3:6]), 1.0)
    # widowx: metres and radians as they are, gripper open amount 1 → +1 (open), 0 → −1
    w = ms.widowx_env_action(np.array([0.01, -0.02, 0.0, 0.0, 0.0, 0.1, 0.0]))
    np.testing.assert_allclose(w, [0.01, -0.02, 0, 0, 0, 0.1, -1.0], atol=1e-6)
    assert ms.widowx_env_action(np.array([0, 0, 0, 0, 0, 0, 1.0]))[6] == 1.0


def test_unknown_task_camera_and_robot_are_clear_errors():
    sim = registry.build("simulators", config())
    with pytest.raises(SimulatorError, match="unknown ManiSkill3 task 'PickCub-v1'; did you mean PickCube-v1"):
        sim.task_names(["PickCub-v1"])
    assert sim.task_names(["PushCube", "PushCube-v1"]) == ["PushCube-v1"]
    with pytest.raises(SimulatorError, match="unknown maniskill camera"):
        sim.episode("PushCube-v1", 0, ["front"], 32)
    big = sim.episode("PushCube-v1", 2**40 + 3, [], 32)  # gen-sim's derived seeds exceed ManiSkill's 32 bits
    assert big.max_steps == 50 and big.fps == 20.0 and big.step(np.zeros(7)) is False
    assert big.observe([])["state"].shape == (8,)
    with pytest.raises(SimulatorError, match="has no scripted expert"):
        sim.scripted_policy("PushT-v1")
    with pytest.raises(SimulatorError, match="PickCubeSO100-v1' cannot run with control mode 'pd_ee_delta_pose'"):
        sim.episode("PickCubeSO100-v1", 0, [], 32)
    sim.close()


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """gen-sim (CLI) → a store of PushCube-v1 demonstrations → a tiny finetuning run (3 steps)."""
    from latbot import stages
    from latbot.recipes import load_recipe

    root = tmp_path_factory.mktemp("maniskill")
    store = root / "store"
    proc = cli("data", "gen-sim", "--sim", "maniskill", "--tasks", "PushCube-v1", "--episodes", "3", "--out",
               str(store), "--image-size", "32")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 episode(s) added" in proc.stdout
    recipe = REPO / "recipes" / "tiny" / "finetune.yaml"
    sets = [f"log.out_dir={root}", "log.run_name=ft", "log.progress=false", f"data.sources=[{{store: {store}}}]",
            "data.image_size=32", "data.num_workers=0", "train.steps=3", "train.checkpoint_every=3",
            "train.warmup_steps=1", "train.global_batch_size=4", "train.micro_batch_size=4"]  # fmt: skip
    run = stages.run(load_recipe(recipe, sets), recipe_path=recipe)
    return {"root": root, "store": store, "run": run}


def test_gen_sim_store_holds_panda_demonstrations_with_subtasks(finetuned):
    from latbot.data.store import EpisodeStore

    with EpisodeStore.open(finetuned["store"]) as store:
        records = list(store.records)
        assert store.attrs["source_format"] == "maniskill" and store.cameras == ["base_camera"]
        frames = store.read(0, slice(0, 2))
    assert len(records) == 3 and {r.task for r in records} == {"PushCube-v1"}
    assert all(r.embodiment == "franka_panda" and r.success and r.fps == 20.0 for r in records)
    assert all([t for _, _, t in r.subtasks] == ["reach the cube", "push the cube onto the target"] for r in records)
    assert all(r.subtasks[0][0] == 0 and r.subtasks[-1][1] == r.length for r in records)
    image = frames["frames/base_camera"]
    assert image.shape == (2, 32, 32, 3) and image.std() > 5  # a rendered scene


def test_finetuned_policy_is_evaluated_closed_loop_with_report_and_videos(finetuned):
    out, videos = finetuned["root"] / "eval", finetuned["root"] / "videos"
    proc = cli("eval", "sim", "--sim", "maniskill", "--policy", str(finetuned["run"]), "--tasks", "PushCube-v1",
               "--episodes", "2", "--image-size", "32", "--set", "max_steps=8", "--video-dir", str(videos),
               "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["simulator"] == "maniskill" and report["embodiment"] == "franka_panda"
    assert report["overall"]["episodes"] == 2 and report["overall"]["errors"] == 0
    assert all(e["steps"] <= 8 for e in report["episodes"])
    assert len(list(videos.glob("PushCube-v1_seed*.mp4"))) == 2
    assert "PushCube-v1" in proc.stdout and "overall" in proc.stdout


# -- SIMPLER ------------------------------------------------------------------------------------------------
def simpler(**kw):
    return registry.build("simulators", registry.get("simulators", "simpler").Config(**kw))


def test_simpler_refuses_google_robot_tasks_in_one_line(tmp_path):
    assert registry.get("simulators", "simpler").default_episodes == 24  # `eval sim` without --episodes
    with pytest.raises(SimulatorError, match=r"not available in ManiSkill3 \(ManiSkill issue 1153\)"):
        simpler().task_names(["google_robot_pick_coke_can"])
    proc = cli("eval", "sim", "--sim", "simpler", "--policy", "random", "--tasks", "pick_coke_can",
               "--out", str(tmp_path / "eval"))  # fmt: skip
    assert proc.returncode == 2 and len(errors(proc)) == 1, proc.stderr
    assert "not available in ManiSkill3 (ManiSkill issue 1153)" in proc.stderr
    assert not (tmp_path / "eval").exists()


def test_simpler_names_the_missing_assets_and_their_download_command(tmp_path):
    empty = tmp_path / "assets"
    empty.mkdir()
    env = {**ENV, "MS_ASSET_DIR": str(empty)}
    proc = cli("eval", "sim", "--sim", "simpler", "--policy", "random", "--tasks", "bridge", "--episodes", "24",
               "--out", str(tmp_path / "eval"), env=env)  # fmt: skip
    assert proc.returncode == 2 and len(errors(proc)) == 1, proc.stderr
    line = errors(proc)[0]
    assert "bridge_v2_real2sim" in line and "widowx250s" in line and str(empty) in line
    assert "python -m mani_skill.utils.download_asset bridge_v2_real2sim -y" in line
    assert "python -m mani_skill.utils.download_asset widowx250s -y" in line
    assert not (tmp_path / "eval").exists() and list(empty.iterdir()) == []  # nothing written, nothing downloaded


class FakeBridgeEnv:
    """Stands in for a SIMPLER environment: `success` per step from a script."""

    def __init__(self, successes):
        self.successes = list(successes)
        self.actions = []

    def step(self, action):
        import torch

        self.actions.append(action)
        return {}, 0.0, False, False, {"success": torch.tensor([self.successes[len(self.actions) - 1]])}


@pytest.mark.parametrize("mode", ["end", "any"])
def test_simpler_success_at_the_end_and_at_any_step(mode):
    sim = simpler(success=mode)

    def episode(successes):
        e = ms.SimplerEpisode.__new__(ms.SimplerEpisode)
        e.env, e.sim, e.task, e.instruction = FakeBridgeEnv(successes), sim, "PutCarrotOnPlateInScene-v1", "x"
        e.max_steps, e.fps, e.steps, e.success_now, e.success_any = len(successes), 5.0, 0, False, False
        e.observe = lambda cameras: {"images": {}, "state": np.zeros(8, np.float32), "instruction": "x"}
        e.close = lambda: None
        return e

    class Still:
        cameras = ()

        def reset(self, task, instruction):
            pass

        def predict(self, observation):
            return np.array([[0, 0, 0, 0, 0, 0, 1.0]] * 4, np.float32)

    layouts = {1: [False, True, True, False, False], 2: [False, False, False, True, True]}
    sim.episode = lambda task, seed, cameras, size: episode(layouts[seed])
    first, second = (run_episode(sim, Still(), "PutCarrotOnPlateInScene-v1", s, 32, 4, None, "x") for s in (1, 2))
    if mode == "end":  # the episode runs to its limit; the final step decides
        assert (first.success, first.steps, first.metrics) == (False, 5, {"success_at_any_step": True,
                                                                          "success_at_end": False})  # fmt: skip
        assert (second.success, second.steps, second.metrics["success_at_end"]) == (True, 5, True)
    else:  # stops at the first success
        assert (first.success, first.steps) == (True, 2) and (second.success, second.steps) == (True, 4)


@pytest.mark.skipif(
    bool(ms.missing_assets("PutCarrotOnPlateInScene-v1", ms.BRIDGE_ROBOT_ASSETS)),
    reason="SIMPLER's assets (bridge_v2_real2sim, widowx250s) are not downloaded: "
    "python -m mani_skill.utils.download_asset bridge_v2_real2sim -y; ... widowx250s -y",
)
def test_simpler_bridge_tasks_run_with_their_assets():
    report = evaluate(registry.get("simulators", "simpler").Config(max_steps=3), "random", ["bridge"], 1,
                      image_size=64, progress=False)  # fmt: skip
    assert len(report["tasks"]) == 4 and report["overall"]["errors"] == 0
    assert report["embodiment"] == "widowx" and all(e["steps"] == 3 for e in report["episodes"])
    assert all(set(e["metrics"]) == {"success_at_end", "success_at_any_step"} for e in report["episodes"])
