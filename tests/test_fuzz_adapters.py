"""Fuzzing adapter metadata: random mutations of real-schema LeRobot info.json / episodes.jsonl and of
EgoDex HDF5 attributes end in a converted store or one `LatBotError` — never another exception."""

from __future__ import annotations

import json
import shutil

import pytest
from hypothesis import given
from hypothesis import strategies as st

from latbot.data.adapters.egodex import EgoDexAdapter
from latbot.data.adapters.lerobot import LeRobotAdapter
from latbot.data.convert import convert
from latbot.errors import LatBotError
from tests.fuzz_settings import fast, slow

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["../../x", "/etc/passwd", "{nope}", "{episode_index:06d}", "video", "image", "float32"]),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    from latbot.testing.samples import make_egodex, make_lerobot_v21

    root = tmp_path_factory.mktemp("sources")
    return {
        "lerobot": make_lerobot_v21(root / "lerobot", episodes=1, steps=4, size=16, codec="libx264"),
        "egodex": make_egodex(root / "egodex", steps=4, width=16, height=16),
    }


def paths(obj, prefix=()):
    """Every location in a JSON document."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, (*prefix, i))


def mutated(doc, pick: int, value, delete: bool):
    locs = [p for p in paths(doc) if p]
    loc = locs[pick % len(locs)]
    node = doc
    for part in loc[:-1]:
        node = node[part]
    if delete and isinstance(node, dict):
        del node[loc[-1]]
    else:
        node[loc[-1]] = value
    return doc


def run(adapter, src, out):
    try:
        convert(adapter, src, out, image_size=16, progress=False)
    except LatBotError:
        pass


def check_lerobot(sources, tmp_path_factory, which: str, pick: int, value, delete: bool):
    src = tmp_path_factory.mktemp("src") / "s"
    shutil.copytree(sources["lerobot"], src)
    path = src / "meta" / which
    if which == "info.json":
        path.write_text(json.dumps(mutated(json.loads(path.read_text()), pick, value, delete)))
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        path.write_text("\n".join(json.dumps(r) for r in mutated(rows, pick, value, delete)) + "\n")
    run(LeRobotAdapter.Config(), src, src.parent / "out")


def check_egodex(sources, tmp_path_factory, attr: str, value):
    import h5py

    src = tmp_path_factory.mktemp("src") / "s"
    shutil.copytree(sources["egodex"], src)
    with h5py.File(next(src.rglob("*.hdf5")), "a") as f:
        try:
            f.attrs[attr] = value
        except (TypeError, ValueError):
            del f.attrs[attr]  # not storable in HDF5: a missing attribute instead
    run(EgoDexAdapter.Config(), src, src.parent / "out")


mutation = (st.sampled_from(["info.json", "episodes.jsonl"]), st.integers(0, 10_000), values, st.booleans())
ego = (st.sampled_from(["llm_description", "llm_description2", "which_llm_description", "llm_type"]), values)


@fast(20)
@given(*mutation)
def test_lerobot_metadata_mutations(sources, tmp_path_factory, which, pick, value, delete):
    check_lerobot(sources, tmp_path_factory, which, pick, value, delete)


@fast(10)
@given(*ego)
def test_egodex_attribute_mutations(sources, tmp_path_factory, attr, value):
    check_egodex(sources, tmp_path_factory, attr, value)


@pytest.mark.slow
@slow(1000)
@given(*mutation)
def test_lerobot_metadata_mutations_many(sources, tmp_path_factory, which, pick, value, delete):
    check_lerobot(sources, tmp_path_factory, which, pick, value, delete)


@pytest.mark.slow
@slow(300)
@given(*ego)
def test_egodex_attribute_mutations_many(sources, tmp_path_factory, attr, value):
    check_egodex(sources, tmp_path_factory, attr, value)
