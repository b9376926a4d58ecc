"""The simulator and embodiment contracts: checks over every registered simulator and embodiment, and a
third simulator written outside latbot/ (a 2-D point mass reaching a coloured square, its own robot)
that goes through `latbot data gen-sim` → `latbot train` (LAM, distill, finetune) → `latbot eval sim`
with nothing in latbot/ knowing about it."""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
import pytest
from pydantic import Field
from typer.testing import CliRunner

from latbot import registry
from latbot.cli import app
from latbot.config import PluginConfig
from latbot.data.embodiments import Embodiment, unified_mask
from latbot.data.spaces import ACTION_DIM, ACTION_POS, STATE_DIM, STATE_POS
from latbot.sim.base import Demonstration, Simulator, SimulatorError, split_names
from tests.conftest import REPO

# -- the toy plugins (what a third party would write) -------------------------------------------------------
STEP = 0.08  # metres the point moves per step at full command
R = "right"


class PointMassEmbodiment(Embodiment):
    """A point in the plane. Native state (2): x, y in metres. Native action (2): velocity command in
    [−1, 1] per axis (× STEP metres per step). Unified: the right arm's x, y; actions as displacements."""

    class Config(PluginConfig):
        type: Literal["point_mass"] = "point_mass"

    native_state_dim = 2
    native_action_dim = 2
    action_mask = unified_mask(ACTION_DIM, slice(ACTION_POS[R].start, ACTION_POS[R].start + 2))
    state_mask = unified_mask(STATE_DIM, slice(STATE_POS[R].start, STATE_POS[R].start + 2))

    def states_to_unified(self, states: np.ndarray) -> np.ndarray:
        out = np.zeros((len(states), STATE_DIM), np.float32)
        out[:, self.state_mask] = states
        return out

    def actions_to_unified(self, actions: np.ndarray) -> np.ndarray:
        out = np.zeros((len(actions), ACTION_DIM), np.float32)
        out[:, self.action_mask] = STEP * np.clip(actions, -1, 1)
        return out

    def actions_to_native(self, actions: np.ndarray) -> np.ndarray:
        return np.clip(actions[:, self.action_mask] / STEP, -1, 1)


COLOURS = {"red": (220, 40, 40), "blue": (40, 80, 230)}
TASKS = {f"reach-{c}": f"move the dot onto the {c} square" for c in COLOURS}


class PointReachSimulator(Simulator):
    """Two squares (red, blue) at seed-drawn places in the unit square; the task names the one to reach."""

    class Config(PluginConfig):
        type: Literal["point_reach"] = "point_reach"
        max_steps: int = Field(30, ge=1)
        radius: float = Field(0.1, gt=0, description="Success distance to the square's centre.")
        hold_steps: int = Field(2, ge=0)

    embodiment = "point_mass"
    cameras = ("top",)
    default_camera = "top"

    def task_names(self, spec: list[str]) -> list[str]:
        names = split_names(spec)
        unknown = [n for n in names if n not in TASKS]
        if unknown:
            raise SimulatorError(f"unknown point_reach task(s) {unknown} (valid: {', '.join(TASKS)})")
        return list(dict.fromkeys(names))

    def instruction(self, task: str) -> str:
        return TASKS[task]

    def episode(self, task: str, seed: int, cameras: list[str], image_size: int) -> PointReachEpisode:
        if set(cameras) - set(self.cameras):
            raise SimulatorError(f"unknown point_reach camera(s) {cameras} (valid: top)")
        return PointReachEpisode(self, task, seed, image_size)

    def scripted_policy(self, task: str) -> ReachExpert:
        return ReachExpert()

    @property
    def hold_steps(self) -> int:
        return self.config.hold_steps

    def applied_action(self, action: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(action, np.float32), -1, 1)

    def subtask_segments(self, task: str, demo: Demonstration) -> list[tuple[int, int, str]]:
        colour = task.removeprefix("reach-")
        priv = np.stack(demo.privileged)  # (T, 4): position, goal
        near = np.flatnonzero(np.linalg.norm(priv[:, :2] - priv[:, 2:], axis=1) < 2 * self.config.radius)
        cut = int(near[0]) if near.size else len(demo)
        segments = [(0, cut, f"move towards the {colour} square"), (cut, len(demo), f"stop on the {colour} square")]
        return [(a, b, t) for a, b, t in segments if b > a]


