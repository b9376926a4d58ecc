"""`metaworld`: MetaWorld v3 (MuJoCo) tasks with scripted experts, rendered headless.

Rendering is set up for CPU speed (measured: ~10 ms per 128² frame instead of ~100 ms): no multisampling,
no shadows, no reflections, one `mujoco.Renderer` per episode whose GL context is made current before
every frame (with two live environments a frame can otherwise silently come out black). The "corner"
cameras are mounted upside down; their frames are flipped to be upright. `MUJOCO_GL` defaults to egl.

The robot is the `sawyer` embodiment (latbot/data/embodiments/sawyer.py): native action (dx, dy, dz,
grip) in [−1, 1] (grip > 0 closes), native state hand position (3) and gripper opening (1, 1 = open).
The experts read the privileged observation (MetaWorld's 39-D vector: hand xyz, gripper opening, object
xyz, ...), from which the subtask segments of a demonstration are derived (`segments_from_phases`).
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Literal

import numpy as np
from pydantic import Field

from latbot.config import PluginConfig
from latbot.errors import MissingExtraError
from latbot.sim.base import Demonstration, SimEpisode, Simulator, SimulatorError, split_names
from latbot.sim.metaworld_tasks import MT10, MT50, TASKS

# Headless rendering: must be set before anything imports mujoco (metaworld.policies does).
os.environ.setdefault("MUJOCO_GL", "egl")

UPSIDE_DOWN_CAMERAS = {"corner", "corner2", "corner3", "corner4"}
CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
SUITES = {"MT10": MT10, "MT50": MT50}


def _import_metaworld():
    try:
        import metaworld
        import mujoco
    except ImportError as e:
        raise MissingExtraError("the MetaWorld simulator", "sim", e.name or "metaworld") from e
    return metaworld, mujoco


class MetaWorldSimulator(Simulator):
    class Config(PluginConfig):
        type: Literal["metaworld"] = "metaworld"
        max_steps: int | None = Field(None, ge=1, description="Episode step limit (default: MetaWorld's 500).")
        hold_steps: int = Field(5, ge=0, description="Steps recorded after success, so demos end at rest.")

    config: Config
    embodiment = "sawyer"
    cameras = CAMERAS
    default_camera = "corner"

    def task_names(self, spec: list[str]) -> list[str]:
        out: list[str] = []
        for name in split_names(spec):
            name = name.removesuffix("-v3")
            if name in SUITES:
                out += SUITES[name]
            elif name in TASKS:
                out.append(name)
            else:
                import difflib

                close = difflib.get_close_matches(name, list(TASKS), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise SimulatorError(f"unknown MetaWorld task '{name}'{hint} (valid: MT10, MT50, {', '.join(TASKS)})")
        return list(dict.fromkeys(out))

    def instruction(self, task: str) -> str:
        return TASKS[task].instruction

    @property
    def hold_steps(self) -> int:
        return self.config.hold_steps

    def applied_action(self, action: np.ndarray) -> np.ndarray:
        return np.clip(action, -1, 1)  # as `MetaWorldEpisode.step` applies it

    def subtask_segments(self, task: str, demo: Demonstration) -> list[tuple[int, int, str]]:
        priv = np.stack(demo.privileged)  # (T, 39): hand xyz, gripper opening, object xyz, ...
        return segments_from_phases(task, priv[:, :3], priv[:, 4:7], demo.actions[:, 3], priv[:, 3])

    def __init__(self, config: Config):
        super().__init__(config)
        self._live: tuple[str, int, Any, Any, Any] | None = None  # (task, size, benchmark, env, renderer)

    def episode(self, task: str, seed: int, cameras: list[str], image_size: int) -> MetaWorldEpisode:
        bad = [c for c in cameras if c not in CAMERAS]
        if bad:
            raise SimulatorError(f"unknown MetaWorld camera(s) {bad} (valid: {', '.join(CAMERAS)})")
        return MetaWorldEpisode(self, task, seed, image_size)

    def _environment(self, task: str, image_size: int):
        """The (benchmark, env, renderer) of `task`, built once and reused across its episodes (building a
        MetaWorld benchmark costs ~1 s). Only one environment is alive at a time."""
        if self._live is not None and self._live[:2] == (task, image_size):
            return self._live[2:]
        self.close()
        metaworld, mujoco = _import_metaworld()
        name = f"{task}-v3"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bench = metaworld.MT1(name, seed=0)
            env = bench.train_classes[name]()
        env.model.vis.quality.offsamples = 0
        renderer = mujoco.Renderer(env.model, image_size, image_size)
        self._live = (task, image_size, bench, env, renderer)
        return bench, env, renderer

    def scripted_policy(self, task: str) -> ScriptedPolicy:
        return ScriptedPolicy(task)

    def close(self) -> None:
        if self._live is not None:
            _, _, _, env, renderer = self._live
            renderer.close()
            env.close()
            self._live = None


class MetaWorldEpisode(SimEpisode):
    """One episode of a task: the task's environment set to a goal variation drawn from `seed`, reset."""

    def __init__(self, sim: MetaWorldSimulator, task: str, seed: int, image_size: int):
        _, self._mujoco = _import_metaworld()
        bench, self.env, self._renderer = sim._environment(task, image_size)
        self.task, self.seed = task, seed
        self.instruction = TASKS[task].instruction
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            variation = np.random.default_rng(seed).integers(len(bench.train_tasks))
            self.env.set_task(bench.train_tasks[variation])
            self.obs, _ = self.env.reset(seed=seed)
        self.max_steps = sim.config.max_steps or int(self.env.max_path_length)
        self.fps = 1.0 / float(self.env.dt)
        self._option = self._mujoco.MjvOption()
        self.solved = False

    @property
    def state(self) -> np.ndarray:
        return self.obs[:4].astype(np.float32)  # hand xyz, gripper opening

    def render(self, camera: str) -> np.ndarray:
        mujoco = self._mujoco
        self._renderer._gl_context.make_current()  # see the module docstring: never render into another env's context
        self._renderer.update_scene(self.env.data, camera=camera, scene_option=self._option)
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        frame = self._renderer.render()
        return np.ascontiguousarray(frame[::-1]) if camera in UPSIDE_DOWN_CAMERAS else frame

    def observe(self, cameras: list[str]) -> dict[str, Any]:
        return {
            "images": {c: self.render(c) for c in cameras},
            "state": self.state,
            "instruction": self.instruction,
            "privileged": self.obs.copy(),
        }

    def step(self, action: np.ndarray) -> bool:
        action = np.clip(np.asarray(action, np.float64).reshape(-1)[:4], -1.0, 1.0)
        self.obs, _, _, _, info = self.env.step(action)
        self.solved = bool(info.get("success", 0.0))
        return self.solved

    def close(self) -> None:
        pass  # the environment belongs to the simulator and is reused by the next episode


