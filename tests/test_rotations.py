"""Rotation utilities against scipy on random rotations and on the edge cases that break naive code."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from latbot.data import rotations as rot

RANDOM = Rotation.random(2000, random_state=7)
# Edge cases: identity, half turns about each axis (w = 0, the quaternion-sign boundary), gimbal lock,
# tiny angles (axis-angle near 0) and angles near π.
EDGES = Rotation.from_euler(
    "xyz",
    [
        [0, 0, 0],
        [np.pi, 0, 0],
        [0, np.pi, 0],
        [0, 0, np.pi],
        [0.3, np.pi / 2, -0.4],
        [-1.2, -np.pi / 2, 2.0],
        [1e-9, -2e-9, 3e-9],
        [np.pi - 1e-7, 0, 0],
        [0.1, 0.2, 0.3],
    ],
)
ALL = Rotation.concatenate([RANDOM, EDGES])


def same_rotation(a: np.ndarray, b: np.ndarray, atol: float = 1e-9) -> bool:
    return np.allclose(a, b, atol=atol)


def test_quaternion_round_trip_and_canonical_sign():
    m = ALL.as_matrix()
    q = rot.matrix_to_quat(m)
    assert (q[:, 3] >= 0).all()
    expected = ALL.as_quat()
    expected[expected[:, 3] < 0] *= -1
    # at w == 0 both signs are canonical candidates: compare as rotations there
    np.testing.assert_allclose(np.abs(np.sum(q * expected, axis=1)), 1.0, atol=1e-9)
    np.testing.assert_allclose(rot.quat_to_matrix(q), m, atol=1e-9)
    np.testing.assert_allclose(rot.quat_to_matrix(-q), m, atol=1e-9)  # q and −q are one rotation
    np.testing.assert_allclose(rot.canonical_quat(-q), rot.canonical_quat(q), atol=1e-12)


def test_euler_matches_scipy_extrinsic_xyz_away_from_gimbal_lock():
    e = RANDOM.as_euler("xyz")
    np.testing.assert_allclose(rot.matrix_to_euler(RANDOM.as_matrix()), e, atol=1e-9)
    np.testing.assert_allclose(rot.euler_to_matrix(e), RANDOM.as_matrix(), atol=1e-12)


@pytest.mark.parametrize("pitch", [np.pi / 2, -np.pi / 2])
def test_gimbal_lock_gives_a_valid_euler_triple(pitch):
    m = Rotation.from_euler("xyz", [0.7, pitch, -0.3]).as_matrix()
    e = rot.matrix_to_euler(m)
    assert e[0] == 0.0 and abs(abs(e[1]) - np.pi / 2) < 1e-6
    np.testing.assert_allclose(rot.euler_to_matrix(e), m, atol=1e-6)


def test_axis_angle_matches_scipy_including_tiny_and_near_pi_angles():
    m = ALL.as_matrix()
    v = rot.matrix_to_axis_angle(m)
    assert (np.linalg.norm(v, axis=1) <= np.pi + 1e-12).all()
    np.testing.assert_allclose(rot.axis_angle_to_matrix(v), m, atol=1e-7)
    np.testing.assert_allclose(rot.axis_angle_to_matrix(RANDOM.as_rotvec()), RANDOM.as_matrix(), atol=1e-12)
    np.testing.assert_allclose(rot.matrix_to_axis_angle(RANDOM.as_matrix()), RANDOM.as_rotvec(), atol=1e-9)


def test_rot6d_recovers_the_matrix_and_orthonormalises_noise():
    m = ALL.as_matrix()
    np.testing.assert_allclose(rot.rot6d_to_matrix(rot.matrix_to_rot6d(m)), m, atol=1e-12)
    noisy = rot.matrix_to_rot6d(m) + np.random.default_rng(0).normal(scale=1e-3, size=(len(m), 6))
    r = rot.rot6d_to_matrix(noisy)
    np.testing.assert_allclose(r @ np.swapaxes(r, 1, 2), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)


def test_relative_rotation_is_world_frame_and_matches_scipy():
    a, b = Rotation.random(500, random_state=1), Rotation.random(500, random_state=2)
    rel = rot.relative_rotation(a.as_matrix(), b.as_matrix())
    np.testing.assert_allclose(rel, (b * a.inv()).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(rel @ a.as_matrix(), b.as_matrix(), atol=1e-12)