class PointReachEpisode:
    def __init__(self, sim: PointReachSimulator, task: str, seed: int, image_size: int):
        rng = np.random.default_rng(seed)
        self.task, self.instruction, self.size = task, sim.instruction(task), image_size
        self.max_steps, self.fps, self.radius = sim.config.max_steps, 10.0, sim.config.radius
        self.squares = {"red": rng.uniform(0.15, 0.85, 2)}
        while "blue" not in self.squares or np.linalg.norm(self.squares["blue"] - self.squares["red"]) < 0.4:
            self.squares["blue"] = rng.uniform(0.15, 0.85, 2)
        self.goal = self.squares[task.removeprefix("reach-")]
        self.pos = rng.uniform(0.05, 0.95, 2)

    def render(self) -> np.ndarray:
        """(S, S, 3) uint8: grey floor, the two squares, the point as a white disc."""
        s = self.size
        img = np.full((s, s, 3), 90, np.uint8)
        yy, xx = np.mgrid[0:s, 0:s] / s
        for colour, centre in self.squares.items():
            img[(np.abs(xx - centre[0]) < 0.07) & (np.abs(yy - centre[1]) < 0.07)] = COLOURS[colour]
        img[(xx - self.pos[0]) ** 2 + (yy - self.pos[1]) ** 2 < 0.04**2] = 255
        return img

    def observe(self, cameras: list[str]) -> dict[str, Any]:
        return {
            "images": {c: self.render() for c in cameras},
            "state": self.pos.astype(np.float32),
            "instruction": self.instruction,
            "privileged": np.concatenate([self.pos, self.goal]),
        }

    def step(self, action: np.ndarray) -> bool:
        self.pos = np.clip(self.pos + STEP * np.clip(np.asarray(action, np.float64)[:2], -1, 1), 0.0, 1.0)
        return bool(np.linalg.norm(self.pos - self.goal) < self.radius)

    def close(self) -> None:
        pass


class ReachExpert:
    """Straight at the goal, read from the privileged state (no images)."""

    def __init__(self):
        self.cameras: list[str] = []

    def reset(self, task: str, instruction: str) -> None:
        pass

    def predict(self, observation: dict[str, Any]) -> np.ndarray:
        priv = observation["privileged"]
        return np.clip((priv[2:] - priv[:2]) / STEP, -1, 1).astype(np.float32)[None]  # (1, 2)


@pytest.fixture(scope="module")
def toy_plugins():
    registry.register("embodiments", "point_mass", PointMassEmbodiment)
    registry.register("simulators", "point_reach", PointReachSimulator)
    yield
    registry.unregister("simulators", "point_reach")
    registry.unregister("embodiments", "point_mass")


# -- contracts over every registered plugin --------------------------------------------------------------
def embodiment_names() -> list[str]:
    return [*registry.names("embodiments"), "point_mass"]


@pytest.mark.parametrize("name", embodiment_names())
def test_embodiment_contract_both_directions(name, toy_plugins):
    from latbot.data.embodiments import get

    emb = get(name)
    assert emb.name == name and emb.action_mask.shape == (ACTION_DIM,) and emb.state_mask.shape == (STATE_DIM,)
    rng = np.random.default_rng(0)
    states = rng.uniform(-0.5, 0.5, (5, emb.native_state_dim))
    traj = emb.trajectory(states, rng.uniform(-1, 1, (5, emb.native_action_dim)))
    assert traj.states.shape == (5, STATE_DIM) and traj.actions.shape == (5, ACTION_DIM)
    assert not traj.states[:, ~emb.state_mask].any() and not traj.actions[:, ~emb.action_mask].any()
    np.testing.assert_allclose(emb.state_to_unified(states[2]), traj.states[2], atol=1e-7)
    # unified → native inverts native → unified (the gripper at its own open / closed values, rotations small)
    native = rng.uniform(-0.2, 0.2, (5, emb.native_action_dim))
    if emb.gripper != "none":
        native[:, emb.gripper_index] = np.where(rng.normal(size=5) > 0, emb.gripper_closed, emb.gripper_open)
    back = emb.actions_to_native(emb.actions_to_unified(native))
    assert back.shape == (5, emb.native_action_dim)
    np.testing.assert_allclose(back, native, atol=1e-5)
    with pytest.raises(Exception, match=rf"expects native actions of shape \(T, {emb.native_action_dim}\)"):
        emb.trajectory(None, np.zeros((5, emb.native_action_dim + 1)))


