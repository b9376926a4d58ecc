"""The SIMPLER robots as embodiments (issue #31): `widowx` (BridgeData V2's WidowX 250) and `google_robot`
(RT-1 / Fractal's Everyday Robots arm). Their native spaces are the OXE copies after the Octo/OpenVLA
standardization (what the `bridge` / `fractal` presets read and what Octo/OpenVLA answer in); the tests
check the round trip, values taken from the datasets' own code and docs, the masks, that the presets
convert through them, and that `latbot plugins check` takes each robot's own gripper range."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

from latbot.cli import app
from latbot.data import embodiments
from latbot.data.embodiments import google_robot, widowx
from latbot.data.embodiments.google_robot import GoogleRobotEmbodiment, relative_to_absolute_gripper
from latbot.data.embodiments.widowx import WidowXEmbodiment
from latbot.data.presets import load_preset
from latbot.data.spaces import ACTION_DIM, STATE_DIM
from latbot.testing.contracts import check, check_class

# unified right-arm slots (latbot/data/spaces.py)
POS, ROT, GRIP = slice(7, 10), slice(10, 13), 13
SPOS, SQUAT, SGRIP = slice(8, 11), slice(11, 15), 15
NAMES = ("widowx", "google_robot")
RATES = {"widowx": widowx.FPS, "google_robot": google_robot.FPS}


def raw_actions(rng, steps=6, gripper=(1.0, 1.0, 0.0, 0.0, 1.0, 0.5)):
    """(T, 7) float32 end-effector deltas with the gripper as an open amount (1 open, 0 closed)."""
    a = np.concatenate([rng.uniform(-0.02, 0.02, (steps, 3)), rng.uniform(-0.1, 0.1, (steps, 3))], 1)
    return np.concatenate([a, np.asarray(gripper)[:steps, None]], 1).astype(np.float32)


@pytest.mark.parametrize("name", NAMES)
def test_raw_to_unified_to_raw_is_exact(name):
    emb = embodiments.get(name)
    assert emb.native_action_dim == 7 and emb.native_state_dim == 8
    raw = raw_actions(np.random.default_rng(0))
    unified = emb.actions_to_unified(raw)
    assert unified.shape == (6, ACTION_DIM) and unified.dtype == np.float32
    back = emb.actions_to_native(unified)
    assert back.shape == raw.shape
    np.testing.assert_array_equal(back[:, :6], raw[:, :6])  # deltas pass through unchanged
    np.testing.assert_array_equal(back[:, 6], raw[:, 6])  # open / closed / half-open exactly
    continuous = raw.copy()
    continuous[:, 6] = np.linspace(0, 1, 6, dtype=np.float32)  # an un-binarized open amount
    np.testing.assert_allclose(emb.actions_to_native(emb.actions_to_unified(continuous)), continuous, rtol=0, atol=1e-7)


def test_widowx_values_from_bridge():
    emb = embodiments.get("widowx")
    # rail-berkeley/bridge_data_robot widowx_envs: "for gripper action, 0 is fully closed, 1 is fully open"; 5 cm
    # per axis at most; Octo's SimplerEnv wrapper reads the same dim as open_gripper, "1 = open; 0 = close".
    raw = np.array([[0.05, 0.0, -0.01, 0.0, 0.0, 0.1, 1.0], [0.0, 0.02, 0.0, 0.05, 0.0, 0.0, 0.0]], np.float32)
    u = emb.actions_to_unified(raw)
    np.testing.assert_allclose(u[:, POS], raw[:, :3])
    np.testing.assert_allclose(u[:, ROT], [[0, 0, 0.1], [0.05, 0, 0]], atol=1e-7)  # droll, dpitch, dyaw
    assert u[0, GRIP] == 0.0 and u[1, GRIP] == 1.0  # open → unified 0, closed → unified 1
    assert not u[:, :7].any() and not u[:, 14:].any()  # the right slot only
    # widowx_envs' start_state [0.3, 0.0, 0.15, 0, 0, 0, 1] (x, y, z, roll, pitch, yaw, gripper); the OXE copy
    # inserts a zero pad before the gripper (observation.state names x y z roll pitch yaw pad gripper).
    s = emb.states_to_unified(np.array([[0.3, 0.0, 0.15, 0.0, 0.0, 0.0, 0.0, 1.0]]))
    np.testing.assert_allclose(s[0, SPOS], [0.3, 0.0, 0.15], atol=1e-7)
    np.testing.assert_allclose(s[0, SQUAT], [0, 0, 0, 1], atol=1e-7)  # the top-down pose is the identity
    assert s[0, SGRIP] == 0 and not emb.state_mask[SGRIP]  # state gripper polarity undocumented: masked
    # a yaw of 90° (extrinsic x-y-z, as scipy's "xyz") → the quaternion about z, scalar last
    s = emb.states_to_unified(np.array([[0.3, 0.0, 0.15, 0.0, 0.0, np.pi / 2, 0.0, 1.0]]))
    np.testing.assert_allclose(s[0, SQUAT], Rotation.from_euler("z", 90, degrees=True).as_quat(), atol=1e-7)


def test_google_robot_values_from_rt1():
    emb = embodiments.get("google_robot")
    # RT-1's raw gripper_closedness_action is relative: +1 closes, -1 opens (SimplerEnv rt1_model.py: "-1 is open
    # gripper, 1 is close gripper"); Octo's rel2abs_gripper_actions makes it absolute, 1 open / 0 closed, the state
    # before the first command being its opposite.
    closedness = np.array([0.0, 1.0, 0.0, 0.0, -1.0, 0.0])
    absolute = relative_to_absolute_gripper(closedness)
    np.testing.assert_array_equal(absolute, [1, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(relative_to_absolute_gripper(np.array([0.0, -1.0, 0.0])), [0, 1, 1])
    np.testing.assert_array_equal(relative_to_absolute_gripper(np.zeros(3)), [1, 1, 1])  # no command: open
    world_vector = np.tile([0.01, 0.0, 0.0], (6, 1))
    rotation_delta = np.tile([0.0, 0.0, 0.05], (6, 1))  # roll, pitch, yaw
    raw = np.concatenate([world_vector, rotation_delta, absolute[:, None]], 1)
    u = emb.actions_to_unified(raw)
    np.testing.assert_array_equal(u[:, GRIP], [0, 1, 1, 1, 0, 0])  # closed from the +1 until the -1
    np.testing.assert_allclose(u[:, POS], world_vector, atol=1e-8)
    np.testing.assert_allclose(u[:, ROT], rotation_delta, atol=1e-8)
    # base_pose_tool_reached = x, y, z + quaternion x, y, z, w (OXE POS_QUAT; the LeRobot copy names rx ry rz rw);
    # gripper_closed 1 = closed. A quaternion with w < 0 is the same rotation: unified keeps w ≥ 0.
    q = Rotation.from_euler("x", 180 - 1e-3, degrees=True).as_quat()
    state = np.array([[0.6, -0.1, 0.8, *(-q), 1.0], [0.6, -0.1, 0.8, 0.0, 0.0, 0.0, 2.0, 0.0]])
    s = emb.states_to_unified(state)
    np.testing.assert_allclose(s[0, SPOS], [0.6, -0.1, 0.8], atol=1e-7)
    np.testing.assert_allclose(s[0, SQUAT], q if q[3] >= 0 else -q, atol=1e-6)
    np.testing.assert_allclose(s[1, SQUAT], [0, 0, 0, 1], atol=1e-7)  # normalised
    assert s[0, SGRIP] == 1.0 and s[1, SGRIP] == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_the_unified_rotation_is_what_simpler_sends(name):
    """SimplerEnv turns (roll, pitch, yaw) into the axis-angle it commands with transforms3d's euler2axangle
    (static x-y-z), i.e. scipy's Rotation.from_euler("xyz"): the unified Euler delta must be that rotation."""
    from latbot.data import rotations as rot

    rpy = np.array([[0.1, -0.05, 0.2], [0.0, 0.0, -0.3]])
    u = embodiments.get(name).actions_to_unified(np.concatenate([np.zeros((2, 3)), rpy, np.ones((2, 1))], 1))
    axis_angle = rot.matrix_to_axis_angle(rot.euler_to_matrix(u[:, ROT].astype(np.float64)))
    np.testing.assert_allclose(axis_angle, Rotation.from_euler("xyz", rpy).as_rotvec(), atol=1e-6)


