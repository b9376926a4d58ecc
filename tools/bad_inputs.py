"""Every class of bad input that LatBot's user-facing entry points are known to receive, run once each,
and what happened: a clear error (one `error:`/`problem:` line, exit 2 — 1 for `verify` findings — or a
`LatBotError`/`ObservationError` from the Python API), a traceback (any other exception, a hang), or
silently accepted (exit 0 / no error / a wrong result). A few cases must *work* (a retry after a failed
conversion): for those the outcome is "ok" or "wrong".

    python tools/bad_inputs.py                    # the table (about a minute on 2 cores)
    python tools/bad_inputs.py --only recipe      # one entry point
    python tools/bad_inputs.py --json out.json    # machine-readable, one row per case

tests/test_reliability.py imports CASES from here and requires every case to end as "clear" / "ok".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny" / "finetune.yaml"
CASE_TIMEOUT_S = 20  # a case still running after this is a hang (the alias bomb ran ~50 s before)


@dataclass
class Case:
    entry: str  # the entry point, e.g. "data convert"
    name: str
    run: Callable[[Path], str]  # → "clear" | "traceback" | "accepted" | "ok" | "wrong"; given a fresh tmp dir
    expect: str = "clear"  # "clear" (must be refused clearly) or "ok" (must work)


CASES: list[Case] = []


def case(entry: str, name: str, expect: str = "clear"):
    def deco(fn):
        CASES.append(Case(entry, name, fn, expect))
        return fn

    return deco


# -- running ---------------------------------------------------------------------------------------------
def cli(*args: str) -> str:
    """Run `latbot ARGS` in-process: exit 1/2 with an error line → clear, 0 → accepted, exception → traceback."""
    from typer.testing import CliRunner

    from latbot.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return "traceback"
    if result.exit_code == 0:
        return "accepted"
    out = result.output + (result.stderr if result.stderr_bytes is not None else "")
    if result.exit_code in (1, 2) and ("error:" in out or "problem:" in out or "Error" in out):
        return "clear"
    return "traceback"


def api(fn: Callable[[], object], errors: tuple[type[BaseException], ...] = ()) -> str:
    """Run a Python call: a LatBotError (or one of `errors`) → clear, no exception → accepted, else traceback."""
    from latbot.errors import LatBotError

    try:
        fn()
    except (LatBotError, *errors):
        return "clear"
    except Exception:
        return "traceback"
    return "accepted"


class _Timeout(BaseException):
    pass


def run_case(c: Case) -> tuple[str, float]:
    def on_alarm(*_):
        raise _Timeout

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(CASE_TIMEOUT_S)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="latbot-bad-"))
    try:
        outcome = c.run(tmp)
    except _Timeout:
        outcome = "traceback"  # a hang is as bad as a crash
    except Exception:
        outcome = "traceback"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        shutil.rmtree(tmp, ignore_errors=True)
    return outcome, time.perf_counter() - t0


# -- sources -------------------------------------------------------------------------------------------
def lerobot(tmp: Path, version: str = "v2.1", **info_changes) -> Path:
    from latbot.testing.samples import make_lerobot_v21, make_lerobot_v30

    make = make_lerobot_v21 if version == "v2.1" else make_lerobot_v30
    src = make(tmp / "src", episodes=2, steps=6, size=16, codec="libx264")
    path = src / "meta/info.json"
    info = json.loads(path.read_text())
    for key, value in info_changes.items():
        info[key] = value
    path.write_text(json.dumps(info))
    return src


def convert_cli(src: Path, out: Path, *extra: str, fmt: str = "lerobot") -> str:
    return cli("data", "convert", src, "--format", fmt, "--out", out, "--image-size", "16", *extra)


def mutate_feature(src: Path, key: str, value) -> None:
    path = src / "meta/info.json"
    info = json.loads(path.read_text())
    info["features"][key] = value
    path.write_text(json.dumps(info))


@case("data convert", "info.json features is a list")
def _(tmp):
    src = lerobot(tmp)
    info = json.loads((src / "meta/info.json").read_text())
    return convert_cli(lerobot(tmp, features=list(info["features"].values())), tmp / "out")


@case("data convert", "info.json fps is a string")
def _(tmp):
    return convert_cli(lerobot(tmp, fps="ten"), tmp / "out")


@case("data convert", "info.json fps is 0 / negative")
def _(tmp):
    return convert_cli(lerobot(tmp, fps=-3), tmp / "out")


@case("data convert", "data_path template names an unknown key")
def _(tmp):
    return convert_cli(lerobot(tmp, data_path="data/{nope}/episode_{episode_index:06d}.parquet"), tmp / "out")


@case("data convert", "data_path points outside the source (../../)")
def _(tmp):
    outside = tmp / "outside.parquet"
    src = lerobot(tmp, data_path="../../outside.parquet")
    shutil.copy(src / "data/chunk-000/episode_000000.parquet", outside)
    return convert_cli(src, tmp / "out", "--limit", "1")


@case("data convert", "video_path is absolute")
def _(tmp):
    return convert_cli(lerobot(tmp, video_path="/etc/{video_key}.mp4"), tmp / "out")


@case("data convert", "chunks_size is 0")
def _(tmp):
    return convert_cli(lerobot(tmp, chunks_size=0), tmp / "out")


@case("data convert", "v3.0 episodes parquet is garbage")
def _(tmp):
    src = lerobot(tmp, version="v3.0")
    (src / "meta/episodes/chunk-000/file-000.parquet").write_bytes(b"PAR1 this is not parquet")
    return convert_cli(src, tmp / "out")


@case("data convert", "v3.0 tasks parquet is garbage")
def _(tmp):
    src = lerobot(tmp, version="v3.0")
    (src / "meta/tasks.parquet").write_bytes(b"garbage")
    return convert_cli(src, tmp / "out")


@case("data convert", "v2.1 data parquet is garbage")
def _(tmp):
    src = lerobot(tmp)
    (src / "data/chunk-000/episode_000000.parquet").write_bytes(b"garbage")
    return convert_cli(src, tmp / "out")


@case("data convert", "v2.1 episodes.jsonl episode_index is a string")
def _(tmp):
    src = lerobot(tmp)
    (src / "meta/episodes.jsonl").write_text(json.dumps({"episode_index": "zero", "tasks": ["x"], "length": 6}) + "\n")
    return convert_cli(src, tmp / "out")


@case("data convert", "v2.1 episodes.jsonl length is a list")
def _(tmp):
    src = lerobot(tmp)
    (src / "meta/episodes.jsonl").write_text(json.dumps({"episode_index": 0, "tasks": ["x"], "length": [6]}) + "\n")
    return convert_cli(src, tmp / "out")


@case("data convert", "v2.1 episodes.jsonl record is not an object")
def _(tmp):
    src = lerobot(tmp)
    (src / "meta/episodes.jsonl").write_text("[1, 2]\n")
    return convert_cli(src, tmp / "out")


@case("data convert", "feature dtype nobody knows (quaternion128)")
def _(tmp):
    src = lerobot(tmp)
    mutate_feature(src, "observation.state", {"dtype": "quaternion128", "shape": [8], "names": None})
    return convert_cli(src, tmp / "out")


@case("data convert", "image feature with an unknown dtype (named?)")
def _(tmp):
    src = lerobot(tmp)
    info = json.loads((src / "meta/info.json").read_text())
    feat = info["features"]["observation.images.top"]
    mutate_feature(src, "observation.images.top", {**feat, "dtype": "videoo"})
    return convert_cli(src, tmp / "out")


@case("data convert", "feature entry is not an object")
def _(tmp):
    src = lerobot(tmp)
    mutate_feature(src, "action", "float32")
    return convert_cli(src, tmp / "out")


@case("data convert", "--image-size 0")
def _(tmp):
    return cli("data", "convert", lerobot(tmp), "-f", "lerobot", "-o", tmp / "out", "--image-size", "0")


@case("data convert", "--image-size -5")
def _(tmp):
    return cli("data", "convert", lerobot(tmp), "-f", "lerobot", "-o", tmp / "out", "--image-size", "-5")


@case("data convert", "--image-size 1000000")
def _(tmp):
    return cli("data", "convert", lerobot(tmp), "-f", "lerobot", "-o", tmp / "out", "--image-size", "1000000")


@case("data convert", "--limit -1")
def _(tmp):
    return convert_cli(lerobot(tmp), tmp / "out", "--limit", "-1")


@case("data convert", "--out is an existing file")
def _(tmp):
    (tmp / "out").write_text("hello")
    return convert_cli(lerobot(tmp), tmp / "out")


@case("data convert", "--out is unwritable")
def _(tmp):
    return convert_cli(lerobot(tmp), Path("/proc/latbot-store"))


@case("data convert", "--skip-bad with every episode bad")
def _(tmp):
    src = lerobot(tmp)
    for p in (src / "data/chunk-000").glob("*.parquet"):
        p.write_bytes(b"garbage")
    return convert_cli(src, tmp / "out", "--skip-bad")


@case("data convert", "failed first conversion leaves nothing behind")
def _(tmp):
    src = lerobot(tmp)
    (src / "data/chunk-000/episode_000000.parquet").write_bytes(b"garbage")
    outcome = convert_cli(src, tmp / "out")
    if outcome != "clear":
        return outcome
    return "clear" if not (tmp / "out").exists() else "accepted"


@case("data convert", "retry after a failed first conversion", expect="ok")
def _(tmp):
    src = lerobot(tmp)
    good = (src / "data/chunk-000/episode_000000.parquet").read_bytes()
    (src / "data/chunk-000/episode_000000.parquet").write_bytes(b"garbage")
    convert_cli(src, tmp / "out")
    (src / "data/chunk-000/episode_000000.parquet").write_bytes(good)
    return "ok" if convert_cli(src, tmp / "out") == "accepted" else "wrong"


@case("data convert", "retry after a failure inside store creation", expect="ok")
def _(tmp):
    from latbot.data.store import EpisodeStore

    out = tmp / "out"
    with contextlib.suppress(Exception):  # a store half-created by an older LatBot: group written, no log
        EpisodeStore.create(out, cameras=["top"], image_size=(16, 16))
    (out / "episodes.jsonl").unlink(missing_ok=True)
    for p in out.iterdir():
        if p.is_dir():
            shutil.rmtree(p)
    return "ok" if convert_cli(lerobot(tmp), out) == "accepted" else "wrong"


@case("data convert", "LIBERO actions dataset of strings")
def _(tmp):
    import h5py

    from latbot.testing.samples import make_libero_hdf5

    path = make_libero_hdf5(tmp / "src/task_demo.hdf5", demos=1, steps=6, size=16)
    with h5py.File(path, "a") as f:
        del f["data/demo_0/actions"]
        f["data/demo_0"].create_dataset("actions", data=np.array([b"x" * 7] * 6))
    return convert_cli(path, tmp / "out", fmt="libero_hdf5")


@case("data convert", "LIBERO demo is a dataset, not a group")
def _(tmp):
    import h5py

    from latbot.testing.samples import make_libero_hdf5

    path = make_libero_hdf5(tmp / "src/task_demo.hdf5", demos=1, steps=6, size=16)
    with h5py.File(path, "a") as f:
        del f["data/demo_0"]
        f["data"].create_dataset("demo_0", data=np.zeros(3))
    return convert_cli(path, tmp / "out", fmt="libero_hdf5")


@case("data convert", "EgoDex pose dataset of strings")
def _(tmp):
    import h5py

    from latbot.testing.samples import make_egodex

    src = make_egodex(tmp / "src", steps=6)
    with h5py.File(next(src.rglob("*.hdf5")), "a") as f:
        del f["transforms/camera"]
        f.create_dataset("transforms/camera", data=np.array([b"abc"] * 6))
    return convert_cli(src, tmp / "out", fmt="egodex")


@case("data convert", "EgoDex llm_description is a number")
def _(tmp):
    import h5py

    from latbot.testing.samples import make_egodex

    src = make_egodex(tmp / "src", steps=6, reversible=False)
    with h5py.File(next(src.rglob("*.hdf5")), "a") as f:
        f.attrs["llm_description"] = 3.5
    return convert_cli(src, tmp / "out", fmt="egodex")


# -- stores ----------------------------------------------------------------------------------------------
def small_store(tmp: Path) -> Path:
    from latbot.data.convert import finalize
    from latbot.data.spaces import UnifiedTrajectory, fill_arm
    from latbot.data.store import Episode, EpisodeStore
    from latbot.testing.samples import synthetic_frames

    path = tmp / "store"
    with EpisodeStore.create(path, cameras=["cam"], image_size=(16, 16), chunk_frames=4, shard_frames=8) as s:
        for i in range(3):
            rng = np.random.default_rng(i)
            traj = UnifiedTrajectory.empty(10)
            fill_arm(traj, "right", position=rng.normal(size=(10, 3)), gripper=rng.uniform(size=10))
            s.append(Episode(f"ep{i}", {"cam": synthetic_frames(10, 16, 16, i)}, traj, f"task {i}"))
        finalize(s)
    return path


def block_file(store: Path, name: str, index: int = 0) -> Path:
    """The file of block `index` of array `name` (a shard of frames, a chunk of actions/states)."""
    root = store / name / "c"
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return next(p for p in files if p.relative_to(root).parts[0] == str(index))


def read_all(store: Path, name: str) -> None:
    from latbot.data.store import EpisodeStore

    with EpisodeStore.open(store) as s:
        for i in range(s.num_episodes):
            out = s.read(i, slice(None))
            if name.startswith("frames") and not out[name].any():
                raise AssertionError("black frames")  # never reached when a read is refused


@case("data verify", "deleted frame shard")
def _(tmp):
    store = small_store(tmp)
    block_file(store, "frames/cam", 1).unlink()
    return cli("data", "verify", store)


@case("data verify", "deleted actions chunk")
def _(tmp):
    store = small_store(tmp)
    block_file(store, "actions").unlink()
    return cli("data", "verify", store)


@case("data verify", "deleted states chunk")
def _(tmp):
    store = small_store(tmp)
    block_file(store, "states").unlink()
    return cli("data", "verify", store)


@case("data verify", "record claims more steps than the arrays hold")
def _(tmp):
    store = small_store(tmp)
    log = store / "episodes.jsonl"
    lines = log.read_text().splitlines()
    rec = json.loads(lines[-1])
    rec["length"] += 50
    log.write_text("\n".join([*lines[:-1], json.dumps(rec)]) + "\n")
    return cli("data", "verify", store)


@case("data verify", "zarr.json is garbage")
def _(tmp):
    store = small_store(tmp)
    (store / "zarr.json").write_bytes(b"\x00garbage")
    return cli("data", "verify", store)


@case("data verify", "array metadata deleted")
def _(tmp):
    store = small_store(tmp)
    (store / "actions/zarr.json").unlink()
    return cli("data", "verify", store)


@case("store read", "deleted frame shard")
def _(tmp):
    store = small_store(tmp)
    block_file(store, "frames/cam", 1).unlink()
    return api(lambda: read_all(store, "frames/cam"))


@case("store read", "deleted actions chunk")
def _(tmp):
    store = small_store(tmp)
    block_file(store, "actions").unlink()
    return api(lambda: read_all(store, "actions"))


@case("store read", "deleted states chunk")
def _(tmp):
    store = small_store(tmp)
    block_file(store, "states").unlink()
    return api(lambda: read_all(store, "states"))


@case("store read", "record claims more steps than the arrays hold")
def _(tmp):
    from latbot.data.store import EpisodeStore

    store = small_store(tmp)
    log = store / "episodes.jsonl"
    lines = log.read_text().splitlines()
    rec = json.loads(lines[-1])
    rec["length"] += 50
    log.write_text("\n".join([*lines[:-1], json.dumps(rec)]) + "\n")

    def read():
        with EpisodeStore.open(store) as s:
            got = s.read(2, slice(None))
            if len(got["actions"]) != s.records[2].length:
                raise AssertionError("short read")

    return api(read, errors=())


@case("store read", "truncated frame shard")
def _(tmp):
    store = small_store(tmp)
    path = block_file(store, "frames/cam", 0)
    path.write_bytes(path.read_bytes()[:100])
    return api(lambda: read_all(store, "frames/cam"))


@case("data stats", "checksum-corrupt store")
def _(tmp):
    store = small_store(tmp)
    path = block_file(store, "actions")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return cli("data", "stats", store)


@case("data stats", "missing actions chunk")
def _(tmp):
    store = small_store(tmp)
    block_file(store, "actions").unlink()
    return cli("data", "stats", store)


@case("data info", "not a store")
def _(tmp):
    return cli("data", "info", tmp)


# -- recipes ---------------------------------------------------------------------------------------------
def recipe_file(tmp: Path, text: str | bytes, name: str = "r.yaml") -> Path:
    path = tmp / name
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def tiny(tmp: Path, train: str) -> Path:
    shutil.copytree(REPO / "recipes", tmp / "recipes")
    return recipe_file(tmp / "recipes/tiny", f"base: finetune.yaml\ntrain:\n{train}\n")


@case("recipe validate", "file is not UTF-8")
def _(tmp):
    return cli("recipe", "validate", recipe_file(tmp, b"stage: lam\nname: \xff\xfe\n"))


@case("recipe validate", "NUL character")
def _(tmp):
    return cli("recipe", "validate", recipe_file(tmp, "stage: lam\x00\n"))


@case("recipe validate", "YAML nested 5,000 deep")
def _(tmp):
    return cli("recipe", "validate", recipe_file(tmp, "stage: lam\nx: " + "[" * 5000 + "]" * 5000 + "\n"))


@case("recipe validate", "base: chain 1,000 long")
def _(tmp):
    for i in range(1000):
        recipe_file(tmp, f"base: r{i + 1}.yaml\n" if i < 999 else "stage: lam\n", f"r{i}.yaml")
    return cli("recipe", "validate", tmp / "r0.yaml")


@case("recipe validate", "1 KB YAML alias bomb")
def _(tmp):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return cli("recipe", "validate", recipe_file(tmp, "stage: lam\n" + "\n".join(lines) + "\n"))


@case("recipe validate", "recipe file over the size limit (20 MB)")
def _(tmp):
    return cli("recipe", "validate", recipe_file(tmp, "stage: lam\n" + "# padding\n" * 2_000_000))


@case("recipe validate", "duplicated key")
def _(tmp):
    return cli("recipe", "validate", tiny(tmp, "  steps: 10\n  steps: 20"))


@case("recipe validate", "steps: 1.0e+15")
def _(tmp):
    return cli("recipe", "validate", tiny(tmp, "  steps: 1.0e+15"))


@case("recipe validate", "--set train.steps=1e38")
def _(tmp):
    return cli("recipe", "validate", TINY, "--set", "train.steps=1e38")


@case("recipe validate", "lr: 1.0e+308")
def _(tmp):
    return cli("recipe", "validate", tiny(tmp, "  lr: 1.0e+308"))


@case("recipe validate", "global_batch_size: 1.0e+18")
def _(tmp):
    return cli("recipe", "validate", tiny(tmp, "  global_batch_size: 1.0e+18\n  micro_batch_size: 1"))


@case("recipe validate", "data.image_size: 1.0e+11")
def _(tmp):
    shutil.copytree(REPO / "recipes", tmp / "recipes")
    text = "base: finetune.yaml\ndata: {image_size: 1.0e+11}\n"
    return cli("recipe", "validate", recipe_file(tmp / "recipes/tiny", text))


@case("recipe validate", "train.warmup_steps: -1")
def _(tmp):
    return cli("recipe", "validate", tiny(tmp, "  warmup_steps: -1"))


@case("recipe validate", "steps: yes (a boolean)")
def _(tmp):
    return cli("recipe", "validate", tiny(tmp, "  steps: yes"))


@case("recipe validate", "--set train.lr=true")
def _(tmp):
    return cli("recipe", "validate", TINY, "--set", "train.lr=true")


# -- the policy server ------------------------------------------------------------------------------------
def stub_policy():
    """A real `LatBotPolicy` (its real input checks) whose model is replaced by zeros: no weights needed."""
    from latbot.policy import LatBotPolicy

    policy = LatBotPolicy.__new__(LatBotPolicy)
    policy.cameras, policy.image_size, policy.embodiment = ["corner"], (64, 64), "stub"
    policy.target = {"cameras": ["corner"], "image_size": [64, 64], "tasks": [], "native_state_dim": 4}
    policy.horizon, policy.run_dir = 4, None
    emb = SimpleNamespace(
        native_state_dim=4,
        native_action_dim=4,
        state_to_unified=lambda s: np.zeros(46, np.float32),
        actions_to_native=lambda a: np.zeros((len(a), 4), np.float32),
    )
    policy._embodiment = lambda required=True: emb
    policy.predict_unified = lambda frames, state, instruction, seed=0: np.zeros((4, 44), np.float32)
    return policy


def good_observation() -> dict:
    return {
        "images": {"corner": np.zeros((64, 64, 3), np.uint8)},
        "state": np.zeros(4, np.float32),
        "instruction": "reach the goal",
    }


def serve_one(**changes) -> str:
    """One observation through the server's request path (`PolicyServer.answer`)."""
    from latbot.serve.server import PolicyServer
    from latbot.serve.wire import pack

    obs = {**good_observation(), **changes}
    obs = {k: v for k, v in obs.items() if v is not None}
    server = PolicyServer.__new__(PolicyServer)
    server.__dict__.update(_server_state())
    reply = server.answer(pack(obs))
    if isinstance(reply, str):
        return "clear" if reply.startswith(("400 ", "413 ", "503 ")) else "traceback"
    return "accepted"


