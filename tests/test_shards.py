"""Conversion that scales out: `--shard I/N` splits a source by source key; the N shard stores together are
the single-process store, episode for episode; a mixture over the shard set (a glob, or a list file)
samples exactly what it samples from one store with the same content, and resumes exactly."""

from __future__ import annotations

import numpy as np
import pytest

from latbot import registry
from latbot.data.clips import MixtureSampler
from latbot.data.convert import convert, natural_key, parse_shard, shard_of
from latbot.data.mixture import build_mixture, resolve_stores, stores_exist
from latbot.data.store import EpisodeStore, StoreError
from latbot.data.verify import verify_store
from latbot.recipes.schema import DataSource
from latbot.testing.samples import make_libero_hdf5

N = 3


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    src = make_libero_hdf5(root / "src/KITCHEN_SCENE1_put_the_bowl_demo.hdf5", demos=9, steps=8, size=16)
    config = registry.get("datasets", "libero_hdf5").Config()
    convert(config, src, root / "single", image_size=8, progress=False)
    results = [
        convert(config, src, root / f"sharded/shard-{i}", image_size=8, progress=False, shard=(i, N)) for i in range(N)
    ]
    return root, results


def _episodes(path):
    with EpisodeStore.open(path) as store:
        return {r.key: (store.read(r.index, slice(None)), r.instruction, r.masks()[0].tobytes()) for r in store.records}


def test_three_shards_are_the_single_store_episode_for_episode(converted):
    root, results = converted
    single = _episodes(root / "single")
    shards = [_episodes(root / f"sharded/shard-{i}") for i in range(N)]
    assert sum(len(s) for s in shards) == len(single) == 9
    assert [r.other_shards for r in results] == [9 - len(s) for s in shards]
    merged = {k: v for s in shards for k, v in s.items()}
    assert set(merged) == set(single) and not set(shards[0]) & set(shards[1])
    for key, (data, text, mask) in single.items():
        got, got_text, got_mask = merged[key]
        assert (got_text, got_mask) == (text, mask)
        for name in data:
            np.testing.assert_array_equal(got[name], data[name])
    for i in range(N):  # the split is a function of the key alone
        assert all(shard_of(k, N) == i for k in shards[i])
        assert verify_store(root / f"sharded/shard-{i}") == []
    with EpisodeStore.open(root / "single") as store:  # natural key order: demo_2 before demo_10
        keys = [r.key for r in store.records]
        assert keys == sorted(keys, key=natural_key) and keys[2].endswith("demo_2")


@pytest.mark.parametrize("form", ["glob", "list"])
def test_mixture_over_the_shard_set_samples_like_one_store(converted, form):
    root, _ = converted
    if form == "glob":
        store = str(root / "sharded/shard-*")
    else:
        listing = root / "fractal.stores"
        listing.write_text("# one store per line\n" + "".join(f"sharded/shard-{i}\n" for i in range(N)))
        store = str(listing)
    assert len(resolve_stores(store)) == N and stores_exist(store)
    one, one_sampler = build_mixture([DataSource(store=root / "single", frame_stride=2)], num_frames=4, seed=5)
    many, many_sampler = build_mixture([DataSource(store=store, frame_stride=2)], num_frames=4, seed=5)
    assert len(one) == len(many)
    draws = list(zip(range(12), iter(many_sampler), strict=False))
    for (_, i), j in zip(draws, iter(one_sampler), strict=False):
        assert i == j
        a, b = many[i], one[j]
        assert set(a) == set(b)
        for k in a:
            if hasattr(a[k], "shape"):
                np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
    # exact resume: a fresh sampler at the saved position continues the same stream
    state = many_sampler.state_dict()
    resumed = MixtureSampler(many_sampler.sizes, [1.0], seed=5)
    resumed.load_state_dict(state)
    assert [next(iter(resumed)) for _ in range(1)] == [next(iter(many_sampler))]


def test_bad_shard_specs_and_empty_patterns_are_user_errors(tmp_path):
    assert parse_shard("2/8") == (2, 8) and parse_shard(None) is None
    for bad in ("8/8", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(StoreError, match="--shard"):
            parse_shard(bad)
    with pytest.raises(StoreError, match="no episode store matches"):
        resolve_stores(str(tmp_path / "nothing-*"))
    assert not stores_exist(str(tmp_path / "nothing-*"))


def test_verify_and_stats_work_across_the_set(converted):
    from typer.testing import CliRunner

    from latbot.cli import app
    from latbot.data.mixture import merged_stats
    from latbot.data.normalize import compute_stats

    root, _ = converted
    shards = resolve_stores(str(root / "sharded/shard-*"))
    with EpisodeStore.open(root / "single") as single:
        want = compute_stats(single)
    got = merged_stats(shards)
    for name in ("actions", "states"):
        for key in ("mean", "q01", "q99", "min", "max"):
            a = np.array([np.nan if v is None else v for v in want[name][key]])
            b = np.array([np.nan if v is None else v for v in got[name][key]])
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7, equal_nan=True)
    runner = CliRunner()
    result = runner.invoke(app, ["data", "verify", str(root / "sharded/shard-*")])
    assert result.exit_code == 0 and "ok:" in result.output
    out = root / "merged.json"
    result = runner.invoke(app, ["data", "stats", str(root / "sharded/shard-*"), "--out", str(out)])
    assert result.exit_code == 0 and out.is_file(), result.output


def test_the_lam_normalises_a_shard_set_as_the_single_store(converted):
    """The LAM's per-source action statistics (aggregated deltas at the stride) over the set equal the
    single store's; distillation's subtask coverage too."""
    from latbot.data.mixture import source_action_stats
    from latbot.stages.distill import subtask_coverage

    root, _ = converted
    single = DataSource(store=root / "single", frame_stride=2)
    sharded = DataSource(store=root / "sharded" / "shard-*", frame_stride=2)
    a, b = source_action_stats(single), source_action_stats(sharded)
    assert a["intervals"] == b["intervals"] > 0
    for key in ("q01", "q99", "mean"):
        np.testing.assert_allclose(
            [np.nan if v is None else v for v in a[key]], [np.nan if v is None else v for v in b[key]], rtol=1e-9
        )
    assert subtask_coverage(single) == pytest.approx(subtask_coverage(sharded))
