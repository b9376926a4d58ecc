"""Fuzzing episode stores on disk: a deleted or truncated file is always found by `verify`; any damage
(byte flips too) never crashes `verify`, and reads either return the data or raise a `StoreError`."""

from __future__ import annotations

import shutil
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from latbot.data.store import LOCK_NAME, EpisodeStore
from latbot.data.verify import verify_store
from latbot.errors import LatBotError
from tests.fuzz_settings import fast, slow
from tests.test_reliability import _store_with_native


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    from latbot.data.convert import finalize

    path = _store_with_native(tmp_path_factory.mktemp("pristine"))
    with EpisodeStore.open(path, mode="a") as s:
        finalize(s)
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and p.name != LOCK_NAME)
    return path, files


def damaged(pristine, tmp_path_factory):
    path, _ = pristine
    out = tmp_path_factory.mktemp("store") / "s"
    shutil.copytree(path, out)
    return out


def read_everything(path) -> None:
    try:
        with EpisodeStore.open(path) as s:
            for i in range(s.num_episodes):
                s.read(i, slice(None))
            for name in ("native_actions", "native_states"):
                s.read_rows(name, 0, s.num_frames)
    except LatBotError:
        pass


def check(pristine, tmp_path_factory, index: int, action: str, where: float, xor: int) -> None:
    out = damaged(pristine, tmp_path_factory)
    rel = pristine[1][index % len(pristine[1])]
    target = out / rel
    data = target.read_bytes()
    if action == "delete":
        target.unlink()
    elif action == "truncate":
        kept = data[: int(where * len(data))]
        if rel.endswith(".json") and kept.strip() == data.strip():
            return  # only trailing whitespace cut from a JSON file: nothing was damaged
        target.write_bytes(kept)
    else:
        buf = bytearray(data)
        buf[int(where * len(buf)) % max(1, len(buf))] ^= xor
        target.write_bytes(bytes(buf))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        problems = verify_store(out)
        read_everything(out)
    if action in ("delete", "truncate"):
        assert problems, f"{action} {rel} went unnoticed"


damage = (
    st.integers(0, 10_000),
    st.sampled_from(["delete", "truncate", "flip"]),
    st.floats(0, 0.999),
    st.integers(1, 255),
)


@fast(30)
@given(*damage)
def test_random_damage(pristine, tmp_path_factory, index, action, where, xor):
    check(pristine, tmp_path_factory, index, action, where, xor)


def test_every_file_deleted_is_found(pristine, tmp_path_factory):
    for i in range(len(pristine[1])):
        check(pristine, tmp_path_factory, i, "delete", 0.0, 1)


@pytest.mark.slow
@slow(1500)
@given(*damage)
def test_random_damage_many(pristine, tmp_path_factory, index, action, where, xor):
    check(pristine, tmp_path_factory, index, action, where, xor)
