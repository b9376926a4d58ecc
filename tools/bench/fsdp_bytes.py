"""Bytes moved per training step by FSDP2's collectives, before and after the bf16 mixed-precision policy.

    python tools/bench/fsdp_bytes.py --out tools/bench/results/fsdp_bytes.json

Two CPU processes over gloo train the tiny LAM recipe's model (recipes/tiny/lam.yaml, bf16 autocast,
activation checkpointing on) for one warm-up step and one measured step (forward + backward + AdamW):

- before: what `train.precision: bf16` did before the policy: autocast only, so FSDP2 all-gathers the
  fp32 parameters and reduce-scatters fp32 gradients;
- after: `MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)` (latbot.train.distributed): bf16
  all-gathers, gradients still reduced in fp32.

The counts come from wrapping `torch.distributed.all_gather_single` / `reduce_scatter_single` /
`all_reduce`, which FSDP2's default collectives call: for each call, the bytes of the full (gathered, or
to-be-reduced) buffer, per rank. A ring implementation sends (W − 1)/W of that buffer from each rank.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import torch
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[2]


def count_collectives(totals: dict):
    """Count the bytes and calls of FSDP2's collectives (all-gather, reduce-scatter, all-reduce) into `totals`,
    by wrapping torch.distributed's functions in this process."""
    import torch.distributed as dist

    def wrap(name, fn, which, keyword):
        def counted(*args, **kwargs):
            t = args[which] if len(args) > which else kwargs[keyword]
            totals[name] = totals.get(name, 0) + t.numel() * t.element_size()
            totals[f"{name}_calls"] = totals.get(f"{name}_calls", 0) + 1
            return fn(*args, **kwargs)

        return counted

    dist.all_gather_single = wrap("all_gather", dist.all_gather_single, 0, "output")  # the gathered buffer
    dist.reduce_scatter_single = wrap("reduce_scatter", dist.reduce_scatter_single, 1, "input")  # the full buffer
    dist.all_reduce = wrap("all_reduce", dist.all_reduce, 0, "tensor")


def _step(model, opt, batch):
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(batch)["loss"]
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def _worker(rank: int, size: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    from latbot.models.lam import LatentActionModel
    from latbot.recipes import load_recipe
    from latbot.train import distributed

    recipe = load_recipe(REPO / "recipes/tiny/lam.yaml")
    world = distributed.World(rank, size, torch.device("cpu"))
    g = torch.Generator().manual_seed(rank)
    s, t = recipe.data.image_size, recipe.data.num_frames
    batch = {
        "frames": torch.randint(0, 255, (4, t, 3, s, s), dtype=torch.uint8, generator=g),
        "instruction": ["pick up the puck", "open the drawer", "push the button", "close the window"],
        "actions": torch.randn(4, t - 1, 44, generator=g),
        "action_mask": torch.ones(4, 44, dtype=torch.bool),
    }
    totals: dict = {}
    count_collectives(totals)
    results = {}
    for label, precision in (("before_fp32_gather", "fp32"), ("after_bf16_policy", "bf16")):
        torch.manual_seed(0)
        model = LatentActionModel(recipe.model, t)
        distributed.checkpoint_activations(model)
        distributed.shard(model, world, precision=precision)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        _step(model, opt, batch)  # warm-up
        totals.clear()
        loss = _step(model, opt, batch)
        moved = totals.get("all_gather", 0) + totals.get("reduce_scatter", 0) + totals.get("all_reduce", 0)
        results[label] = {**totals, "total_bytes": moved, "loss": loss}
    results["ratio_after_over_before"] = (
        results["after_bf16_policy"]["total_bytes"] / results["before_fp32_gather"]["total_bytes"]
    )
    if rank == 0:
        params = sum(p.numel() for p in LatentActionModel(recipe.model, t).parameters())
        report = {
            "what": "bytes per rank per training step through FSDP2 collectives (tiny LAM, 2 gloo processes)",
            "world_size": size,
            "parameters": params,
            "micro_batch_per_rank": 4,
            "torch": torch.__version__,
            "machine": platform.machine(),
            **results,
        }
        Path(out).write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "tools/bench/results/fsdp_bytes.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(2, os.path.join(tmp, "init"), args.out), nprocs=2, join=True)


if __name__ == "__main__":
    main()
