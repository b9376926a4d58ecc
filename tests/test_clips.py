"""Clips, chunk samples, quantile normalisation and the resumable weighted mixture."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from torch.utils.data import DataLoader

from latbot.data.clips import ChunkDataset, ClipDataset, MixtureSampler, aggregate_actions, reverse_steps
from latbot.data.convert import finalize
from latbot.data.mixture import build_mixture, select_episodes
from latbot.data.normalize import QuantileNormalizer
from latbot.data.store import EpisodeStore
from latbot.recipes.mixture import load_mixture
from latbot.recipes.schema import DataSource
from tests.conftest import REPO
from tests.test_store import episode


def make_store(path, episodes=4, steps=20, seed0=0):
    with EpisodeStore.create(path, cameras=["cam"], image_size=(16, 16)) as s:
        for i in range(episodes):
            s.append(episode(f"ep{i}", steps=steps, seed=seed0 + i))
        finalize(s)
    return path


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "a")


def test_clip_frames_and_states_come_from_the_right_steps(store):
    ds = ClipDataset(store, num_frames=4, frame_stride=3)
    assert len(ds) == 4 * (20 - 9)
    sample = ds[ds.starts.index((2, 5))]
    ref = episode("ep2", steps=20, seed=2)
    steps = [5, 8, 11, 14]
    assert sample["frames"].shape == (4, 3, 16, 16) and sample["frames"].dtype == torch.uint8
    np.testing.assert_array_equal(sample["frames"].numpy().transpose(0, 2, 3, 1), ref.frames["cam"][steps])
    np.testing.assert_allclose(sample["states"].numpy(), ref.trajectory.states[steps], atol=1e-6)
    # position deltas summed over each 3-step interval = the state difference between clip frames
    np.testing.assert_allclose(
        sample["actions"][:, 7:10].numpy(), np.diff(ref.trajectory.states[steps, 8:11], axis=0), atol=1e-5
    )
    assert sample["instruction"] == "task 2" and sample["subtask"] == "reach"  # step 5 < 10: inside "reach"
    assert sample["action_mask"][7:10].all() and not sample["action_mask"][:7].any()


def test_rotation_deltas_compose_over_a_stride():
    rots = Rotation.random(7, random_state=3)
    steps = np.zeros((6, 44))
    steps[:, 10:13] = (rots[1:] * rots[:-1].inv()).as_euler("xyz")  # world-frame per-step deltas
    steps[:, 13] = np.arange(6) / 10
    out = aggregate_actions(steps, 3)
    expected = [(rots[3] * rots[0].inv()).as_euler("xyz"), (rots[6] * rots[3].inv()).as_euler("xyz")]
    np.testing.assert_allclose(out[:, 10:13], expected, atol=1e-9)
    np.testing.assert_allclose(out[:, 13], [0.2, 0.5])


def test_a_reversed_clip_plays_the_same_steps_backwards(store):
    """`reverse`: frames and states in reverse order, each interval's position delta the state difference of
    the reversed frames, the gripper the value that held at each reversed interval's end; which clips are
    reversed is fixed by (seed, index), about the given fraction."""
    ahead, back = ClipDataset(store, 4, 3), ClipDataset(store, 4, 3, reverse=1.0)
    i = ahead.starts.index((2, 5))
    a, b = ahead[i], back[i]
    ref = episode("ep2", steps=20, seed=2)
    steps = [14, 11, 8, 5]
    np.testing.assert_array_equal(b["frames"].numpy(), a["frames"].numpy()[::-1])
    np.testing.assert_allclose(b["states"].numpy(), ref.trajectory.states[steps], atol=1e-6)
    np.testing.assert_allclose(
        b["actions"][:, 7:10].numpy(), np.diff(ref.trajectory.states[steps, 8:11], axis=0), atol=1e-5
    )
    # the gripper at the end of a reversed interval (state 11, 8, 5) is the one set by the step before it
    np.testing.assert_allclose(b["actions"][:, 13].numpy(), ref.trajectory.actions[[10, 7, 4], 13], atol=1e-6)
    assert b["instruction"] == a["instruction"] and b["step"] == a["step"]

    half = ClipDataset(store, 4, 3, reverse=0.5, reverse_seed=7)
    flipped = [not torch.equal(half[j]["frames"], ahead[j]["frames"]) for j in range(len(half))]
    assert 0.3 < np.mean(flipped) < 0.7
    assert flipped == [not torch.equal(half[j]["frames"], ahead[j]["frames"]) for j in range(len(half))]
    other = ClipDataset(store, 4, 3, reverse=0.5, reverse_seed=8)
    assert flipped != [not torch.equal(other[j]["frames"], ahead[j]["frames"]) for j in range(len(other))]
    with pytest.raises(ValueError, match="reverse"):
        ClipDataset(store, 4, 3, reverse=1.5)
    mixed, _ = build_mixture([DataSource(store=store, frame_stride=3)], 4, reverse=1.0)  # what the LAM stage builds
    assert torch.equal(mixed[i]["frames"], b["frames"])


def test_reversed_rotation_deltas_undo_the_forward_ones():
    rots = Rotation.random(7, random_state=4)
    actions = np.zeros((6, 44))
    actions[:, 10:13] = (rots[1:] * rots[:-1].inv()).as_euler("xyz")
    actions[:, 7:10] = np.arange(18).reshape(6, 3)
    out = aggregate_actions(reverse_steps(actions, 0, 6), 3)
    expected = [(rots[3] * rots[6].inv()).as_euler("xyz"), (rots[0] * rots[3].inv()).as_euler("xyz")]
    np.testing.assert_allclose(out[:, 10:13], expected, atol=1e-9)
    np.testing.assert_allclose(out[:, 7:10], -aggregate_actions(actions, 3)[::-1, 7:10])


def test_chunk_samples_pad_past_the_episode_end(store):
    ds = ChunkDataset(store, horizon=5, normalize=False)
    ref = episode("ep1", steps=20, seed=1)
    sample = ds[ds.steps.index((1, 17))]
    np.testing.assert_allclose(sample["actions"].numpy(), ref.trajectory.actions[[17, 18, 19, 19, 19]], atol=1e-6)
    assert sample["action_pad"].tolist() == [False, False, False, True, True]
    assert sample["frames"].shape == (1, 3, 16, 16) and sample["state"].shape == (46,)


def test_quantile_normalisation_is_exactly_invertible_and_guards_constant_dims():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 4)) * [1, 10, 0.1, 1]
    x[:, 3] = 0.5  # a constant dimension (an unused gripper, say)
    q01, q99 = np.quantile(x, 0.01, axis=0), np.quantile(x, 0.99, axis=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        norm = QuantileNormalizer(list(q01), list(q99), name="actions")
    assert any("dimension(s) [3]" in str(w.message) for w in caught)
    y = norm.normalize(x)
    assert np.allclose(np.quantile(y[:, :3], [0.01, 0.99], axis=0), [[-1] * 3, [1] * 3], atol=1e-9)
    np.testing.assert_array_equal(y[:, 3], x[:, 3])  # passed through, not exploded
    np.testing.assert_allclose(norm.unnormalize(y), x, rtol=0, atol=1e-12)
    missing = QuantileNormalizer([None, 0.0], [None, 2.0])
    np.testing.assert_allclose(missing.normalize(np.array([[7.0, 1.0]])), [[7.0, 0.0]])


def test_normalized_chunks_use_the_store_statistics(store):
    raw, norm = ChunkDataset(store, horizon=3, normalize=False), ChunkDataset(store, horizon=3, normalize=True)
    with EpisodeStore.open(store) as s:
        q = QuantileNormalizer.from_stats(s.stats, "actions")
    np.testing.assert_allclose(norm[7]["actions"].numpy(), q.normalize(raw[7]["actions"].numpy()), atol=1e-6)


def test_mixture_sampler_is_weighted_deterministic_resumable_and_sharded():
    sampler = MixtureSampler([100, 50], [3.0, 1.0], seed=5, num_samples=4000)
    draws = np.array(list(sampler))
    assert abs((draws < 100).mean() - 0.75) < 0.03
    resumed = MixtureSampler([100, 50], [3.0, 1.0], seed=5, num_samples=4000)
    first = [i for _, i in zip(range(1234), resumed, strict=False)]
    state = resumed.state_dict()
    again = MixtureSampler([100, 50], [3.0, 1.0], seed=5, num_samples=4000)
    again.load_state_dict(state)
    assert first + list(again) == draws.tolist()  # same seed + position → the same stream after a restart
    ranks = [
        list(MixtureSampler([100, 50], [3.0, 1.0], seed=5, rank=r, world_size=2, num_samples=2000)) for r in range(2)
    ]
    np.testing.assert_array_equal(np.stack(ranks, 1).ravel(), draws)  # interleaved shards of one stream
    with pytest.raises(ValueError, match="seed"):
        MixtureSampler([1], [1.0], seed=6).load_state_dict(state)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_are_safe_with_fork_and_spawn(tmp_path, context):
    a, b = make_store(tmp_path / "a"), make_store(tmp_path / "b", episodes=2, steps=30, seed0=10)
    sources = [DataSource(store=a, weight=1.0), DataSource(store=b, weight=2.0, frame_stride=2)]
    dataset, sampler = build_mixture(sources, num_frames=4, seed=1)
    sampler.num_samples = 24
    reference = [
        s["frames"] for s in (dataset[i] for i in MixtureSampler(sampler.sizes, [1.0, 2.0], seed=1, num_samples=24))
    ]
    loader = DataLoader(dataset, batch_size=6, sampler=sampler, num_workers=2, multiprocessing_context=context)
    batches = list(loader)
    assert len(batches) == 4 and batches[0]["frames"].shape == (6, 4, 3, 16, 16)
    torch.testing.assert_close(torch.cat([b["frames"] for b in batches]), torch.stack(reference))


def test_table6_mixture_file_validates_and_few_shot_selection(store):
    mix = load_mixture(REPO / "recipes/mixtures/table6.yaml")
    assert len(mix.sources) == 29 and {s.name for s in mix.sources} >= {"fractal", "bridge", "egodex", "droid"}
    assert mix.sources[-1].frame_stride == 3 and mix.sources[0].store.name == "fractal"
    with EpisodeStore.open(store) as s:
        assert select_episodes(s.records, ["t0"], 1) == [0]
        assert select_episodes(s.records, None, 1) == [0, 1]
        assert select_episodes(s.records, None, None) == [0, 1, 2, 3]
        assert select_episodes(s.records, None, None, exclude_tasks=["t1"]) == [0, 2]  # pretraining minus held-out
        assert select_episodes(s.records, ["t1"], 10) == [1, 3]  # fewer demos than k: all of them
