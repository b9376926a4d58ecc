"""Reading a LeRobot dataset's own feature names to place its state vector in the unified space.

LeRobot's info.json gives every vector feature a `names` entry: a list, `{"motors": [...]}`, or null. When
the names say unambiguously where the end-effector position and orientation sit, the state can be mapped
without a preset; anything that cannot be placed is reported by name, never silently dropped.

Placed: `x, y, z` (three consecutive names) as the position; `roll, pitch, yaw` as Euler angles;
`qx, qy, qz, qw` / `rx, ry, rz, rw` as a scalar-last quaternion, `qw, qx, qy, qz` as scalar-first;
`axis_angle1..3` as a rotation vector; `pad` is padding. Not placed from names alone: a gripper (its
range and polarity are not in the names), joint angles (`motor_i`, `joint_i`) and anything else.
The action vector is never inferred from names: the same names (`x, y, z, roll, pitch, yaw, gripper`)
are used for absolute targets and for deltas, with either gripper polarity (use a preset or `arms`).
"""

from __future__ import annotations

from typing import Any

ROTATIONS: dict[tuple[str, ...], str] = {
    ("roll", "pitch", "yaw"): "euler",
    ("qx", "qy", "qz", "qw"): "quat_xyzw",
    ("rx", "ry", "rz", "rw"): "quat_xyzw",
    ("qw", "qx", "qy", "qz"): "quat_wxyz",
    ("axis_angle1", "axis_angle2", "axis_angle3"): "axis_angle",
}
POSITION = ("x", "y", "z")
PADDING = {"pad", "padding"}

HOW_TO = (
    "pass a layout: `--preset NAME` (`latbot data presets`), or `--set arms=[{arm: right, state_position: [0, 3], "
    "...}]` / `--config OPTS.yaml` (docs/data.md, 'LeRobot layouts'); `--set state_key=null` drops the state"
)


def feature_names(spec: dict[str, Any] | None) -> list[str] | None:
    """The flat list of names of a vector feature (None when info.json gives none)."""
    if not isinstance(spec, dict):
        return None
    names = spec.get("names")
    if isinstance(names, dict) and len(names) == 1:
        names = next(iter(names.values()))
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return [n.strip().lower() for n in names]
    return None


def place_state(names: list[str] | None, dim: int | None) -> tuple[dict[str, Any], list[str]]:
    """(ArmLayout fields for the right arm, unplaced descriptions) of a state vector with these names."""
    if names is None:
        what = f"{dim}-D vector" if dim else "vector"
        return {}, [f"observation.state ({what} without names in meta/info.json)"]
    fields: dict[str, Any] = {}
    used: set[int] = set()
    for i in range(len(names) - 2):
        if tuple(names[i : i + 3]) == POSITION:
            fields["state_position"] = (i, i + 3)
            used |= {i, i + 1, i + 2}
            break
    for pattern, fmt in ROTATIONS.items():
        for i in range(len(names) - len(pattern) + 1):
            if tuple(names[i : i + len(pattern)]) == pattern and "state_rotation" not in fields:
                fields["state_rotation"] = (i, i + len(pattern))
                fields["state_rotation_format"] = fmt
                used |= set(range(i, i + len(pattern)))
    unplaced = [n for i, n in enumerate(names) if i not in used and n not in PADDING]
    notes = []
    if unplaced:
        notes.append(f"observation.state fields {unplaced} (no unambiguous unified slot)")
    if "state_position" not in fields:
        fields.pop("state_rotation", None)
        fields.pop("state_rotation_format", None)
        return {}, notes or [f"observation.state {names} (no x, y, z position)"]
    return fields, notes
