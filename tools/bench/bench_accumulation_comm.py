"""Bytes moved per optimizer step by FSDP2's collectives with gradient accumulation, before and after
no-sync micro-batches.

    python tools/bench/bench_accumulation_comm.py --out tools/bench/results/bench_accumulation_comm.json

Two CPU processes over gloo train the tiny LAM recipe's model (recipes/tiny/lam.yaml, fp32, activation
checkpointing on) with 4 micro-batches per optimizer step, one warm-up step then `--steps` measured steps:

- before: every micro-batch's backward reduce-scatters its gradients (FSDP2's default), and parameters are
  resharded after each backward (so the next forward all-gathers them again);
- after: `latbot.train.distributed.accumulating` (what the training loop does): the first 3 micro-batches
  accumulate unsharded gradients locally (`set_requires_gradient_sync(False)`) and keep the parameters
  gathered (`set_reshard_after_backward(False)`); the last one reduce-scatters once and reshards.

The counts come from wrapping `torch.distributed.all_gather_single` / `reduce_scatter_single` /
`all_reduce`, which FSDP2's default collectives call: for each call, the bytes of the full (gathered, or
to-be-reduced) buffer, per rank (a ring sends (W − 1)/W of it from each rank). The losses of both runs are
recorded: the same weights, data and seeds, so they must agree (up to the order of float additions).
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
from fsdp_bytes import count_collectives  # the same counting as the FSDP bytes benchmark (tools/bench/)

REPO = Path(__file__).resolve().parents[2]
ACCUM = 4
MICRO = 2


def _batches(recipe, rank: int, steps: int) -> list[list[dict]]:
    g = torch.Generator().manual_seed(rank)
    s, t = recipe.data.image_size, recipe.data.num_frames
    words = ["pick up the puck", "open the drawer", "push the button", "close the window"]
    return [
        [
            {
                "frames": torch.randint(0, 255, (MICRO, t, 3, s, s), dtype=torch.uint8, generator=g),
                "instruction": [words[(i + m) % 4] for i in range(MICRO)],
                "actions": torch.randn(MICRO, t - 1, 44, generator=g),
                "action_mask": torch.ones(MICRO, 44, dtype=torch.bool),
            }
            for m in range(ACCUM)
        ]
        for _ in range(steps)
    ]


def _step(model, opt, micro_batches, no_sync: bool, step: int) -> float:
    from latbot.train import distributed

    total = 0.0
    for m, batch in enumerate(micro_batches):
        if no_sync:
            distributed.accumulating(model, last=m == len(micro_batches) - 1)
        torch.manual_seed(1000 * step + m)  # the decoder's flow times and noises: the same in both runs
        loss = model(batch)["loss"] / len(micro_batches)
        loss.backward()
        total += float(loss.detach())
    opt.step()
    opt.zero_grad(set_to_none=True)
    return total


def _worker(rank: int, size: int, init_file: str, out: str, steps: int) -> None:
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    from latbot.models.lam import LatentActionModel
    from latbot.recipes import load_recipe
    from latbot.train import distributed

    recipe = load_recipe(REPO / "recipes/tiny/lam.yaml")
    world = distributed.World(rank, size, torch.device("cpu"))
    t = recipe.data.num_frames
    data = _batches(recipe, rank, steps + 1)
    totals: dict = {}
    count_collectives(totals)
    results = {}
    for label, no_sync in (("before_sync_every_micro_batch", False), ("after_no_sync", True)):
        torch.manual_seed(0)
        model = LatentActionModel(recipe.model, t)
        distributed.checkpoint_activations(model)
        distributed.shard(model, world)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        losses = [_step(model, opt, data[0], no_sync, 0)]  # warm-up (lazy init)
        totals.clear()
        losses += [_step(model, opt, data[s], no_sync, s) for s in range(1, steps + 1)]
        per_step = {k: v / steps for k, v in totals.items()}
        moved = sum(per_step.get(k, 0) for k in ("all_gather", "reduce_scatter", "all_reduce"))
        results[label] = {**per_step, "bytes_per_optimizer_step": moved, "losses": losses}
    before, after = results["before_sync_every_micro_batch"], results["after_no_sync"]
    results["ratio_after_over_before"] = after["bytes_per_optimizer_step"] / before["bytes_per_optimizer_step"]
    results["max_abs_loss_difference"] = max(abs(a - b) for a, b in zip(before["losses"], after["losses"], strict=True))
    if rank == 0:
        params = sum(p.numel() for p in LatentActionModel(recipe.model, t).parameters())
        report = {
            "what": "bytes per rank per optimizer step through FSDP2 collectives, accumulation "
            f"{ACCUM} (tiny LAM, {size} gloo processes, fp32)",
            "world_size": size,
            "parameters": params,
            "parameter_bytes_fp32": 4 * params,
            "accumulation": ACCUM,
            "micro_batch_per_rank": MICRO,
            "measured_steps": steps,
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
    parser.add_argument("--out", default=str(REPO / "tools/bench/results/bench_accumulation_comm.json"))
    parser.add_argument("--steps", type=int, default=2, help="Measured optimizer steps (after one warm-up).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(2, os.path.join(tmp, "init"), args.out, args.steps), nprocs=2, join=True)


if __name__ == "__main__":
    main()
