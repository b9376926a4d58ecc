"""The multi-node shape of training. HSDP: four gloo processes as 2 replicas × 2 shards (a 2-D DeviceMesh)
train a small model with gradient accumulation and give the losses of one process on the same global batch;
the stage's `on_log` scalars work on a sharded model (every rank computes, the loop averages); a world size
that is not a multiple of `dist.shard_size` and a sharded strategy outside torchrun stop in one line."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from typer.testing import CliRunner

from latbot.errors import RecipeError, TrainingError
from latbot.train import distributed

WORLD, SHARD = 4, 2
STEPS, ACCUM, MICRO = 4, 2, 2  # global batch 16 = 4 processes × micro 2 × accumulation 2
WIDTH = 16
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(WIDTH, WIDTH)

    def forward(self, x):
        return x + torch.tanh(self.lin(x))


class Tiny(nn.Module):
    """Two blocks (FSDP units) and a root unit (input and output layers)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(3, WIDTH)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.out = nn.Linear(WIDTH, 1)

    def repeated_blocks(self) -> list[nn.Module]:
        return list(self.blocks)

    def encode(self, x):  # not `forward`: what a stage's on_log calls (LAM: model.encode)
        h = self.inp(x)
        for b in self.blocks:
            h = b(h)
        return h

    def forward(self, batch):
        return nn.functional.mse_loss(self.out(self.encode(batch["x"])), batch["y"])


def _data() -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(STEPS, WORLD * ACCUM * MICRO, 3, generator=g)
    return {"x": x, "y": x.sum(-1, keepdim=True).sin()}


def _on_log(model, batch) -> dict[str, float]:
    with torch.no_grad():
        return {"feature_norm": float(model.encode(batch["x"]).norm(dim=-1).mean())}


def _train(world, strategy: str) -> dict:
    """STEPS optimizer steps; each rank takes its slice of each step's global batch, in ACCUM micro-batches."""
    torch.manual_seed(0)
    model = Tiny()
    if strategy != "none":
        distributed.shard(model, world, strategy=strategy, shard_size=SHARD if strategy == "hsdp" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
    data, losses, logged = _data(), [], []
    ranks = world.size if strategy != "none" else 1
    rank = world.rank if strategy != "none" else 0
    per_rank = data["x"].shape[1] // ranks
    micro = per_rank // ACCUM
    for step in range(STEPS):
        total = torch.zeros(())
        for m in range(ACCUM):
            lo = rank * per_rank + m * micro
            batch = {k: v[step, lo : lo + micro] for k, v in data.items()}
            distributed.accumulating(model, last=m == ACCUM - 1)
            loss = model(batch) / ACCUM
            loss.backward()
            total += loss.detach()
        if strategy != "none":
            import torch.distributed as dist

            dist.all_reduce(total, op=dist.ReduceOp.SUM)
            total /= world.size
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(total))
        from latbot.train.loop import _on_every_rank

        sub = world if strategy != "none" else distributed.World()
        logged.append(_on_every_rank(_on_log, model, {"x": data["x"][step]}, sub, torch.autocast("cpu", enabled=False)))
    out = {"losses": losses, "on_log": logged}
    if strategy != "none":
        w = model.blocks[0].lin.weight
        out["placements"] = [type(p).__name__ for p in w.placements]
        out["mesh"] = list(w.device_mesh.shape)
        out["local_rows"] = w.to_local().shape[0]
    return out


def _worker(rank: int, size: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    world = distributed.World(rank, size, torch.device("cpu"))
    results = {"hsdp": _train(world, "hsdp"), "fsdp": _train(world, "fsdp")}
    if rank == 0:
        results["single"] = _train(world, "none")
        with open(out, "w") as f:
            json.dump(results, f)
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def hsdp_results():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "results.json")
        mp.spawn(_worker, args=(WORLD, os.path.join(tmp, "init"), out), nprocs=WORLD, join=True)
        with open(out) as f:
            return json.load(f)


def test_hsdp_2x2_trains_like_one_process_on_the_same_global_batch(hsdp_results):
    h, single = hsdp_results["hsdp"], hsdp_results["single"]
    assert h["mesh"] == [2, 2] and h["placements"] == ["Replicate", "Shard"]  # replicated × sharded
    assert h["local_rows"] == WIDTH // SHARD  # sharded over the 2 ranks of a group, not over all 4
    assert hsdp_results["fsdp"]["local_rows"] == WIDTH // WORLD
    torch.testing.assert_close(h["losses"], single["losses"], **TOLERANCE)
    torch.testing.assert_close(hsdp_results["fsdp"]["losses"], single["losses"], **TOLERANCE)
    assert h["losses"][0] != h["losses"][-1]


