"""`maniskill`: ManiSkill3 (SAPIEN 3) tasks with the Panda arm; `simpler`: SimplerEnv's WidowX (Bridge)
protocol on ManiSkill3's digital twins. Optional extra `maniskill`; docs/simulators.md.

**maniskill.** Any registered ManiSkill3 task whose robot is the Panda (`PickCube-v1`, `PushCube-v1`,
`StackCube-v1`, `PullCube-v1`, ...; `--tasks cubes` = the four with scripted experts), built as
`gym.make(task, obs_mode="state_dict", control_mode="pd_ee_delta_pose", sim_backend="physx_cpu")`: one
environment per (task, image size), reused by the task's episodes and reset with `env.reset(seed=seed)`;
success is `info["success"]` after each step; the step limit is the task's registered one (50 at 20 Hz).
Frames are rendered only when observed (physics alone runs at ~250 steps/s on one core, a 128² frame
costs ~40 ms on CPU through lavapipe): camera `base_camera` (the task's sensor camera, the default) with
the task's hidden goal markers shown (PickCube's green goal sphere; `--set show_goal=false` hides them as
ManiSkill's own observations do), and `render_camera` (ManiSkill's "human" view).

The robot is the `franka_panda` embodiment (as LIBERO's): native action (7) position delta (3), rotation
delta as an axis-angle vector (3), gripper −1 open / +1 close. The units are the controller's normalized
ones, as LIBERO's are robosuite's: 1 = 0.1 m and 0.1 rad, applied in the robot's base frame. ManiSkill's
`pd_ee_delta_pose` takes XYZ Euler angles applied with the opposite sign (it scales by its lower bound,
−0.1) and a gripper +1 open / −1 closed; `to_env_action` converts. Native state (8): TCP position and
axis-angle orientation in the robot's base frame, finger positions (q₀, −q₁) (LIBERO's convention).

**simpler.** The four WidowX tasks of SimplerEnv's ManiSkill3 branch (`--tasks bridge`), with its control
mode `arm_pd_ee_target_delta_pose_align2_gripper_pd_joint_pos` at 5 Hz, camera `3rd_view_camera`
(640×480, resized to the square `image_size` the policy is given), the task's step limit (60; eggplant
120) and its episode configurations: seed s → `episode_id = s mod N` (N = 24 object layouts), so 24
consecutive seeds are the 24 layouts SimplerEnv evaluates. Metric: success at the end (the final step's
`success`, as SimplerEnv's published numbers; the episode always runs to the limit), and also success at
any step (`metrics` of each episode); `--set success=any` stops at the first success instead. The robot
is the `widowx` embodiment: native action dx, dy, dz (m), droll, dpitch, dyaw (rad), gripper open amount
(1 open); the controller gets the same rotation as XYZ Euler angles and the gripper as 2·open − 1. The
assets (`bridge_v2_real2sim`, `widowx250s`) are downloaded by ManiSkill's own command; when they are missing
the simulator says which and how, before anything is built or written (never a download at run time).
Google-robot tasks are not in ManiSkill3 (ManiSkill issue 1153): their names are refused.
"""

from __future__ import annotations

import atexit
import warnings
import weakref
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from latbot.config import PluginConfig
from latbot.errors import MissingExtraError
from latbot.sim import maniskill_tasks as mt
from latbot.sim.base import Demonstration, SimEpisode, Simulator, SimulatorError, split_names

SUITES = {"cubes": list(mt.EXPERT_TASKS)}
BRIDGE_TASKS = (
    "PutCarrotOnPlateInScene-v1",
    "PutSpoonOnTableClothInScene-v1",
    "StackGreenCubeOnYellowCubeBakedTexInScene-v1",
    "PutEggplantInBasketScene-v1",
)
BRIDGE_INSTRUCTIONS = {
    "PutCarrotOnPlateInScene-v1": "put carrot on plate",
    "PutSpoonOnTableClothInScene-v1": "put the spoon on the towel",
    "StackGreenCubeOnYellowCubeBakedTexInScene-v1": "stack the green block on the yellow block",
    "PutEggplantInBasketScene-v1": "put eggplant into yellow basket",
}
BRIDGE_ROBOT_ASSETS = ("widowx250s",)
SIMPLER_CONTROL_MODE = "arm_pd_ee_target_delta_pose_align2_gripper_pd_joint_pos"
SIMPLER_CAMERA = "3rd_view_camera"
GOOGLE_ROBOT_TASKS = (
    "google_robot",
    "fractal",
    "pick_coke_can",
    "google_robot_pick_coke_can",
    "move_near",
    "google_robot_move_near",
    "open_drawer",
    "close_drawer",
    "drawer",
    "google_robot_open_drawer",
    "google_robot_close_drawer",
    "google_robot_drawer",
)
GOOGLE_ROBOT_PREFIXES = ("google", "googlerobot", "fractal")