def _server_state() -> dict:
    import inspect
    import threading

    from latbot.serve import server as mod

    state = {"policy": stub_policy(), "lock": threading.Lock(), "requests": 0, "errors": 0}
    if "resize" in inspect.signature(mod.PolicyServer.__init__).parameters:
        state["resize"] = False
    if hasattr(mod, "ServerLimits"):
        state["limits"] = mod.ServerLimits()
        state["_inflight"] = mod._ByteBudget(state["limits"].max_inflight_bytes)
    return state


for _name, _changes in {
    "image of the wrong shape (stretched?)": {"images": {"corner": np.zeros((48, 80, 3), np.uint8)}},
    "state as a list": {"state": [0.0, 0.0, 0.0, 0.0]},
    "state int64": {"state": np.zeros(4, np.int64)},
    "state bool": {"state": np.zeros(4, bool)},
    "state float16": {"state": np.zeros(4, np.float16)},
    "state big-endian": {"state": np.zeros(4, ">f4")},
    "state of 1e30": {"state": np.full(4, 1e30, np.float32)},
    "an extra camera": {"images": {"corner": np.zeros((64, 64, 3), np.uint8), "side": np.zeros((64, 64, 3), np.uint8)}},
    "10 MB instruction": {"instruction": "x" * (10 << 20)},
    "unknown key": {"extra_key": 1},
    "image big-endian uint16": {"images": {"corner": np.zeros((64, 64, 3), ">u2")}},
    "no state": {"state": None},
}.items():
    case("serve (request)", _name)(lambda tmp, c=_changes: serve_one(**c))