class ScriptedPolicy:
    """MetaWorld's own scripted expert for a task, behind the policy interface (one action per call)."""

    def __init__(self, task: str):
        _import_metaworld()
        from metaworld.policies import ENV_POLICY_MAP

        self.cameras: list[str] = []  # experts read the privileged simulator state, no images
        self.expert = ENV_POLICY_MAP[f"{task}-v3"]()

    def reset(self, task: str, instruction: str) -> None:
        pass

    def predict(self, observation: dict[str, Any]) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Constant(s) may be too high": MetaWorld's own experts
            return np.asarray(self.expert.get_action(observation["privileged"]), np.float32)[None]


def segments_from_phases(
    task: str, hand: np.ndarray, obj: np.ndarray, grip_cmd: np.ndarray, opening: np.ndarray
) -> list[tuple[int, int, str]]:
    """Subtasks from the expert's phases: "reach the <obj>" until the hand is at the object (or the
    gripper starts closing), "grasp the <obj>" while the fingers close (grasping tasks), then the task's
    own phase. hand/obj (T, 3), grip_cmd (T,) the commanded grip, opening (T,) the gripper opening."""
    text = TASKS[task]
    n = len(hand)
    if task in ("reach", "reach-wall"):
        return [(0, n, text.then)]
    closing = np.flatnonzero(grip_cmd > 0)
    near = np.flatnonzero(np.linalg.norm(hand - obj, axis=1) < 0.05)
    if text.grasps and closing.size:
        start = int(closing[0])
        settle = start
        while settle + 1 < n and settle - start < 15 and abs(opening[settle + 1] - opening[settle]) > 1e-3:
            settle += 1
        cuts = [0, start, max(start + 1, settle + 1), n]
        names = [f"reach the {text.obj}", f"grasp the {text.obj}", text.then]
    elif near.size:
        cuts = [0, int(near[0]), n]
        names = [f"reach the {text.obj}", text.then]
    else:
        return [(0, n, text.then)]
    return [(a, b, t) for a, b, t in zip(cuts[:-1], cuts[1:], names, strict=True) if b > a]
