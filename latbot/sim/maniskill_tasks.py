"""Language, scripted experts and subtask segments of ManiSkill3's asset-free Panda tasks (`maniskill`).

The experts act on the privileged state (`privileged(env)`: the TCP pose, every actor's pose, the robot's
joint positions) in the `maniskill` simulator's native action convention, the `franka_panda` embodiment's
(latbot/sim/maniskill.py): position delta in units of 0.1 m (ManiSkill's normalized `pd_ee_delta_pose`),
rotation delta as an axis-angle vector in units of 0.1 rad, gripper −1 open / +1 close. Each is a small
state machine (reach → grasp → move ...) reset per episode; `segments` cuts a recorded demonstration into
the same phases, read back from the privileged states and the gripper commands.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

POS_UNIT = 0.1  # metres per unit of native position action (ManiSkill's pd_ee_delta_pose pos bound)
ROT_UNIT = 0.1  # radians per unit of native rotation action (its rot bound)
OPEN, CLOSE = -1.0, 1.0
UP = np.array([0.0, 0.0, 1.0])


class TaskText(NamedTuple):
    instruction: str
    obj: str  # the object the expert handles: "reach the <obj>", "grasp the <obj>"
    then: str  # the phase after contact or grasp


TASKS: dict[str, TaskText] = {
    "PickCube-v1": TaskText(
        "pick up the red cube and move it to the green goal", "red cube", "move the red cube to the goal"
    ),
    "PushCube-v1": TaskText("push the cube onto the red and white target", "cube", "push the cube onto the target"),
    "PullCube-v1": TaskText(
        "pull the cube back onto the red and white target", "cube", "pull the cube onto the target"
    ),
    "StackCube-v1": TaskText(
        "stack the red cube on top of the green cube", "red cube", "put the red cube on the green cube"
    ),
    "PokeCube-v1": TaskText("use the peg to poke the cube onto the target", "peg", "push the cube with the peg"),
    "LiftPegUpright-v1": TaskText("lift the peg and stand it upright", "peg", "stand the peg upright"),
    "PlaceSphere-v1": TaskText("place the ball into the bin", "ball", "put the ball into the bin"),
    "PushT-v1": TaskText(
        "push the T-shaped block onto the T-shaped goal", "T-shaped block", "push the block onto the goal"
    ),
    "RollBall-v1": TaskText("push the ball so that it rolls to the goal region", "ball", "roll the ball to the goal"),
    "PegInsertionSide-v1": TaskText("insert the peg into the hole of the box", "peg", "insert the peg into the hole"),
    "StackPyramid-v1": TaskText("stack the three cubes into a pyramid", "cube", "build the pyramid"),
    "PullCubeTool-v1": TaskText("use the tool to pull the cube to the robot", "tool", "pull the cube with the tool"),
}
EXPERT_TASKS = ("PickCube-v1", "PushCube-v1", "PullCube-v1", "StackCube-v1")


def generic_instruction(task: str) -> str:
    """An instruction for a ManiSkill task LatBot has no sentence for: its id in words."""
    import re

    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", task.split("-")[0]).lower()
    return f"{words}"


# -- the privileged state ---------------------------------------------------------------------------------
def privileged(env) -> dict[str, Any]:
    """What the experts (and the subtask segments) read: world-frame poses as (7,) position + scalar-first
    quaternion, ManiSkill's layout; one environment (batch index 0)."""
    base = env.unwrapped if hasattr(env, "unwrapped") else env
    state = base.get_state_dict()
    return {
        "tcp": base.agent.tcp.pose.raw_pose[0].cpu().numpy().astype(np.float64),
        "qpos": base.agent.robot.get_qpos()[0].cpu().numpy().astype(np.float64),
        "actors": {name: s[0, :7].cpu().numpy().astype(np.float64) for name, s in state["actors"].items()},
    }


def _yaw_of(quat_wxyz: np.ndarray, axis: int) -> float:
    """Heading in the world xy plane of a body's local axis (0 = x, 1 = y)."""
    w, x, y, z = quat_wxyz
    if axis == 0:
        vx, vy = 1 - 2 * (y * y + z * z), 2 * (x * y + w * z)
    else:
        vx, vy = 2 * (x * y - w * z), 1 - 2 * (x * x + z * z)
    return math.atan2(vy, vx)


