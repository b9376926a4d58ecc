"""Rotation conversions on numpy arrays, batched over leading dimensions.

Conventions (also in docs/data.md):
- Matrices act on column vectors (x' = R x); `(..., 3, 3)`.
- Quaternions are scalar-last `(x, y, z, w)` and canonical: w ≥ 0 (q and −q are the same rotation).
- Euler angles are `(roll, pitch, yaw)` in radians, extrinsic x-y-z: R = Rz(yaw) · Ry(pitch) · Rx(roll)
  (scipy's ``Rotation.from_euler("xyz", ...)``). Pitch is in [−π/2, π/2]; at gimbal lock (|pitch| = π/2)
  roll is set to 0 and yaw carries the whole remaining angle.
- Axis-angle is a rotation vector: axis · angle, angle in [0, π].
- 6D is the first two columns of the matrix, `(..., 6)` = (c1, c2) (Zhou et al. 2019); EgoDex gives 6D.
- A relative rotation between consecutive orientations is taken in the world (base) frame:
  R_rel = R_next · R_prevᵀ, so applying it to R_prev on the left gives R_next.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-8


def normalize(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), _EPS)


def rot6d_to_matrix(r6: np.ndarray) -> np.ndarray:
    """(..., 6) → (..., 3, 3) by Gram-Schmidt on the two given columns."""
    a1, a2 = r6[..., 0:3], r6[..., 3:6]
    b1 = normalize(a1)
    b2 = normalize(a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1)
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], axis=-1)


def matrix_to_rot6d(m: np.ndarray) -> np.ndarray:
    return np.concatenate([m[..., :, 0], m[..., :, 1]], axis=-1)


def canonical_quat(q: np.ndarray) -> np.ndarray:
    """Flip quaternions with w < 0, so each rotation has exactly one representation."""
    q = normalize(np.asarray(q, dtype=np.float64))
    return np.where(q[..., 3:4] < 0, -q, q)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) scalar-last → (..., 3, 3)."""
    x, y, z, w = np.moveaxis(normalize(np.asarray(q, dtype=np.float64)), -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) → canonical (..., 4) scalar-last, numerically stable for every rotation (Shepperd)."""
    m = np.asarray(m, dtype=np.float64)
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # Four candidate solutions; use the one with the largest pivot for each rotation.
    t = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    cand = np.stack(
        [
            np.stack(
                [m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1], t[..., 0]], -1
            ),
            np.stack(
                [t[..., 1], m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] - m[..., 1, 2]], -1
            ),
            np.stack(
                [m[..., 0, 1] + m[..., 1, 0], t[..., 2], m[..., 1, 2] + m[..., 2, 1], m[..., 0, 2] - m[..., 2, 0]], -1
            ),
            np.stack(
                [m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], t[..., 3], m[..., 1, 0] - m[..., 0, 1]], -1
            ),
        ],
        axis=-2,
    )  # (..., 4 candidates, 4)
    best = np.argmax(t, axis=-1)[..., None, None]
    q = np.take_along_axis(cand, np.broadcast_to(best, (*cand.shape[:-2], 1, 4)), axis=-2)[..., 0, :]
    return canonical_quat(q)


def matrix_to_euler(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) → (..., 3) roll, pitch, yaw (extrinsic xyz); gimbal lock handled (roll = 0)."""
    m = np.asarray(m, dtype=np.float64)
    sin_pitch = np.clip(-m[..., 2, 0], -1.0, 1.0)
    pitch = np.arcsin(sin_pitch)
    locked = np.abs(sin_pitch) > 1 - 1e-9
    roll = np.where(locked, 0.0, np.arctan2(m[..., 2, 1], m[..., 2, 2]))
    yaw_free = np.arctan2(m[..., 1, 0], m[..., 0, 0])
    # At pitch = ±π/2 only yaw ∓ roll is defined; with roll = 0 it is read from the first row.
    yaw_locked = np.arctan2(-m[..., 0, 1], m[..., 1, 1])
    yaw = np.where(locked, yaw_locked, yaw_free)
    return np.stack([roll, pitch, yaw], axis=-1)


def euler_to_matrix(e: np.ndarray) -> np.ndarray:
    """(..., 3) roll, pitch, yaw → (..., 3, 3) = Rz(yaw) Ry(pitch) Rx(roll)."""
    e = np.asarray(e, dtype=np.float64)
    cr, sr = np.cos(e[..., 0]), np.sin(e[..., 0])
    cp, sp = np.cos(e[..., 1]), np.sin(e[..., 1])
    cy, sy = np.cos(e[..., 2]), np.sin(e[..., 2])
    return np.stack(
        [
            np.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr], -1),
            np.stack([sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr], -1),
            np.stack([-sp, cp * sr, cp * cr], -1),
        ],
        axis=-2,
    )


def axis_angle_to_matrix(v: np.ndarray) -> np.ndarray:
    """(..., 3) rotation vector → (..., 3, 3) (Rodrigues)."""
    v = np.asarray(v, dtype=np.float64)
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    x, y, z = np.moveaxis(v / np.maximum(angle, _EPS), -1, 0)
    half = angle[..., 0] / 2
    s = np.sin(half)
    return quat_to_matrix(np.stack([x * s, y * s, z * s, np.cos(half)], -1))


def matrix_to_axis_angle(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) → (..., 3) rotation vector with angle in [0, π]."""
    q = matrix_to_quat(m)  # w ≥ 0 ⇒ angle = 2·atan2(|xyz|, w) ∈ [0, π]
    sin_half = np.linalg.norm(q[..., :3], axis=-1, keepdims=True)
    angle = 2 * np.arctan2(sin_half, q[..., 3:4])
    return q[..., :3] / np.maximum(sin_half, _EPS) * angle


def relative_rotation(r_prev: np.ndarray, r_next: np.ndarray) -> np.ndarray:
    """R_rel = R_next · R_prevᵀ (world frame): the rotation that takes r_prev to r_next."""
    return r_next @ np.swapaxes(r_prev, -1, -2)
