"""The online teacher (the real-size default) and the per-rank, resumable teacher cache (small sets):
online distillation equals distillation from the cache; a 2-process (gloo) build writes one shard per rank
and both ranks read all of it; the teacher sharded with FSDP2 answers like the whole teacher; a failed
build keeps its completed shards and a rerun computes only the missing one; a cache without room on its
disk is refused in one line before anything is written; `teacher_cost` states the teacher's FLOPs."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from latbot import registry
from latbot.data import latent_cache
from latbot.recipes import load_recipe
from tests.conftest import REPO

TINY = REPO / "recipes" / "tiny"


def run_stage(recipe: str, out: Path, name: str, *sets: str) -> Path:
    from latbot import stages

    recipe_path = TINY / recipe
    r = load_recipe(recipe_path, [f"log.out_dir={out}", f"log.run_name={name}", "log.progress=false", *sets])
    return stages.run(r, recipe_path=recipe_path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-task MetaWorld store and a tiny LAM trained on it for a few steps."""
    from latbot.sim.generate import generate

    root = tmp_path_factory.mktemp("online")
    store = root / "store"
    sim = registry.get("simulators", "metaworld").Config()
    generate(sim, ["reach", "button-press-topdown"], 2, store, image_size=64, seed=0, progress=False)
    src = f"data.sources=[{{store: {store}}}]"
    lam = run_stage("lam.yaml", root, "lam", src, "train.steps=4", "train.checkpoint_every=4", "data.num_workers=0")
    return {"root": root, "store": store, "lam": lam, "src": src}


def teacher_and_clips(tiny):
    from latbot import runs
    from latbot.data.latent_cache import cache_identity
    from latbot.data.mixture import build_mixture
    from latbot.recipes.schema import DataSource

    lam = runs.load_lam(tiny["lam"])
    lam.decoder = torch.nn.Identity()
    sources = [DataSource(store=tiny["store"])]
    clips, _ = build_mixture(sources, 4)
    identity = cache_identity(runs.open_run(tiny["lam"], "lam").manifest.content_hash, sources, 4, None)
    enc = lam.config.encoder
    return lam, clips, identity, (enc.num_scene_tokens + enc.num_motion_tokens, lam.encoder.width)


def reference(lam, clips, n: int | None = None) -> np.ndarray:
    n = len(clips) if n is None else n
    batch = torch.utils.data.default_collate([clips[i] for i in range(n)])
    with torch.no_grad():
        z_sce, z_mot = lam.encode(batch["frames"], list(batch["instruction"]))
    return torch.cat([z_sce, z_mot], 1).float().numpy()


# -- online = cache ----------------------------------------------------------------------------------------
def test_online_distillation_equals_distillation_from_the_cache(tiny, monkeypatch):
    from latbot.artifacts import read_manifest

    monkeypatch.setattr(latent_cache, "SHARD", 64)  # several shards even on a tiny store
    common = (tiny["src"], f"model.teacher={tiny['lam']}", "train.steps=4", "log.every_steps=1")
    common += ("data.num_workers=0", "train.checkpoint_every=4")
    online = run_stage("distill.yaml", tiny["root"], "online", *common)
    cached = run_stage("distill.yaml", tiny["root"], "cached", *common, f"model.teacher_cache={tiny['root'] / 'c'}")

    def losses(run):
        return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]

    a, b = losses(online), losses(cached)
    assert len(a) == 4 and all(map(math.isfinite, a))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=0)  # observed: ≤ 1e-7 relative (the teacher batches differ)
    assert read_manifest(online, kind="distill").extra["teacher_latents"] == "online"
    assert read_manifest(cached, kind="distill").extra["teacher_latents"] == "cache"
    extra = read_manifest(tiny["root"] / "c", kind="teacher_cache").extra
    assert extra["shard_size"] == 64 and len(list((tiny["root"] / "c" / "latents").glob("*.npy"))) > 1


def test_the_online_teacher_runs_frozen_in_eval_and_in_bf16_under_autocast(tiny, tmp_path):
    from latbot.models.distill import DistillationModel

    lam, clips, identity, shape = teacher_and_clips(tiny)
    cls = registry.get("students", "paligemma")
    config = cls.tiny_config().model_copy(update={"num_scene_tokens": 8, "num_motion_tokens": 8})
    model = DistillationModel(registry.build("students", config, latent_width=lam.encoder.width), lam, None, 0.5)
    model.train()
    lam.train()  # even if something switches it, the teacher runs in eval mode
    batch = torch.utils.data.default_collate([clips[i] for i in range(8)])
    fp32 = model.teacher_latents(batch["frames"], list(batch["instruction"]))
    assert not lam.training and not fp32.requires_grad and fp32.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model.teacher_latents(batch["frames"], list(batch["instruction"]))
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)  # computed in bf16, returned in fp32
    torch.testing.assert_close(bf16, fp32, rtol=0.1, atol=0.1)
    # the cache computes its latents in the recipe's precision, as the online teacher does
    latent_cache.build_cache(tmp_path / "c", lam, clips, identity, shape=shape, precision="bf16", progress=False)
    latent_cache.finish_cache(tmp_path / "c", identity, len(clips), shape, "float32")
    cached = torch.from_numpy(np.stack([latent_cache.open_cache(tmp_path / "c", identity, len(clips))[i]
                                        for i in range(8)]))  # fmt: skip
    torch.testing.assert_close(cached, bf16, rtol=1e-2, atol=1e-2)  # bf16 either way; batches differ


