"""Every dataset preset (one per Table 6 source) converts a tiny source written in that dataset's real
schema — the public LeRobot copy's info.json features and names, or EgoDex's own files — with a known
motion, and the unified actions/states equal an independent computation: the right end effector moves
+1 cm along x and turns +0.01 rad about z per step, and the gripper closes at step 3 (unified 1 = closed).

The schema table below is written from the OXE configs / transforms the presets cite (state and action
encodings, what each transform does to the gripper), not from the preset files."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from scipy.spatial.transform import Rotation

from latbot.data.convert import convert
from latbot.data.presets import PresetError, check_source, load_preset, preset_names
from latbot.data.store import EpisodeStore
from latbot.data.video import encode_video
from latbot.testing.samples import make_egodex, synthetic_frames

STEPS, CLOSE_AT, DX, DYAW = 6, 3, 0.01, 0.01
EULER = ["x", "y", "z", "roll", "pitch", "yaw", "pad", "gripper"]
QUAT = ["x", "y", "z", "rx", "ry", "rz", "rw", "gripper"]
JOINT = [f"motor_{i}" for i in range(7)] + ["gripper"]
EEF = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]

# name: (camera, fps, state layout, action layout, what the unified space must hold)
#   state: euler | quat | axis_angle | pos_only | joint | none ; "+g" = state gripper 1 = closed
#   action: delta (xyz, rpy, gripper 1 = open) | delta_aa (rotation vector) | delta_no_rot | delta_no_grip
#           | delta_2d (language table) | absolute (xyz targets) | from_state (action not used)
#   expect: set of unified parts that must be filled: pos, rot, grip (actions); spos, srot, sgrip (states)
OXE = {
    "fractal": ("image", 3, "quat+g", "delta", {"pos", "rot", "grip", "spos", "srot", "sgrip"}),
    "kuka": ("image", 10, "quat+g", "delta", {"pos", "rot", "grip", "spos", "srot", "sgrip"}),
    "bridge": ("image_0", 5, "euler", "delta", {"pos", "rot", "grip", "spos", "srot"}),
    "taco_play": ("rgb_static", 15, "euler", "from_state", {"pos", "rot", "grip", "spos", "srot"}),
    "jaco_play": ("image", 10, "pos_only", "delta_no_rot", {"pos", "grip", "spos"}),
    "berkeley_cable_routing": ("image", 10, "joint", "delta_no_grip", {"pos", "rot"}),
    "roboturk": ("front_rgb", 10, "none", "delta", {"pos", "rot", "grip"}),
    "viola": ("agentview_rgb", 20, "joint", "delta", {"pos", "rot", "grip"}),
    "berkeley_autolab_ur5": ("image", 5, "quat", "delta", {"pos", "rot", "grip", "spos", "srot"}),
    "toto": ("image", 30, "joint", "absolute", {"pos", "grip"}),
    "language_table": ("rgb", 10, "pos_only", "delta_2d", {"pos", "spos"}),
    "stanford_hydra": ("image", 10, "euler", "delta", {"pos", "rot", "grip", "spos", "srot"}),
    "austin_buds": ("image", 20, "joint", "delta", {"pos", "rot", "grip"}),
    "nyu_franka_play": ("image", 3, "euler", "delta", {"pos", "rot", "grip", "spos", "srot"}),
    "furniture_bench": ("image", 10, "quat", "delta", {"pos", "rot", "grip", "spos", "srot"}),
    "austin_sailor": ("image", 20, "quat", "delta", {"pos", "rot", "grip", "spos", "srot"}),
    "austin_sirius": ("image", 20, "quat", "delta", {"pos", "rot", "grip", "spos", "srot"}),
    "dlr_edan_shared_control": ("image", 5, "euler", "delta", {"pos", "rot", "grip", "spos", "srot"}),
    "utaustin_mutex": ("image", 20, "joint", "delta", {"pos", "rot", "grip"}),
    "berkeley_fanuc_manipulation": ("image", 10, "joint", "delta", {"pos", "rot", "grip"}),
    "cmu_stretch": ("image", 10, "pos_only", "from_state", {"pos", "spos"}),
    "bc_z": ("image", 10, "axis_angle+g", "delta_aa", {"pos", "rot", "grip", "spos", "srot", "sgrip"}),
    "fmb": ("image_side_1", 10, "pos_only", "delta_no_grip", {"pos", "rot", "spos"}),
    "dobbe": ("wrist_image", 3.75, "euler", "delta_no_grip", {"pos", "rot", "spos", "srot"}),
    "droid": ("exterior_image_1_left", 15, "euler+g", "from_state", {"pos", "rot", "grip", "spos", "srot", "sgrip"}),
}
REFUSING = {"ucsd_kitchen": ("image", 2), "iamlab_cmu_pickup_insert": ("image", 20)}

R = {"pos": slice(7, 10), "rot": slice(10, 13), "grip": 13, "spos": slice(8, 11), "srot": slice(11, 15), "sgrip": 15}


def motion():
    t = np.arange(STEPS)
    pos = np.stack([0.4 + DX * t, np.full(STEPS, 0.1), np.full(STEPS, 0.3)], 1)
    rot = Rotation.from_euler("xyz", np.stack([np.full(STEPS, 0.2), np.zeros(STEPS), DYAW * t], 1))
    closed = (t >= CLOSE_AT).astype(float)
    return pos, rot, closed


def source_vectors(state: str, action: str, rng):
    pos, rot, closed = motion()
    g = closed[:, None]
    kind = state.split("+")[0]
    if kind == "quat":
        s = np.concatenate([pos, rot.as_quat(), g if "+g" in state else rng.random((STEPS, 1))], 1)
    elif kind == "axis_angle":
        s = np.concatenate([pos, rot.as_rotvec(), np.zeros((STEPS, 1)), g], 1)
    elif kind == "euler":
        s = np.concatenate(
            [pos, rot.as_euler("xyz"), np.zeros((STEPS, 1)), g if "+g" in state else rng.random((STEPS, 1))], 1
        )
    elif kind == "pos_only":
        s = np.concatenate([pos, rng.random((STEPS, 5))], 1)
    else:
        s = rng.normal(size=(STEPS, 8))
    step = Rotation.from_euler("z", DYAW)
    opened = 1 - g
    rpy = np.tile(step.as_euler("xyz"), (STEPS, 1))
    dpos = np.tile([DX, 0, 0], (STEPS, 1))
    a = {
        "delta": np.concatenate([dpos, rpy, opened], 1),
        "delta_aa": np.concatenate([dpos, np.tile(step.as_rotvec(), (STEPS, 1)), opened], 1),
        "delta_no_rot": np.concatenate([dpos, np.zeros((STEPS, 3)), opened], 1),
        "delta_no_grip": np.concatenate([dpos, rpy, np.zeros((STEPS, 1))], 1),
        "delta_2d": np.concatenate([dpos[:, :2], np.zeros((STEPS, 4)), np.ones((STEPS, 1))], 1),
        "absolute": np.concatenate([pos, rng.normal(size=(STEPS, 3)), opened], 1),
        "from_state": np.concatenate([rng.normal(size=(STEPS, 6)), opened], 1),
    }[action]
    return s.astype(np.float32), a.astype(np.float32)


def write_lerobot(root, camera, fps, features, columns, task="pick up the cup"):
    """A one-episode LeRobot v3.0 dataset with these vector features (name → (shape, names)) and columns."""
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    video = {"dtype": "video", "shape": [16, 16, 3], "names": ["height", "width", "rgb"],
             "info": {"video.fps": fps, "video.codec": "h264", "video.pix_fmt": "yuv420p"}}  # fmt: skip
    feats = {f"observation.images.{camera}": video}
    feats |= {
        k: {"dtype": "float32", "shape": shape, "names": {"motors": names}} for k, (shape, names) in features.items()
    }
    for k in ("frame_index", "episode_index", "index", "task_index"):
        feats[k] = {"dtype": "int64", "shape": [1], "names": None}
    feats["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    info = {"codebase_version": "v3.0", "robot_type": "test", "fps": fps, "chunks_size": 1000, "features": feats,
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"}  # fmt: skip
    (root / "meta/info.json").write_text(json.dumps(info))
    pq.write_table(pa.table({"task_index": [0], "task": [task]}), root / "meta/tasks.parquet")
    table = {
        k: pa.array([list(map(float, row.ravel())) for row in v], pa.list_(pa.float32())) for k, v in columns.items()
    }
    table |= {
        "timestamp": pa.array((np.arange(STEPS) / fps).astype(np.float32)),
        "frame_index": np.arange(STEPS), "episode_index": np.zeros(STEPS, np.int64),
        "index": np.arange(STEPS), "task_index": np.zeros(STEPS, np.int64),
    }  # fmt: skip
    (root / "data/chunk-000").mkdir(parents=True)
    pq.write_table(pa.table(table), root / "data/chunk-000/file-000.parquet")
    key = f"observation.images.{camera}"
    path = root / f"videos/{key}/chunk-000/file-000.mp4"
    path.parent.mkdir(parents=True)
    encode_video(path, synthetic_frames(STEPS, 16, 16), round(fps) or 1, codec="libx264")
    row = {"episode_index": 0, "tasks": [task], "length": STEPS, "data/chunk_index": 0, "data/file_index": 0}
    row |= {f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0, f"videos/{key}/from_timestamp": 0.0}
    pq.write_table(pa.Table.from_pylist([row]), root / "meta/episodes/chunk-000/file-000.parquet")
    return root


def convert_with(name, src, out):
    preset = load_preset(name)
    config = preset.adapter_config()
    from latbot import registry

    check_source(preset, registry.build("datasets", config), src)
    convert(config, src, out, image_size=8, progress=False)
    with EpisodeStore.open(out) as store:
        rec = store.records[0]
        got = store.read(0, slice(None))
        return got["actions"], got["states"], *rec.masks(), rec


def test_there_is_a_preset_per_table6_source_with_the_same_stride():
    table6 = yaml.safe_load(open("recipes/mixtures/table6.yaml"))["sources"]
    assert len(preset_names()) == 29 and sorted(s["name"] for s in table6) == sorted(preset_names())
    for s in table6:
        assert load_preset(s["name"]).frame_stride == s["frame_stride"], s["name"]
    assert set(OXE) | set(REFUSING) | {"agibot_alpha", "egodex"} == set(preset_names())


@pytest.mark.parametrize("name", sorted(OXE))
def test_oxe_preset_maps_a_known_motion(tmp_path, name):
    camera, fps, state, action, expect = OXE[name]
    s, a = source_vectors(state, action, np.random.default_rng(0))
    s_names = {"euler": EULER, "quat": QUAT, "axis_angle": EULER, "pos_only": EULER, "joint": JOINT, "none": None}
    names = s_names[state.split("+")[0]] or [f"motor_{i}" for i in range(8)]
    src = write_lerobot(
        tmp_path / "src", camera, fps, {"observation.state": ([8], names), "action": ([7], EEF)},
        {"observation.state": s, "action": a},
    )  # fmt: skip
    actions, states, amask, smask, rec = convert_with(name, src, tmp_path / "store")
    pos, rot, closed = motion()
    last = STEPS - 1 if action in ("absolute", "from_state") else STEPS  # differenced: the last step is no motion
    filled = {k for k in R if (amask if k in ("pos", "rot", "grip") else smask)[R[k]].all()}
    assert filled == expect, name
    assert not amask[:7].any() and not amask[14:].any() and not smask[:8].any()  # the right slot only
    if "pos" in expect:
        want_x = np.r_[np.full(last, DX), np.zeros(STEPS - last)]
        np.testing.assert_allclose(actions[:, 7], want_x, atol=1e-6)  # +1 cm in x is +0.01 m
        np.testing.assert_allclose(actions[:, 8:10], 0, atol=1e-6)
    if "rot" in expect:
        np.testing.assert_allclose(actions[:last, 12], DYAW, atol=1e-5)  # yaw
        np.testing.assert_allclose(actions[:, 10:12], 0, atol=1e-5)
    if "grip" in expect:  # the gripper closes at CLOSE_AT: unified 1 = closed
        np.testing.assert_allclose(actions[:, 13], closed, atol=1e-6)
    if "spos" in expect:
        np.testing.assert_allclose(states[:, 8:11], pos, atol=1e-6)
    if "srot" in expect:
        q = rot.as_quat()
        q[q[:, 3] < 0] *= -1
        np.testing.assert_allclose(states[:, 11:15], q, atol=1e-5)
    if "sgrip" in expect:
        np.testing.assert_allclose(states[:, 15], closed, atol=1e-6)
    assert rec.fps == fps and rec.instruction == "pick up the cup"


@pytest.mark.parametrize("name", sorted(REFUSING))
def test_refusing_presets_say_why_and_write_nothing(tmp_path, name):
    camera, fps = REFUSING[name]
    rng = np.random.default_rng(0)
    src = write_lerobot(
        tmp_path / "src", camera, fps, {"observation.state": ([8], JOINT), "action": ([7], EEF)},
        {"observation.state": rng.normal(size=(STEPS, 8)), "action": rng.normal(size=(STEPS, 7))},
    )  # fmt: skip
    with pytest.raises(PresetError, match="not established"):
        convert_with(name, src, tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_agibot_preset_maps_both_arms_from_absolute_targets(tmp_path):
    pos, rot, _ = motion()
    left = pos - [0.8, 0, 0]
    end_pos = np.stack([left, pos], 1)  # (T, 2, 3)
    end_quat = np.stack([rot.as_quat(), rot.as_quat()], 1)  # (T, 2, 4) x, y, z, w
    cols = {
        "observation.states.end.position": end_pos, "observation.states.end.orientation": end_quat,
        "actions.end.position": np.roll(end_pos, -1, 0), "actions.end.orientation": np.roll(end_quat, -1, 0),
    }  # fmt: skip
    feats = {
        k: ([2, 3], ["left_xyz", "right_xyz"]) if k.endswith("position") else ([2, 4], ["left_xyzw", "right_xyzw"])
        for k in cols
    }
    src = write_lerobot(tmp_path / "src", "head", 30, feats, cols)
    actions, states, amask, _, _ = convert_with("agibot_alpha", src, tmp_path / "store")
    np.testing.assert_allclose(states[:, 0:3], left, atol=1e-6)
    np.testing.assert_allclose(states[:, 8:11], pos, atol=1e-6)
    np.testing.assert_allclose(actions[:-2, [0, 7]], DX, atol=1e-6)  # both arms move +1 cm in x (targets rolled)
    np.testing.assert_allclose(actions[:-2, [5, 12]], DYAW, atol=1e-5)
    assert amask[0:6].all() and amask[7:13].all() and not amask[[6, 13]].any()  # gripper not established


def test_egodex_preset_equals_the_egodex_adapter(tmp_path):
    from latbot import registry

    src = make_egodex(tmp_path / "egodex", steps=6, width=32, height=18)
    a = convert_with("egodex", src, tmp_path / "preset")
    convert(registry.get("datasets", "egodex").Config(), src, tmp_path / "plain", image_size=8, progress=False)
    with EpisodeStore.open(tmp_path / "plain") as store:
        got = store.read(0, slice(None))
    np.testing.assert_array_equal(a[0], got["actions"])
    np.testing.assert_array_equal(a[1], got["states"])


def test_a_different_copy_is_refused_not_misread(tmp_path):
    rng = np.random.default_rng(0)
    src = write_lerobot(
        tmp_path / "src", "image", 10, {"observation.state": ([8], JOINT), "action": ([7], EEF)},
        {"observation.state": rng.normal(size=(STEPS, 8)), "action": rng.normal(size=(STEPS, 7))},
    )  # fmt: skip
    with pytest.raises(PresetError, match=r"fps is 10, the preset expects 3.*names"):
        convert_with("fractal", src, tmp_path / "store")


def test_default_layout_places_a_named_state_and_reports_what_it_could_not(tmp_path):
    from latbot import registry

    s, a = source_vectors("quat+g", "delta", np.random.default_rng(0))
    src = write_lerobot(
        tmp_path / "src", "image", 10, {"observation.state": ([8], QUAT), "action": ([7], None)},
        {"observation.state": s, "action": a},
    )  # fmt: skip
    result = convert(
        registry.get("datasets", "lerobot").Config(), src, tmp_path / "store", image_size=8, progress=False
    )
    with EpisodeStore.open(tmp_path / "store") as store:
        states = store.read(0, slice(None))["states"]
        _, smask = store.records[0].masks()
    np.testing.assert_allclose(states[:, 8:11], motion()[0], atol=1e-6)  # placed from the names x, y, z, rx..rw
    assert smask[8:15].all() and not smask[15]
    assert any("['gripper']" in n and "--preset" in n for n in result.notes)  # the gripper: not placed, and said
    assert any("action assumed" in n for n in result.notes)
    unnamed = write_lerobot(
        tmp_path / "src2", "image", 10, {"observation.state": ([8], None), "action": ([7], None)},
        {"observation.state": s, "action": a},
    )  # fmt: skip
    result = convert(
        registry.get("datasets", "lerobot").Config(), unnamed, tmp_path / "s2", image_size=8, progress=False
    )
    assert any("observation.state (8-D vector without names" in n for n in result.notes)