def _wrap(angle: float, period: float) -> float:
    """`angle` wrapped into [−period/2, period/2)."""
    return (angle + period / 2) % period - period / 2


class PandaExpert:
    """Base of the experts: proportional moves of the TCP towards a target with a bounded step."""

    cameras: list[str]

    def __init__(self, task: str):
        self.task = task
        self.cameras = []  # experts read the privileged state, no images
        self.reset(task, "")

    def reset(self, task: str, instruction: str) -> None:
        self.phase, self.count = "reach", 0

    def _move(self, p: dict, target: np.ndarray, grip: float, max_step: float = 0.05, yaw_to: float | None = None):
        """The native action moving the TCP towards `target` (world xyz; the robot base is not rotated, so its
        frame's axes are the world's), at most `max_step` metres per step, optionally turning the fingers'
        closing direction to `yaw_to` (modulo 90°: a cube's faces)."""
        delta = np.asarray(target, np.float64) - p["tcp"][:3]
        delta = delta * 2.0  # the PD controller covers ~half of a commanded step in one control period
        norm = np.linalg.norm(delta)
        if norm > max_step * 2.0:
            delta *= max_step * 2.0 / norm
        rot = np.zeros(3)
        if yaw_to is not None:
            err = _wrap(yaw_to - _yaw_of(p["tcp"][3:], 1), math.pi / 2)
            rot[2] = np.clip(err / ROT_UNIT, -1.0, 1.0)
        return np.concatenate([np.clip(delta / POS_UNIT, -1, 1), rot, [grip]]).astype(np.float32)[None]

    def predict(self, observation: dict[str, Any]) -> np.ndarray:
        p = observation["privileged"]
        action = self.act(p)
        self.count += 1
        return action

    def _go(self, phase: str) -> None:
        self.phase, self.count = phase, 0

    def act(self, p: dict) -> np.ndarray:
        raise NotImplementedError


def _yaw_error(p: dict, yaw: float) -> float:
    return abs(_wrap(yaw - _yaw_of(p["tcp"][3:], 1), math.pi / 2))


class PickPlaceExpert(PandaExpert):
    """Reach above the object, descend, close, carry it so that the object reaches `goal(p)`, hold still;
    with `release`, open the gripper at the goal and lift away (stacking)."""

    obj = "cube"
    release = False

    def goal(self, p: dict) -> np.ndarray:
        return p["actors"]["goal_site"][:3]

    def act(self, p: dict) -> np.ndarray:
        tcp, obj = p["tcp"][:3], p["actors"][self.obj]
        yaw = _yaw_of(obj[3:], 0)
        if self.phase == "reach":
            above = obj[:3] + 0.05 * UP
            if (np.linalg.norm(tcp - above) < 0.015 and _yaw_error(p, yaw) < 0.05) or self.count > 25:
                self._go("descend")
            else:
                return self._move(p, above, OPEN, 0.06, yaw)
        if self.phase == "descend":
            if np.linalg.norm(tcp - obj[:3]) < 0.006 or self.count > 15:
                self._go("grasp")
            else:
                return self._move(p, obj[:3], OPEN, 0.03, yaw)
        if self.phase == "grasp":
            if self.count >= 3:
                self._go("carry")
            else:
                return self._move(p, obj[:3], CLOSE, 0.01)
        goal = self.goal(p)
        if self.phase == "carry":
            if np.linalg.norm(goal - obj[:3]) < 0.006 or self.count > 40:
                self._go("release" if self.release else "hold")
            else:
                lift = tcp + (goal - obj[:3])
                if self.release and np.linalg.norm(goal[:2] - obj[:2]) > 0.01:
                    lift[2] = max(lift[2], goal[2] + 0.03)  # over the other cube, never into it
                return self._move(p, lift, CLOSE, 0.05)
        if self.phase == "release":
            if self.count >= 3:
                self._go("retreat")
            else:
                return self._move(p, tcp, OPEN, 0.01)
        if self.phase == "retreat":
            return self._move(p, obj[:3] + 0.08 * UP, OPEN, 0.03)
        return self._move(p, tcp + (goal - obj[:3]), CLOSE, 0.01)  # hold: the task wants the robot static