def _import_maniskill():
    """gymnasium and ManiSkill3 with its environments registered (`import mani_skill.envs`, ~3 s)."""
    try:
        import gymnasium as gym
        import mani_skill.envs  # noqa: F401  (registers the environments)
    except ImportError as e:
        raise MissingExtraError("the ManiSkill3 simulator", "maniskill", e.name or "mani_skill") from e
    return gym


def _registered() -> dict[str, Any]:
    _import_maniskill()
    from mani_skill.utils.registration import REGISTERED_ENVS

    return REGISTERED_ENVS


def asset_dir() -> str:
    """Where ManiSkill looks for downloaded assets: `MS_ASSET_DIR`, default ~/.maniskill/data."""
    from mani_skill import ASSET_DIR

    return str(ASSET_DIR)


def missing_assets(task: str, extra: tuple[str, ...] = ()) -> list[str]:
    """ManiSkill asset ids `task` needs (its registration's `asset_download_ids`, groups expanded, plus
    `extra`) that are not under `asset_dir()`; checked on disk only, nothing is downloaded."""
    from mani_skill.utils import assets

    ids = [*(_registered()[task].asset_download_ids or []), *extra]
    missing: list[str] = []
    for asset_id in ids:
        members = (
            assets.expand_data_group_into_individual_data_source_ids(asset_id)
            if asset_id in assets.DATA_GROUPS
            else [asset_id]
        )
        if any(not assets.is_data_source_downloaded(m) for m in members) and asset_id not in missing:
            missing.append(asset_id)
    return missing


def assets_error(what: str, missing: list[str]) -> SimulatorError:
    """One line: which assets are missing, where they were looked for, and the command that gets them."""
    command = " && ".join(f"python -m mani_skill.utils.download_asset {m} -y" for m in missing)
    return SimulatorError(
        f"{what} need ManiSkill assets missing from {asset_dir()} ($MS_ASSET_DIR/data, default ~/.maniskill/data): "
        f"{', '.join(missing)}; download them with `{command}` (or set MS_ASSET_DIR to a folder whose data/ has "
        "them); nothing was written"
    )


def _render_backend() -> str:
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def _quat_wxyz_to_matrix(q: np.ndarray) -> np.ndarray:
    from latbot.data import rotations as rot

    return rot.quat_to_matrix(np.asarray([q[1], q[2], q[3], q[0]], np.float64))


def _relative_pose(root: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position, rotation matrix) of world pose `pose` (7: xyz + wxyz) in the frame of world pose `root`."""
    r_root = _quat_wxyz_to_matrix(root[3:])
    return r_root.T @ (pose[:3] - root[:3]), r_root.T @ _quat_wxyz_to_matrix(pose[3:])


def _intrinsic_xyz(matrices: np.ndarray) -> np.ndarray:
    """(..., 3, 3) → (..., 3) the XYZ Euler angles ManiSkill's EE controllers take (pytorch3d's convention)."""
    import torch
    from mani_skill.utils.geometry.rotation_conversions import matrix_to_euler_angles

    return matrix_to_euler_angles(torch.as_tensor(matrices, dtype=torch.float64), "XYZ").numpy()


def panda_env_action(action: np.ndarray) -> np.ndarray:
    """`franka_panda` native (7) → ManiSkill's normalized `pd_ee_delta_pose` action (7)."""
    from latbot.data import rotations as rot

    a = native_panda_action(action)
    angles = _intrinsic_xyz(rot.axis_angle_to_matrix(a[3:6] * mt.ROT_UNIT))
    return np.concatenate([a[:3], angles / -mt.ROT_UNIT, -a[6:7]]).astype(np.float32)