def test_masks():
    right = np.zeros(ACTION_DIM, bool)
    right[7:14] = True
    for name in NAMES:
        assert (embodiments.get(name).action_mask == right).all(), name
    widowx = np.zeros(STATE_DIM, bool)
    widowx[8:15] = True  # position + quaternion; the gripper state is not established
    google = widowx.copy()
    google[15] = True
    assert (embodiments.get("widowx").state_mask == widowx).all()
    assert (embodiments.get("google_robot").state_mask == google).all()
    rng = np.random.default_rng(1)
    for name in NAMES:
        emb = embodiments.get(name)
        traj = emb.trajectory(rng.uniform(-0.5, 0.5, (4, 8)), raw_actions(rng, 4))
        assert not traj.actions[:, ~traj.action_mask].any() and not traj.states[:, ~traj.state_mask].any()
        assert (traj.action_mask == emb.action_mask).all() and (traj.state_mask == emb.state_mask).all()
        assert (emb.trajectory(None, raw_actions(rng, 4)).state_mask == 0).all()


@pytest.mark.parametrize(
    ("preset", "name", "camera", "fps", "state_names"),
    [("bridge", "widowx", "image_0", 5, "EULER"), ("fractal", "google_robot", "image", 3, "QUAT")],
)
def test_the_presets_convert_through_the_embodiment(tmp_path, preset, name, camera, fps, state_names):
    import tests.test_presets as tp

    p = load_preset(preset)
    assert p.embodiment == name and p.adapter["use_embodiment"] is True and "arms" not in p.adapter
    assert p.fps == fps == RATES[name]  # 5 Hz Bridge, 3 Hz RT-1
    rng = np.random.default_rng(0)
    states = rng.uniform(-0.5, 0.5, (tp.STEPS, 8)).astype(np.float32)
    states[:, 7] = [0, 0, 1, 1, 1, 0]
    actions = raw_actions(rng, tp.STEPS, (1, 1, 0, 0, 0, 1))
    src = tp.write_lerobot(
        tmp_path / "src", camera, fps,
        {"observation.state": ([8], getattr(tp, state_names)), "action": ([7], tp.EEF)},
        {"observation.state": states, "action": actions},
    )  # fmt: skip
    got_actions, got_states, amask, smask, rec = tp.convert_with(preset, src, tmp_path / "store")
    want = embodiments.get(name).trajectory(states, actions)
    np.testing.assert_array_equal(got_actions, want.actions)
    np.testing.assert_array_equal(got_states, want.states)
    assert (amask == want.action_mask).all() and (smask == want.state_mask).all()
    assert rec.embodiment == name
    np.testing.assert_array_equal(got_actions[:, GRIP], [0, 0, 1, 1, 1, 0])  # 1 = open in the source
    # the policy answers in the units the store was written from
    np.testing.assert_array_equal(embodiments.get(name).actions_to_native(got_actions), actions)