@pytest.mark.parametrize("name", [*registry.names("simulators"), "point_reach"])
def test_simulator_declares_its_robot_and_cameras(name, toy_plugins):
    from latbot.data.embodiments import get

    cls = registry.get("simulators", name)
    assert issubclass(cls, Simulator)
    assert cls.default_camera in cls.cameras
    assert cls.embodiment in registry.names("embodiments")
    sim = registry.build("simulators", cls.Config())  # building touches no simulator library
    emb = get(cls.embodiment)
    assert (sim.action_dim, sim.state_dim) == (emb.native_action_dim, emb.native_state_dim)


# -- the toy simulator end to end, through the CLI ----------------------------------------------------------
runner = CliRunner()


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.stdout


def test_a_third_simulator_through_gen_sim_train_and_eval(tmp_path, toy_plugins):
    from latbot.data.store import EpisodeStore

    store, runs = tmp_path / "store", tmp_path / "runs"
    tasks = "reach-red,reach-blue"
    out = cli("data", "gen-sim", "--sim", "point_reach", "--tasks", tasks, "--episodes", "6", "-o", str(store))
    assert "12 episode(s) added" in out
    with EpisodeStore.open(store) as s:
        assert s.cameras == ["top"] and s.image_size == (128, 128)
        rec = s.records[0]
        assert rec.embodiment == "point_mass" and rec.instruction == "move the dot onto the red square"
        assert [t for _, _, t in rec.subtasks] == ["move towards the red square", "stop on the red square"]
        assert rec.subtasks[-1][1] == rec.length and rec.success
        action_mask, state_mask = rec.masks()
        assert np.flatnonzero(action_mask).tolist() == [7, 8] and np.flatnonzero(state_mask).tolist() == [8, 9]
        data = s.read(0, slice(None))
        native = s.array("native_actions")[rec.offset : rec.stop]
        np.testing.assert_allclose(data["actions"][:, 7:9], STEP * native, atol=1e-6)
        np.testing.assert_allclose(data["states"][:, 8:10], s.array("native_states")[rec.offset : rec.stop])
        assert data["frames/top"].shape == (rec.length, 128, 128, 3) and (data["frames/top"] == 255).any()

    source = f"data.sources=[{{store: {store}}}]"
    common = [f"log.out_dir={runs}", "log.progress=false", source, "train.checkpoint_every=10", "train.steps=10"]
    sets = lambda *extra: [x for s in (*common, *extra) for x in ("--set", s)]  # noqa: E731
    cli("train", str(REPO / "recipes/tiny/lam.yaml"), *sets("log.run_name=lam"))
    cli("train", str(REPO / "recipes/tiny/distill.yaml"), *sets("log.run_name=distill", f"model.teacher={runs}/lam"))
    cli(
        "train",
        str(REPO / "recipes/tiny/finetune.yaml"),
        *sets("log.run_name=ft", f"model.student_checkpoint={runs}/distill", "train.steps=40"),
    )

    report = json.loads(
        cli("eval", "sim", "--sim", "point_reach", "--policy", str(runs / "ft"), "--tasks", tasks,
            "--episodes", "4", "--image-size", "64", "--json")
    )  # fmt: skip
    assert report["simulator"] == "point_reach" and report["embodiment"] == "point_mass"
    assert report["overall"]["errors"] == 0, report["episodes"]
    assert report["overall"]["episodes"] == 8 and 0.0 <= report["overall"]["success_rate"] <= 1.0
    assert all(0 < e["steps"] <= 30 for e in report["episodes"])
    scripted = json.loads(
        cli("eval", "sim", "--sim", "point_reach", "--policy", "scripted", "--tasks", tasks, "--json")
    )
    assert scripted["overall"]["success_rate"] == 1.0
    result = runner.invoke(app, ["eval", "sim", "--sim", "metaworld", "--policy", str(runs / "ft"), "--tasks", "reach"])
    assert result.exit_code == 2, result.output
    assert "trained for embodiment 'point_mass', but simulator 'metaworld' runs 'sawyer'" in result.stderr


def test_eval_prints_the_reason_of_each_crash_and_films_the_default_camera(tmp_path, toy_plugins, monkeypatch):
    monkeypatch.setattr(PointReachEpisode, "step", lambda self, action: 1 / 0)
    out = cli(
        "eval", "sim", "--sim", "point_reach", "--policy", "random", "--tasks", "reach-red", "--episodes", "2",
        "--image-size", "32", "--video-dir", str(tmp_path / "videos"), "--allow-crashes",
    )  # fmt: skip
    assert "(2 crashed, counted as failures)" in out and out.count("ZeroDivisionError: division by zero") == 2
    monkeypatch.undo()
    cli("eval", "sim", "--sim", "point_reach", "--policy", "random", "--tasks", "reach-red", "--episodes", "1",
        "--image-size", "32", "--video-dir", str(tmp_path / "videos"))  # fmt: skip
    assert len(list((tmp_path / "videos").glob("reach-red_seed*.mp4"))) == 1


