"""The fast store reader (latbot/data/fastread.py) against zarr-python, both ways, and the flow expert's
cached denoising against its plain `forward` loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latbot.data.spaces import UnifiedTrajectory
from latbot.data.store import Episode, EpisodeStore, StoreError


def _store(path, codec: str, chunk_frames: int):
    rng = np.random.default_rng(0)
    frames = []
    with EpisodeStore.create(
        path, cameras=["cam"], image_size=(8, 8), codec=codec, chunk_frames=chunk_frames, shard_frames=16
    ) as s:
        for i, n in enumerate((7, 13, 20)):
            f = rng.integers(0, 255, (n, 8, 8, 3), np.uint8)
            traj = UnifiedTrajectory.empty(n)
            traj.actions[:] = rng.normal(size=traj.actions.shape)
            s.append(Episode(f"e{i}", {"cam": f}, traj, "x", native_actions=rng.normal(size=(n, 5))))
            frames.append(f)
    return frames


@pytest.mark.parametrize("codec", ["lz4", "zstd", "none"])
@pytest.mark.parametrize("chunk_frames", [1, 8])
def test_fast_reads_equal_zarr_python_reads(tmp_path, codec, chunk_frames):
    import zarr

    frames = _store(tmp_path / "s", codec, chunk_frames)
    with EpisodeStore.open(tmp_path / "s") as s:
        group = zarr.open_group(str(tmp_path / "s"), mode="r")  # zarr-python reads the store as written
        for name in ("frames/cam", "actions", "states", "native_actions"):
            assert s._reader(name) is not None, f"{name}: the store's own layout must take the fast path"
            np.testing.assert_array_equal(s.read_rows(name, 0, s.num_frames), group[name][: s.num_frames])
        for e, f in enumerate(frames):
            np.testing.assert_array_equal(s.read(e, slice(None))["frames/cam"], f)
            steps = np.array([0, 2, len(f) - 1])
            np.testing.assert_array_equal(s.read_steps("frames/cam", e, steps), f[steps])


@pytest.mark.parametrize("codec", ["lz4", "none"])
def test_a_flipped_byte_in_a_frame_chunk_is_a_store_error(tmp_path, codec):
    _store(tmp_path / "s", codec, 8)
    shard = tmp_path / "s/frames/cam/c/0/0/0/0"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0x40
    shard.write_bytes(bytes(data))
    with EpisodeStore.open(tmp_path / "s") as s, pytest.raises(StoreError, match="cannot be read"):
        s.read(0, slice(None))
    with EpisodeStore.open(tmp_path / "s", verify_checksums=False) as s:  # unchecked: the bytes come back
        s.read_rows("frames/cam", 0, 8)


def test_forked_dataloader_workers_read_the_same_samples(tmp_path):
    from torch.utils.data import DataLoader

    from latbot.data.clips import ChunkDataset

    _store(tmp_path / "s", "lz4", 1)
    ds = ChunkDataset(tmp_path / "s", 4, normalize=False)
    first = ds[3]  # the parent opens the store before forking
    loader = DataLoader(ds, batch_size=5, num_workers=2, multiprocessing_context="fork")
    batches = list(loader)
    assert torch.equal(batches[0]["frames"][3], first["frames"])
    assert torch.equal(
        torch.cat([b["actions"] for b in batches]), torch.stack([ds[i]["actions"] for i in range(len(ds))])
    )


def test_flow_expert_cached_denoising_equals_the_forward_loop():
    from latbot.models import flow
    from latbot.models.experts.flow import FlowActionExpert

    torch.manual_seed(0)
    config = FlowActionExpert.Config(width=32, depth=3, heads=4, mlp_ratio=2.0)
    expert = FlowActionExpert(config, vlm_width=24, vlm_layers=5, horizon=4).eval()
    for m in expert.modules():  # adaRMS projections start at zero: make them matter
        if hasattr(m, "mod"):
            torch.nn.init.normal_(m.mod.weight, std=0.2)
            torch.nn.init.normal_(m.mod.bias, std=0.2)
    layers = [torch.randn(2, 9, 24) for _ in range(6)]
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    state, action_mask = torch.randn(2, 46), torch.rand(2, 44) > 0.3
    actions, grip = expert.sample(state, layers, mask, action_mask, torch.Generator().manual_seed(1))
    x = torch.randn((2, 4, 44), generator=torch.Generator().manual_seed(1))
    last = {}

    def velocity(x, t):
        v, last["logits"] = expert(x, t, state, layers, mask, action_mask)
        return (v,)

    with torch.no_grad():
        (x,) = flow.integrate(velocity, (x,), config.num_steps)
        # the cached context path of `forward` gives the same velocity too
        cache = expert.context(layers, mask, torch.tensor([1.0]))
        t = torch.ones(2)
        plain = expert(x, t, state, layers, mask, action_mask)[0]
        cached = expert(x, t, state, None, mask, action_mask, cache=cache, step=0)[0]
    assert (actions - x).abs().max() < 1e-5
    assert (grip - torch.sigmoid(last["logits"])).abs().max() < 1e-5
    assert (plain - cached).abs().max() < 1e-5