def test_on_log_runs_on_a_sharded_model_and_is_averaged_over_ranks(hsdp_results):
    """A non-forward method (`encode`) on the sharded root, on every rank: the mean over the ranks of the
    per-rank values equals one process's value on the whole batch here (equal slices, a per-sample mean)."""
    for strategy in ("hsdp", "fsdp"):
        got = [d["feature_norm"] for d in hsdp_results[strategy]["on_log"]]
        ref = [d["feature_norm"] for d in hsdp_results["single"]["on_log"]]
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_shard_size_must_divide_the_world():
    assert distributed.mesh_shape(16, "hsdp", 8) == (2, 8)
    assert distributed.mesh_shape(16, "fsdp", None) == (16,)
    with pytest.raises(RecipeError, match=r"dist.shard_size \(3\) must divide the number of processes \(4\)"):
        distributed.mesh_shape(4, "hsdp", 3)


def test_hsdp_recipe_needs_a_shard_size():
    from latbot.recipes.schema import DistConfig

    with pytest.raises(ValueError, match=r"needs dist\.shard_size"):
        DistConfig(strategy="hsdp")
    assert DistConfig(strategy="hsdp", shard_size=8).shard_size == 8


@pytest.mark.parametrize("strategy", ["fsdp", "hsdp"])
def test_sharded_strategy_outside_torchrun_stops_before_a_run_directory(tmp_path, monkeypatch, strategy):
    from latbot.cli import app

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    path = tmp_path / "curve.yaml"
    out = tmp_path / "runs"
    path.write_text(
        "stage: curve_fit\nmodel: {width: 3, samples: 64}\n"
        "train: {steps: 2, global_batch_size: 8, micro_batch_size: 4}\n"
        f"dist: {{strategy: {strategy}, shard_size: 2, backend: gloo}}\ndata: {{num_workers: 0}}\n"
        f"log: {{out_dir: {out}, progress: false, tensorboard: false}}\n"
    )
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 2, result.output
    line = " ".join(result.output.split())
    assert f"dist.strategy {strategy} needs processes started by torchrun" in line
    assert "torchrun --nproc-per-node N -m latbot train" in line
    assert not out.exists() or not any(Path(out).iterdir())
    with pytest.raises(TrainingError):
        distributed.require_launcher(strategy)
    distributed.require_launcher("none")


def test_latbot_train_under_torchrun_hsdp_runs_and_refuses_a_shard_size_that_does_not_divide(tmp_path):
    """`latbot train` with hsdp under torchrun: 4 ranks as 2 × 2 train, checkpoint and export a run; on 3
    ranks shard_size 2 stops in one line on every rank, before any run directory exists."""
    import subprocess
    import sys

    from tests.conftest import REPO

    def launch(n: int, name: str, batch: int):
        path = tmp_path / f"{name}.yaml"
        path.write_text(
            "stage: curve_fit\nmodel: {width: 3, samples: 64}\n"
            f"train: {{steps: 4, global_batch_size: {batch}, micro_batch_size: 2, precision: fp32, "
            "checkpoint_every: 2}\n"
            "dist: {strategy: hsdp, shard_size: 2, backend: gloo}\ndata: {num_workers: 0}\n"
            f"log: {{out_dir: {tmp_path / 'runs'}, run_name: {name}, progress: false, tensorboard: false}}\n"
        )
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n), "-m", "latbot"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd += ["train", str(path)]
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    ok = launch(4, "hsdp", 16)  # 16 = 2 per micro-batch × 4 ranks × 2 micro-batches
    assert ok.returncode == 0, ok.stderr[-3000:]
    manifest = json.loads((tmp_path / "runs/hsdp/latbot.json").read_text())
    assert manifest["status"] == "complete"
    assert "2 micro-batch(es) of 2 per step on 4 process(es)" in ok.stdout
    bad = launch(3, "three", 12)
    assert bad.returncode != 0
    assert "dist.shard_size (2) must divide the number of processes (3)" in bad.stdout + bad.stderr
    assert not (tmp_path / "runs/three").exists()