# -- two ranks, one shard each; the FSDP2-sharded teacher ------------------------------------------------
def _worker(rank: int, size: int, init_file: str, lam_dir: str, store: str, cache: str, out: str) -> None:
    import torch.distributed as dist

    from latbot.train.distributed import World, shard_teacher

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    try:
        lam, clips, identity, shape = teacher_and_clips({"lam": Path(lam_dir), "store": Path(store)})
        shard = math.ceil(len(clips) / size)
        written = latent_cache.build_cache(cache, lam, clips, identity, shape=shape, rank=rank, world_size=size,
                                           shard_size=shard, progress=False)  # fmt: skip
        dist.barrier()
        if rank == 0:
            latent_cache.finish_cache(cache, identity, len(clips), shape, "float32", shard_size=shard)
        dist.barrier()
        latents = latent_cache.open_cache(cache, identity, len(clips))
        every = np.stack([latents[i] for i in range(len(clips))])
        # the teacher sharded on its own (FSDP2) answers like the whole teacher, inside the FSDP2-sharded
        # student's distillation step as well
        from torch.distributed.tensor import DTensor

        from latbot.models.distill import DistillationModel
        from latbot.train import distributed

        world = World(rank, size, torch.device("cpu"))
        batch = torch.utils.data.default_collate([clips[i] for i in range(4)])
        cls = registry.get("students", "paligemma")
        config = cls.tiny_config().model_copy(update={"num_scene_tokens": 8, "num_motion_tokens": 8})
        torch.manual_seed(0)
        student = registry.build("students", config, latent_width=lam.encoder.width)
        whole = DistillationModel(copy.deepcopy(student), lam, None, 0.5).train()
        step_ref = float(whole(batch)["loss"])
        total = sum(p.numel() for p in lam.parameters())
        shard_teacher(lam, world)
        local = sum(p.to_local().numel() for p in lam.parameters())
        with torch.no_grad():
            z_sce, z_mot = lam.encode(batch["frames"], list(batch["instruction"]))
        sharded = torch.cat([z_sce, z_mot], 1).numpy()
        resharded = all(isinstance(p, DTensor) for p in lam.parameters())  # nothing left gathered
        # bf16: the teacher gathered in bf16 (FSDP2's MixedPrecisionPolicy) under the loop's autocast
        lam16, *_ = teacher_and_clips({"lam": Path(lam_dir), "store": Path(store)})
        autocast = torch.autocast("cpu", dtype=torch.bfloat16)
        with torch.no_grad(), autocast:
            ref16 = torch.cat(lam16.encode(batch["frames"], list(batch["instruction"])), 1).float()
        shard_teacher(lam16, world, "bf16")
        with torch.no_grad(), autocast:
            got16 = torch.cat(lam16.encode(batch["frames"], list(batch["instruction"])), 1).float()
        bf16_error = float((got16 - ref16).abs().max())
        model = distributed.shard(DistillationModel(student, lam, None, 0.5), world).train()
        out_ = model(batch)
        out_["loss"].backward()
        step = float(out_["loss"])
        np.savez(f"{out}/rank{rank}.npz", written=np.array(written), every=every, sharded=sharded,
                 fractions=np.array([local / total, resharded]), steps=np.array([step, step_ref]),
                 bf16_error=bf16_error)  # fmt: skip
    finally:
        dist.destroy_process_group()


def test_two_ranks_write_one_shard_each_and_both_read_all_of_it(tiny, tmp_path):
    import torch.multiprocessing as mp

    lam, clips, _, _ = teacher_and_clips(tiny)
    expected = reference(lam, clips)
    cache = tmp_path / "cache"
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tiny["lam"]), str(tiny["store"]), str(cache),
                            str(tmp_path)), nprocs=2, join=True)  # fmt: skip
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]
    assert [list(r["written"]) for r in ranks] == [[0], [1]]  # each rank its own shard
    assert sorted(p.name for p in (cache / "latents").iterdir()) == [
        "shard-00000.json", "shard-00000.npy", "shard-00001.json", "shard-00001.npy"
    ]  # fmt: skip
    for r in ranks:  # both ranks read every latent, whichever rank wrote it
        np.testing.assert_allclose(r["every"], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r["sharded"], expected[:4], rtol=1e-5, atol=1e-6)
        assert r["fractions"][0] <= 0.55 and r["fractions"][1] == 1  # half the teacher per rank, resharded
        np.testing.assert_allclose(r["steps"][0], r["steps"][1], rtol=1e-5)  # sharded step = whole step
        assert float(r["bf16_error"]) < 5e-2  # bf16 sharded vs bf16 whole (different rounding paths)