@case("serve (request)", "random msgpack: a nested list 100k deep")
def _(tmp):
    from latbot.serve.server import PolicyServer

    server = PolicyServer.__new__(PolicyServer)
    server.__dict__.update(_server_state())
    reply = server.answer(b"\x91" * 100_000 + b"\xc0")
    return "clear" if isinstance(reply, str) and reply.startswith("400") else "traceback"


def _live_server():
    import inspect

    from latbot.serve.server import PolicyServer

    kwargs = {"port": 0}
    params = inspect.signature(PolicyServer.__init__).parameters
    if "max_connections" in params:
        kwargs["max_connections"] = 4
    return PolicyServer(stub_policy(), **kwargs)


@case("serve (limits)", "a 60 MB message")
def _(tmp):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with _live_server() as server, connect(f"ws://127.0.0.1:{server.port}", max_size=None) as ws:
        ws.recv(timeout=10)
        try:
            ws.send(b"\x00" * (60 << 20))
            reply = ws.recv(timeout=30)
        except ConnectionClosed as e:
            return "clear" if e.rcvd is not None and e.rcvd.code == 1009 else "traceback"
        return "accepted" if reply else "traceback"  # any answer means the 60 MB were buffered


@case("serve (limits)", "more connections than the cap")
def _(tmp):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    conns = []
    with _live_server() as server:
        try:
            for _ in range(20):
                conns.append(connect(f"ws://127.0.0.1:{server.port}", open_timeout=10).__enter__())
        except InvalidStatus as e:
            return "clear" if e.response.status_code == 503 else "traceback"
        finally:
            for c in conns:
                c.close()
    return "accepted"