class CrashingPolicy(ReachExpert):
    def predict(self, observation: dict[str, Any]) -> np.ndarray:
        raise RuntimeError("policy server went away")


def crashing(task: str) -> CrashingPolicy:
    return CrashingPolicy()


def eval_args(*extra: str) -> list[str]:
    return ["eval", "sim", "--sim", "point_reach", "--policy", "scripted", "--tasks", "reach-red,reach-blue",
            "--episodes", "2", "--image-size", "32", *extra]  # fmt: skip


def test_eval_fails_when_every_episode_crashes_unless_crashes_are_allowed(toy_plugins, monkeypatch):
    from latbot.sim.evaluate import EpisodesCrashedError, evaluate

    config = PointReachSimulator.Config()
    with pytest.raises(EpisodesCrashedError, match=r"4 of 4 episode\(s\) crashed.*policy server went away") as e:
        evaluate(config, crashing, ["reach-red", "reach-blue"], 2, progress=False)
    assert e.value.report["overall"]["errors"] == 4
    report = evaluate(config, crashing, ["reach-red", "reach-blue"], 2, progress=False, allow_crashes=True)
    assert report["overall"] | {"ci95": None} == {
        "successes": 0, "episodes": 4, "success_rate": 0.0, "ci95": None, "errors": 4
    }  # fmt: skip
    assert all(t["episodes"] == 2 and t["errors"] == 2 and t["success_rate"] == 0.0 for t in report["tasks"])

    monkeypatch.setattr(PointReachSimulator, "scripted_policy", lambda self, task: CrashingPolicy())
    result = runner.invoke(app, eval_args())
    assert result.exit_code == 1, result.output
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]  # one line (after tqdm's bar)
    assert line.startswith("error: 4 of 4 episode(s) crashed; the first: task reach-red, seed 1000000")
    assert "RuntimeError: policy server went away" in line and "--allow-crashes" in line
    assert "overall" not in result.stdout  # no table of the episodes that did not crash
    allowed = runner.invoke(app, eval_args("--allow-crashes"))
    assert allowed.exit_code == 0, allowed.output
    assert "0/4   = 0.00" in allowed.stdout and "(4 crashed, counted as failures)" in allowed.stdout


def test_eval_of_no_episode_is_an_error(toy_plugins):
    from latbot.sim.evaluate import evaluate

    with pytest.raises(SimulatorError, match="at least 1"):
        evaluate(PointReachSimulator.Config(), "scripted", ["reach-red"], 0, progress=False)


def test_eval_out_is_an_eval_artifact_and_refuses_anything_else(tmp_path, toy_plugins, monkeypatch):
    from latbot.artifacts import read_manifest
    from latbot.ownership import LOCK_NAME
    from tests.attacks import tree_digest

    out = tmp_path / "eval"
    cli(*eval_args("--out", str(out)))
    report = json.loads((out / "report.json").read_text())
    assert report["overall"]["episodes"] == 4 and read_manifest(out, kind="eval").extra["settings"]["tasks"] == [
        "reach-red", "reach-blue"
    ]  # fmt: skip
    cli(*eval_args("--out", str(out), "--seed", "5"))  # its own earlier evaluation: rewritten
    assert json.loads((out / "report.json").read_text())["seed"] == 5

    store = tmp_path / "store"
    cli("data", "gen-sim", "--sim", "point_reach", "--tasks", "reach-red", "--episodes", "1", "-o", str(store))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    refusals = {store: "holds a 'episode_store' artifact", mine: "holds files LatBot did not write (notes.txt)",
                mine / "notes.txt": "exists and is not a directory"}  # fmt: skip
    for target, says in refusals.items():
        before = tree_digest(tmp_path)
        result = runner.invoke(app, eval_args("--out", str(target)))
        assert result.exit_code == 2 and says in result.stderr, result.output
        assert tree_digest(tmp_path) == before

    monkeypatch.setattr(PointReachSimulator, "scripted_policy", lambda self, task: CrashingPolicy())
    fresh = tmp_path / "fresh"
    assert runner.invoke(app, eval_args("--out", str(fresh))).exit_code == 1
    assert not fresh.exists()  # a refused evaluation leaves nothing behind, not even its lock file
    assert LOCK_NAME not in {p.name for p in tmp_path.iterdir()}