def native_panda_action(action: np.ndarray) -> np.ndarray:
    """The native action as applied: position and gripper clipped to [−1, 1], rotation to norm ≤ 1."""
    a = np.asarray(action, np.float64).reshape(-1)[:7].copy()
    a[:3] = np.clip(a[:3], -1.0, 1.0)
    norm = np.linalg.norm(a[3:6])
    if norm > 1.0:
        a[3:6] /= norm
    a[6] = np.clip(a[6], -1.0, 1.0)
    return a.astype(np.float32)


def widowx_env_action(action: np.ndarray) -> np.ndarray:
    """`widowx` native (7) → SimplerEnv's WidowX action: metres, XYZ Euler radians, gripper 2·open − 1."""
    from latbot.data import rotations as rot

    a = np.asarray(action, np.float64).reshape(-1)[:7]
    angles = _intrinsic_xyz(rot.euler_to_matrix(a[3:6]))
    grip = 2.0 * np.clip(a[6], 0.0, 1.0) - 1.0
    return np.concatenate([a[:3], angles, [grip]]).astype(np.float32)


class ManiSkillSimulator(Simulator):
    class Config(PluginConfig):
        type: Literal["maniskill"] = "maniskill"
        max_steps: int | None = Field(None, ge=1, description="Episode step limit (default: the task's registered).")
        hold_steps: int = Field(5, ge=0, description="Steps recorded after success, so demos end at rest.")
        show_goal: bool = Field(True, description="Show the task's hidden goal markers to base_camera.")

    config: Config
    embodiment: ClassVar[str] = "franka_panda"
    cameras: ClassVar[tuple[str, ...]] = ("base_camera", "render_camera", "hand_camera")  # hand: panda_wristcam tasks
    default_camera: ClassVar[str] = "base_camera"
    control_mode: ClassVar[str] = "pd_ee_delta_pose"
    robots: ClassVar[tuple[str, ...]] = ("panda", "panda_wristcam")  # StackCube's Panda carries a hand camera

    def __init__(self, config: Config):
        super().__init__(config)
        self._live: tuple[tuple, Any] | None = None  # (key, env)

    # -- tasks --------------------------------------------------------------------------------------------
    def task_names(self, spec: list[str]) -> list[str]:
        out: list[str] = []
        names = split_names(spec)
        registered = _registered() if names else {}
        for name in names:
            if name in SUITES:
                out += SUITES[name]
            elif name in registered:
                out.append(name)
            elif f"{name}-v1" in registered:
                out.append(f"{name}-v1")
            else:
                import difflib

                close = difflib.get_close_matches(name, list(registered), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise SimulatorError(
                    f"unknown ManiSkill3 task '{name}'{hint} (suites: {', '.join(SUITES)}; tasks with scripted "
                    f'experts: {", ".join(mt.EXPERT_TASKS)}; every id: `python -c "import mani_skill.envs; '
                    'from mani_skill.utils.registration import REGISTERED_ENVS; print(*REGISTERED_ENVS)"`)'
                )
        out = list(dict.fromkeys(out))
        missing = {m for task in out for m in missing_assets(task)}
        if missing:
            raise assets_error("ManiSkill3 task(s) " + ", ".join(t for t in out if missing_assets(t)), sorted(missing))
        return out

    def instruction(self, task: str) -> str:
        text = mt.TASKS.get(task)
        return text.instruction if text else mt.generic_instruction(task)

    @property
    def hold_steps(self) -> int:
        return self.config.hold_steps

    def applied_action(self, action: np.ndarray) -> np.ndarray:
        return native_panda_action(action)

    def scripted_policy(self, task: str) -> mt.PandaExpert:
        if task not in mt.EXPERT_TASKS:
            raise SimulatorError(
                f"ManiSkill3 task '{task}' has no scripted expert (tasks with experts: {', '.join(mt.EXPERT_TASKS)})"
            )
        return mt.expert(task)

    def subtask_segments(self, task: str, demo: Demonstration) -> list[tuple[int, int, str]]:
        return mt.segments(task, demo.privileged, demo.actions)

    # -- episodes -----------------------------------------------------------------------------------------
    def episode(self, task: str, seed: int, cameras: list[str], image_size: int) -> SimEpisode:
        bad = [c for c in cameras if c not in self.cameras]
        if bad:
            raise SimulatorError(f"unknown {self.config.type} camera(s) {bad} (valid: {', '.join(self.cameras)})")
        return ManiSkillEpisode(self, task, seed, image_size)

    def _make_kwargs(self, task: str, image_size: int) -> dict[str, Any]:
        return {
            "obs_mode": "state_dict",  # frames are rendered when observed, not at every step
            "control_mode": self.control_mode,
            "sim_backend": "physx_cpu",
            "render_backend": _render_backend(),
            "sensor_configs": {"width": image_size, "height": image_size},
            "human_render_camera_configs": {"width": image_size, "height": image_size},
        }

    def _environment(self, task: str, image_size: int):
        """The task's environment, built once and reused by its episodes (building one costs seconds: the
        renderer compiles its shaders); one environment is alive at a time."""
        key = (task, image_size)
        if self._live is not None and self._live[0] == key:
            return self._live[1]
        self.close()
        gym = _import_maniskill()
        import logging

        logging.getLogger("mani_skill ").setLevel(logging.ERROR)  # sic (its name); its build-time warnings
        try:
            env = gym.make(task, **self._make_kwargs(task, image_size))
        except AssertionError as e:  # ManiSkill asserts the robot's control modes
            raise SimulatorError(
                f"ManiSkill3 task '{task}' cannot run with control mode '{self.control_mode}' ({e}); simulator "
                f"'{self.config.type}' drives the Panda ({', '.join(self.robots)}; {self.embodiment}) only"
            ) from None
        uid = getattr(env.unwrapped.agent, "uid", None)
        if uid not in self.robots:
            env.close()
            raise SimulatorError(
                f"ManiSkill3 task '{task}' runs robot '{uid}'; simulator '{self.config.type}' drives the Panda "
                f"({', '.join(self.robots)}; the {self.embodiment} embodiment) only"
            )
        self._live = (key, env)
        _LIVE.add(self)
        return env

    def close(self) -> None:
        if self._live is not None:
            self._live[1].close()
            # Keep the closed environment referenced until the next one exists: while one is alive, SAPIEN's
            # renderer (and the shaders lavapipe compiled for it, ~4-10 s on CPU) carries over to the next.
            _KEEP_ALIVE[:] = [self._live[1]]
            self._live = None


_KEEP_ALIVE: list[Any] = []  # the last closed environment (see `ManiSkillSimulator.close`)
_LIVE: weakref.WeakSet = weakref.WeakSet()  # simulators holding an environment


def _release_at_exit() -> None:
    """Close every live environment and drop the kept one while the interpreter and SAPIEN's libraries are
    still whole: left to the interpreter's teardown, their destructors ran after Vulkan's and the process
    died with SIGSEGV at exit (seen at the end of the test suite)."""
    import gc

    for sim in list(_LIVE):
        try:
            sim.close()
        except Exception:  # exiting anyway: a failed close must not hide the real exit status
            pass
    _KEEP_ALIVE.clear()
    gc.collect()


atexit.register(_release_at_exit)


def _to_numpy(x) -> np.ndarray:
    return x.cpu().numpy() if hasattr(x, "cpu") else np.asarray(x)


class ManiSkillEpisode(SimEpisode):
    """One episode of a Panda task: the task's environment reset with the episode's seed."""

    def __init__(self, sim: ManiSkillSimulator, task: str, seed: int, image_size: int):
        self.env = sim._environment(task, image_size)
        self.base = self.env.unwrapped
        self.task, self.seed, self.sim = task, seed, sim
        self.instruction = sim.instruction(task)
        self.env.reset(seed=seed % 2**32)  # ManiSkill seeds numpy's legacy generator: 32 bits
        spec_steps = _registered()[task].max_episode_steps
        self.max_steps = sim.config.max_steps or int(spec_steps or 100)
        self.fps = float(self.base.control_freq)
        self.solved = False

    @property
    def state(self) -> np.ndarray:
        from latbot.data import rotations as rot

        root = _to_numpy(self.base.agent.robot.pose.raw_pose[0]).astype(np.float64)
        tcp = _to_numpy(self.base.agent.tcp.pose.raw_pose[0]).astype(np.float64)
        pos, matrix = _relative_pose(root, tcp)
        q = _to_numpy(self.base.agent.robot.get_qpos()[0]).astype(np.float64)
        return np.concatenate([pos, rot.matrix_to_axis_angle(matrix), [q[-2], -q[-1]]]).astype(np.float32)

    def render(self, camera: str) -> np.ndarray:
        base = self.base
        if camera == "render_camera":
            image = base.render_rgb_array("render_camera")  # shows the hidden goal markers
        else:
            for obj in base._hidden_objects:
                obj.show_visual() if self.sim.config.show_goal else obj.hide_visual()
            base.scene.update_render(update_sensors=True, update_human_render_cameras=False)
            sensor = base.scene.sensors.get(camera)
            if sensor is None:
                raise SimulatorError(
                    f"ManiSkill3 task '{self.task}' has no camera '{camera}' (it has: render_camera, "
                    f"{', '.join(base.scene.sensors)})"
                )
            sensor.capture()
            image = sensor.get_obs(rgb=True, depth=False, position=False, segmentation=False)["rgb"]
        return np.ascontiguousarray(_to_numpy(image)[0][..., :3]).astype(np.uint8)

    def observe(self, cameras: list[str]) -> dict[str, Any]:
        return {
            "images": {c: self.render(c) for c in cameras},
            "state": self.state,
            "instruction": self.instruction,
            "privileged": mt.privileged(self.base),
        }

    def step(self, action: np.ndarray) -> bool:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # ManiSkill's np.isnan on a torch tensor
            _, _, _, _, info = self.env.step(panda_env_action(action))
        self.solved = bool(_to_numpy(info["success"]).reshape(-1)[0])
        return self.solved

    def close(self) -> None:
        pass  # the environment belongs to the simulator and is reused by the next episode


# -- SIMPLER --------------------------------------------------------------------------------------------------
class SimplerSimulator(ManiSkillSimulator):
    class Config(PluginConfig):
        type: Literal["simpler"] = "simpler"
        max_steps: int | None = Field(None, ge=1, description="Episode step limit (default: the task's, 60 or 120).")
        success: Literal["end", "any"] = Field(
            "end",
            description="'end': success at the final step, the episode runs to its limit (SimplerEnv's published "
            "metric); 'any': the episode stops at its first success.",
        )

    config: Config  # type: ignore[assignment]
    embodiment: ClassVar[str] = "widowx"
    cameras: ClassVar[tuple[str, ...]] = (SIMPLER_CAMERA,)
    default_camera: ClassVar[str] = SIMPLER_CAMERA
    default_episodes: ClassVar[int] = 24  # the 24 object layouts, once each (UniVLA-style papers' protocol)
    control_mode: ClassVar[str] = SIMPLER_CONTROL_MODE

    def task_names(self, spec: list[str]) -> list[str]:
        out: list[str] = []
        for name in split_names(spec):
            low = name.lower()
            if low in GOOGLE_ROBOT_TASKS or low.startswith(GOOGLE_ROBOT_PREFIXES):
                raise SimulatorError(
                    f"SIMPLER task '{name}' (Google robot) is not available in ManiSkill3 (ManiSkill issue 1153); "
                    f"the WidowX tasks are: bridge = {', '.join(BRIDGE_TASKS)}"
                )
            if low == "bridge":
                out += BRIDGE_TASKS
            elif name in BRIDGE_TASKS:
                out.append(name)
            else:
                import difflib

                close = difflib.get_close_matches(name, BRIDGE_TASKS, n=2)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise SimulatorError(f"unknown SIMPLER task '{name}'{hint} (valid: bridge, {', '.join(BRIDGE_TASKS)})")
        out = list(dict.fromkeys(out))
        if out:
            _import_maniskill()
            missing = sorted({m for task in out for m in missing_assets(task, BRIDGE_ROBOT_ASSETS)})
            if missing:
                raise assets_error("SIMPLER's WidowX tasks", missing)
        return out

    def instruction(self, task: str) -> str:
        return BRIDGE_INSTRUCTIONS[task]

    @property
    def hold_steps(self) -> int:
        return 0

    def applied_action(self, action: np.ndarray) -> np.ndarray:
        return np.asarray(action, np.float32)

    def scripted_policy(self, task: str):
        return Simulator.scripted_policy(self, task)  # none: SIMPLER is for evaluation

    def subtask_segments(self, task: str, demo: Demonstration) -> list[tuple[int, int, str]]:
        return []

    def episode(self, task: str, seed: int, cameras: list[str], image_size: int) -> SimEpisode:
        bad = [c for c in cameras if c not in self.cameras]
        if bad:
            raise SimulatorError(f"unknown SIMPLER camera(s) {bad} (valid: {', '.join(self.cameras)})")
        return SimplerEpisode(self, task, seed, image_size)

    def _make_kwargs(self, task: str, image_size: int) -> dict[str, Any]:
        return {
            "obs_mode": "rgb+segmentation",  # SimplerEnv's: the green-screen overlay needs the segmentation
            "control_mode": self.control_mode,
            "sim_backend": "physx_cpu",
            "render_backend": _render_backend(),
        }

    def _environment(self, task: str, image_size: int):
        key = (task,)  # frames are resized from the camera's 640×480, so one environment serves every size
        if self._live is not None and self._live[0] == key:
            return self._live[1]
        self.close()
        gym = _import_maniskill()
        missing = missing_assets(task, BRIDGE_ROBOT_ASSETS)
        if missing:  # never let ManiSkill prompt for a download
            raise assets_error(f"SIMPLER task {task}", missing)
        import logging

        logging.getLogger("mani_skill ").setLevel(logging.ERROR)  # sic: ManiSkill's logger name
        env = gym.make(task, **self._make_kwargs(task, image_size))
        self._live = (key, env)
        return env


class SimplerEpisode(SimEpisode):
    """One SIMPLER episode: the task's environment reset to object layout `seed mod N`."""

    def __init__(self, sim: SimplerSimulator, task: str, seed: int, image_size: int):
        import torch

        self.env = sim._environment(task, image_size)
        self.base = self.env.unwrapped
        self.task, self.seed, self.sim, self.image_size = task, seed, sim, image_size
        self.instruction = sim.instruction(task)
        layouts = len(self.base.xyz_configs) * len(self.base.quat_configs)
        self.episode_id = seed % layouts
        options = {"episode_id": torch.tensor([self.episode_id])}
        self.obs, _ = self.env.reset(seed=seed % 2**32, options=options)
        spec_steps = _registered()[task].max_episode_steps
        self.max_steps = sim.config.max_steps or int(spec_steps or 60)
        self.fps = float(self.base.control_freq)
        self.steps, self.success_now, self.success_any = 0, False, False

    @property
    def metrics(self) -> dict[str, bool]:
        """Both SIMPLER metrics of the episode so far (the harness records them with the episode)."""
        out = {"success_at_any_step": self.success_any}
        if self.sim.config.success == "end":
            out["success_at_end"] = self.success_now
        return out

    @property
    def state(self) -> np.ndarray:
        """`widowx` native state: end-effector position in the base frame, its orientation relative to the
        top-down pose as roll, pitch, yaw, a zero pad, the gripper's open amount (1 = open)."""
        from latbot.data import rotations as rot

        root = _to_numpy(self.base.agent.robot.pose.raw_pose[0]).astype(np.float64)
        ee = _to_numpy(self.base.agent.robot.links_map["ee_gripper_link"].pose.raw_pose[0]).astype(np.float64)
        pos, matrix = _relative_pose(root, ee)
        top_down = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # bridge_data_robot's
        q = _to_numpy(self.base.agent.robot.get_qpos()[0]).astype(np.float64)
        opening = np.clip((q[-2] - 0.015) / (0.037 - 0.015), 0.0, 1.0)
        return np.concatenate([pos, rot.matrix_to_euler(matrix @ top_down.T), [0.0, opening]]).astype(np.float32)

    def observe(self, cameras: list[str]) -> dict[str, Any]:
        from PIL import Image

        images = {}
        for c in cameras:
            frame = np.ascontiguousarray(_to_numpy(self.obs["sensor_data"][c]["rgb"])[0][..., :3]).astype(np.uint8)
            size = (self.image_size, self.image_size)
            images[c] = np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))
        return {"images": images, "state": self.state, "instruction": self.instruction, "privileged": None}

    def step(self, action: np.ndarray) -> bool:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.obs, _, _, _, info = self.env.step(widowx_env_action(action))
        self.steps += 1
        self.success_now = bool(_to_numpy(info["success"]).reshape(-1)[0])
        self.success_any |= self.success_now
        if self.sim.config.success == "any":
            return self.success_now
        return self.success_now if self.steps >= self.max_steps else False

    def close(self) -> None:
        pass