# -- the table --------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="run only entry points containing this text")
    ap.add_argument("--json", type=Path, help="write one row per case here")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each case as it runs")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import logging

    logging.disable(logging.CRITICAL)  # the table, not the server's log lines
    rows = []
    for c in CASES:
        if args.only and args.only not in c.entry:
            continue
        outcome, secs = run_case(c)
        rows.append({"entry": c.entry, "case": c.name, "expect": c.expect, "outcome": outcome, "seconds": secs})
        if args.verbose:
            print(f"{outcome:>9}  {secs:5.1f}s  {c.entry}: {c.name}", file=sys.stderr, flush=True)
    cols = ["clear", "traceback", "accepted", "ok", "wrong"]
    print(f"{'entry point':<18} {'cases':>5} " + " ".join(f"{c:>9}" for c in cols))
    for entry in dict.fromkeys(r["entry"] for r in rows):
        mine = [r for r in rows if r["entry"] == entry]
        print(f"{entry:<18} {len(mine):>5} " + " ".join(f"{sum(r['outcome'] == c for r in mine):>9}" for c in cols))
    print(f"{'TOTAL':<18} {len(rows):>5} " + " ".join(f"{sum(r['outcome'] == c for r in rows):>9}" for c in cols))
    bad = [r for r in rows if r["outcome"] not in ("clear", "ok")]
    for r in bad:
        print(f"  {r['outcome']:>9}: {r['entry']}: {r['case']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