class StackExpert(PickPlaceExpert):
    obj = "cubeA"
    release = True

    def goal(self, p: dict) -> np.ndarray:
        return p["actors"]["cubeB"][:3] + (0.04 + 0.002) * UP  # on top, 2 mm above


class PushExpert(PandaExpert):
    """Closed fingers behind the object (on the side away from the goal), lowered to the table, then
    moved so that the object travels to the goal region's centre."""

    def act(self, p: dict) -> np.ndarray:
        tcp, obj = p["tcp"][:3], p["actors"]["cube"][:3]
        goal = p["actors"]["goal_region"][:3]
        direction = goal[:2] - obj[:2]
        direction = direction / (np.linalg.norm(direction) + 1e-9)
        behind = np.array([*(obj[:2] - direction * 0.045), 0.02])
        if self.phase == "reach":
            above = behind + 0.05 * UP
            if np.linalg.norm(tcp - above) < 0.015 or self.count > 25:
                self._go("descend")
            else:
                return self._move(p, above, CLOSE, 0.06)
        if self.phase == "descend":
            if np.linalg.norm(tcp - behind) < 0.008 or self.count > 15:
                self._go("push")
            else:
                return self._move(p, behind, CLOSE, 0.03)
        target = tcp.copy()
        target[:2] += goal[:2] - obj[:2]
        target[2] = 0.02
        return self._move(p, target, CLOSE, 0.04)


def expert(task: str) -> PandaExpert:
    """The scripted expert of an `EXPERT_TASKS` task."""
    return {"PickCube-v1": PickPlaceExpert, "StackCube-v1": StackExpert}.get(task, PushExpert)(task)


# -- subtask segments ----------------------------------------------------------------------------------------
def segments(task: str, privileged_states: list[dict], actions: np.ndarray) -> list[tuple[int, int, str]]:
    """Subtasks of an expert demonstration: grasping tasks "reach the <obj>" until the gripper is first
    commanded closed, "grasp the <obj>" while the fingers close, then the task's phase (stacking: "release
    the red cube" from the gripper's first opening after the grasp); pushing tasks "reach the <obj>" until the
    object first moves (5 mm), then the task's phase. Other tasks: one segment, the instruction."""
    n = len(actions)
    text = TASKS.get(task)
    if text is None or task not in EXPERT_TASKS or n == 0:
        return [(0, n, text.then if text else generic_instruction(task))] if n else []
    grip = np.asarray(actions)[:, 6]
    if task in ("PickCube-v1", "StackCube-v1"):
        closing = np.flatnonzero(grip > 0)
        if not closing.size:
            return [(0, n, text.then)]
        start = int(closing[0])
        fingers = np.array([s["qpos"][7] + s["qpos"][8] for s in privileged_states])
        settle = start
        while settle + 1 < n and settle - start < 10 and abs(fingers[settle + 1] - fingers[settle]) > 1e-3:
            settle += 1
        cuts, names = [0, start, max(start + 1, settle + 1)], [f"reach the {text.obj}", f"grasp the {text.obj}"]
        opening = np.flatnonzero((grip < 0) & (np.arange(n) > start))
        if task == "StackCube-v1" and opening.size and opening[0] > cuts[-1]:
            cuts += [int(opening[0])]
            names += [text.then]
            names += ["release the red cube"]
        else:
            names += [text.then]
        cuts.append(n)
    else:
        obj = np.stack([s["actors"]["cube"][:3] for s in privileged_states])
        moved = np.flatnonzero(np.linalg.norm(obj - obj[0], axis=1) > 0.005)
        if not moved.size:
            return [(0, n, f"reach the {text.obj}")]
        cuts, names = [0, int(moved[0]), n], [f"reach the {text.obj}", text.then]
    return [(a, b, t) for a, b, t in zip(cuts[:-1], cuts[1:], names, strict=True) if b > a]