# -- resumable shard by shard ----------------------------------------------------------------------------
def test_a_failed_build_keeps_its_shards_and_a_rerun_computes_only_the_missing_one(tiny, tmp_path):
    lam, clips, identity, shape = teacher_and_clips(tiny)
    out, shard = tmp_path / "cache", math.ceil(len(clips) / 3)
    real = lam.encode
    calls = []

    def failing_on_shard_2(frames, instructions):
        calls.append(len(frames))
        if sum(calls) > shard:  # the first batch of shard 2
            raise RuntimeError("killed")
        return real(frames, instructions)

    lam.encode = failing_on_shard_2
    with pytest.raises(RuntimeError, match="killed"):
        latent_cache.build_cache(out, lam, clips, identity, shape=shape, shard_size=shard, batch_size=shard,
                                 progress=False)  # fmt: skip
    files = sorted(p.name for p in (out / "latents").iterdir())
    assert files == ["shard-00000.json", "shard-00000.npy"]  # shard 1 kept, nothing of shard 2 left
    assert not latent_cache.is_complete(out)
    first = (out / "latents" / "shard-00000.npy").stat().st_mtime_ns
    (out / "latents" / ".shard-00001.npy.partial").write_bytes(b"left by a SIGKILL")  # a killed writer's file
    lam.encode, calls = real, []

    def counting(frames, instructions):
        calls.append(len(frames))
        return real(frames, instructions)

    lam.encode = counting
    written = latent_cache.build_cache(out, lam, clips, identity, shape=shape, shard_size=shard,
                                       batch_size=shard, progress=False)  # fmt: skip
    assert written == [1, 2] and sum(calls) == len(clips) - shard  # only the missing shards were computed
    assert (out / "latents" / "shard-00000.npy").stat().st_mtime_ns == first
    latent_cache.finish_cache(out, identity, len(clips), shape, "float32", shard_size=shard)
    lam.encode = real
    latents = latent_cache.open_cache(out, identity, len(clips))
    np.testing.assert_allclose(np.stack([latents[i] for i in range(len(clips))]), reference(lam, clips),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    assert not list((out / "latents").glob(".*"))
    # a shard of another cache_dtype is refused, not mixed in
    with pytest.raises(latent_cache.CacheError, match="shard 0 was built for another"):
        latent_cache.build_cache(out, lam, clips, identity, shape=shape, dtype="float16", shard_size=shard,
                                 progress=False)  # fmt: skip


# -- the space check -------------------------------------------------------------------------------------
def test_a_cache_without_room_is_refused_in_one_line_before_anything_is_written(tiny, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from latbot.cli import app

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12 - 1000, 1000))
    args = ["train", str(TINY / "distill.yaml")]
    for s in (tiny["src"], f"model.teacher={tiny['lam']}", f"model.teacher_cache={tmp_path / 'cache'}",
              f"log.out_dir={tmp_path / 'runs'}", "log.progress=false"):  # fmt: skip
        args += ["--set", s]
    result = CliRunner().invoke(app, args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    _, clips, _, (tokens, width) = teacher_and_clips(tiny)
    size = latent_cache._human(len(clips) * tokens * width * 4)
    assert f"needs {size} ({len(clips)} clips × {tokens} tokens × {width} × 4 B of float32)" in lines[0]
    assert "has 1.0 KB free" in lines[0] and "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())  # no cache, no run directory


# -- the teacher's cost in `plan` ------------------------------------------------------------------------
def test_teacher_cost_states_forward_flops_and_memory(tiny):
    from latbot.train.plan import teacher_cost

    recipe = load_recipe(TINY / "distill.yaml", [f"model.teacher={tiny['lam']}"])
    cost = teacher_cost(recipe, gpus=2)  # from the teacher run's recipe
    assert cost["latents"] == [16, 64] and cost["forward_flops_per_sample"] > 0
    assert cost["per_step_forward_flops"] == cost["forward_flops_per_sample"] * recipe.train.global_batch_size
    mem = cost["memory_per_gpu_bytes"]
    assert mem["params_sharded"] == 4 * cost["params"] / 2 and mem["activations_peak"] > 0
    no_run = teacher_cost(load_recipe(TINY / "distill.yaml"), gpus=2, lam_recipe=TINY / "lam.yaml")
    assert no_run["forward_flops_per_sample"] == cost["forward_flops_per_sample"]