def test_bc_z_does_not_claim_the_rt1_layout():
    """BC-Z's copy is the same robot in another native layout (axis-angle, a pad): it must not be decoded
    through `google_robot` by a policy finetuned on it."""
    p = load_preset("bc_z")
    assert p.embodiment != "google_robot" and not embodiments.is_registered(p.embodiment)
    assert "use_embodiment" not in p.adapter


def test_plugins_check_passes_for_the_simpler_robots_and_the_old_ones():
    for name in (*NAMES, "sawyer", "franka_panda"):
        report = check("embodiments", name)
        assert report.ok, [str(f) for f in report.failures]
        assert "gripper_range" in report.passed and "round_trip" in report.passed
    result = CliRunner().invoke(app, ["plugins", "check", "--kind", "embodiments"])
    assert result.exit_code == 0, result.output
    for name in (*NAMES, "sawyer", "franka_panda"):
        assert f"ok    embodiments/{name} (latbot): " in result.stdout


class _ConvertsAsTheRealOne:
    """Declares a gripper range of its own but converts actions as the real embodiment (its parent) does: a
    plugin whose declaration and conversion disagree."""

    def _real(self):
        real = type(self).__mro__[2]  # the registered embodiment this test class derives from
        return real(real.Config())

    def actions_to_unified(self, actions):
        return self._real().actions_to_unified(actions)

    def actions_to_native(self, actions):
        return self._real().actions_to_native(actions)


class PlusMinusOneWidowX(_ConvertsAsTheRealOne, WidowXEmbodiment):
    """Declares the ±1 command the check used to assume, but converts Bridge's 1 open … 0 closed."""

    gripper_open: ClassVar[float] = -1.0
    gripper_closed: ClassVar[float] = 1.0


class FlippedGoogleRobot(_ConvertsAsTheRealOne, GoogleRobotEmbodiment):
    """Declares the right range with the wrong polarity (0 open, 1 closed)."""

    gripper_open: ClassVar[float] = 0.0
    gripper_closed: ClassVar[float] = 1.0


@pytest.mark.parametrize("cls", [PlusMinusOneWidowX, FlippedGoogleRobot])
def test_plugins_check_fails_for_a_wrong_gripper_range(cls):
    report = check_class("embodiments", cls)
    assert not report.ok
    failed = {f.rule: f.message for f in report.failures}
    assert "gripper_range" in failed and "expected 0 (open) / 1 (closed)" in failed["gripper_range"]
    # driven through ±1, the WidowX round trip breaks too; a flipped polarity round-trips, only gripper_range sees it
    assert ("round_trip" in failed) == (cls is PlusMinusOneWidowX)


def test_gripper_helpers_are_inverse_on_the_unit_interval():
    for lo, hi in ((1.0, 0.0), (-1.0, 1.0), (0.08, 0.0)):
        values = np.linspace(lo, hi, 9)
        unified = embodiments.gripper_to_unified(values, lo, hi)
        np.testing.assert_allclose(unified, np.linspace(0, 1, 9), atol=1e-12)
        np.testing.assert_allclose(embodiments.unified_to_gripper(unified, lo, hi), values, atol=1e-12)
    assert WidowXEmbodiment.gripper_range() == (0.0, 1.0) and embodiments.get("sawyer").gripper_range() == (-1.0, 1.0)
