"""The training loop shared by every stage. Read it top to bottom: set-up, resume, steps, export.

A stage supplies a model whose `forward(batch)` returns a dict with "loss" (and any other scalars to log),
and a dataset + sampler. The loop owns everything else: which parameters train, AdamW, the paper's
schedule, gradient accumulation to the global batch, clipping, bf16 autocast, activation checkpointing,
FSDP2, NaN detection, checkpoints with exact resume, metrics, and the exported weights + manifest.
"""

from __future__ import annotations

import fnmatch
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from latbot.errors import TrainingError
from latbot.train import checkpoint, distributed
from latbot.train.metrics import MetricsLog
from latbot.train.schedule import lr_at


def select_trainable(model: torch.nn.Module, trainable: list[str], frozen: list[str]) -> int:
    """requires_grad = (already trainable) ∧ (matches `trainable`) ∧ ¬(matches `frozen`); returns the count.
    A recipe can freeze more than the model does, never unfreeze what the model froze on purpose. An empty
    parameter (0 latent queries: the pi0.5 baseline) has nothing to learn and is frozen: FSDP2's gradient
    reduce-scatter refuses empty tensors."""
    n = 0
    for name, p in model.named_parameters():
        keep = p.requires_grad and p.numel() > 0 and any(fnmatch.fnmatch(name, g) for g in trainable)
        keep = keep and not any(fnmatch.fnmatch(name, g) for g in frozen)
        p.requires_grad_(keep)
        n += p.numel() if keep else 0
    if n == 0:
        raise TrainingError("train.trainable / train.frozen leave no parameter to train")
    return n


def train(
    recipe,
    run_dir: Path,
    build_model: Callable[[], torch.nn.Module],
    build_data: Callable[[distributed.World], tuple[Any, Any]],
    train_step: Callable[[torch.nn.Module, dict], dict[str, torch.Tensor]],
    world: distributed.World,
    resume: bool,
    on_log: Callable[[torch.nn.Module, dict], dict[str, float]] | None = None,
    architecture: Callable[[], torch.nn.Module] | None = None,
) -> torch.nn.Module:
    tc = recipe.train
    # -- set-up: seeds, model, what trains, memory savers, sharding, optimizer ------------------------------
    torch.manual_seed(tc.seed * 1000 + world.rank)
    meta = getattr(recipe.dist, "meta_init", False) and recipe.dist.strategy != "none"
    if meta:  # dist.meta_init: the model on the meta device; the initial weights from process 0 (below)
        initial = distributed.initial_model(build_model, world)
        model = distributed.meta_model(architecture)
    else:
        model = build_model().to(world.device)
    distributed.fp32_master_weights(model)  # fp32 master weights whatever was loaded (bf16 compute: precision)
    trainable = select_trainable(model, tc.trainable, tc.frozen)
    if tc.activation_checkpointing:
        distributed.checkpoint_activations(model)
    if recipe.dist.strategy != "none":  # fsdp, or hsdp (2-D mesh); bf16: MixedPrecisionPolicy
        dc = recipe.dist
        distributed.shard(model, world, dc.reshard_after_forward, tc.precision, dc.strategy, dc.shard_size)
    if meta:  # this rank's shards materialised, then filled from process 0's build
        distributed.load_initial(model, initial, world)
        del initial
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.lr, betas=tc.betas, eps=tc.eps, weight_decay=tc.weight_decay)
    per_step = tc.micro_batch_size * world.size
    if tc.global_batch_size % per_step:
        raise TrainingError(
            f"train.global_batch_size ({tc.global_batch_size}) must be a multiple of micro_batch_size × processes "
            f"({tc.micro_batch_size} × {world.size})"
        )
    accum = tc.global_batch_size // per_step
    dataset, sampler = build_data(world)

    # -- resume: model, optimizer, RNG of this rank, data position --------------------------------------------
    start, consumed = 0, 0
    if resume:
        state = checkpoint.load(run_dir, model, optimizer, world, seed=tc.seed)
        start, consumed = state["step"], state["global_samples"]
    sampler.position = consumed // world.size  # samples are counted globally: resumable at another world size
    loader = DataLoader(
        dataset,
        batch_size=tc.micro_batch_size,
        sampler=sampler,
        num_workers=recipe.data.num_workers,
        generator=torch.Generator().manual_seed(tc.seed),
        persistent_workers=False,
    )
    batches = iter(loader)
    log = MetricsLog(
        run_dir,
        world.main,
        recipe.log.tensorboard,
        resume_step=start if resume else None,
        wandb=recipe.log.wandb,
        config=recipe.model_dump(mode="json") if recipe.log.wandb is not None else None,
    )
    if world.main:
        print(
            f"training {trainable:,} parameters, {accum} micro-batch(es) of {tc.micro_batch_size} per step "
            f"on {world.size} process(es), steps {start}→{tc.steps}: {run_dir}"
        )
    autocast = torch.autocast(world.device.type, dtype=torch.bfloat16, enabled=tc.precision == "bf16")

    # -- the loop -------------------------------------------------------------------------------------------
    bar = tqdm(
        range(start, tc.steps),
        initial=start,
        total=tc.steps,
        disable=not (world.main and recipe.log.progress),
        desc="train",
        unit="step",
        dynamic_ncols=True,
    )
    t_last, samples_since = time.perf_counter(), 0
    model.train()
    for step in bar:
        lr = lr_at(step, tc.lr, tc.min_lr, tc.warmup_steps, tc.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        totals: dict[str, torch.Tensor] = {}
        for micro in range(accum):
            batch = next(batches)
            if recipe.dist.no_sync_accumulation:  # FSDP: reduce on the last micro-batch only
                distributed.accumulating(model, last=micro == accum - 1)
            with autocast:
                out = train_step(model, batch)
            (out["loss"] / accum).backward()
            for k, v in out.items():
                totals[k] = totals.get(k, 0.0) + v.detach().float() / accum
        if world.size > 1:
            import torch.distributed as dist

            for v in totals.values():
                dist.all_reduce(v, op=dist.ReduceOp.AVG)
        loss = float(totals["loss"])
        if not math.isfinite(loss):
            good = checkpoint.latest(run_dir)
            raise TrainingError(
                f"the loss became {loss} at step {step + 1}; stopped without saving. The last good checkpoint is "
                f"{good or 'none'} (lower train.lr, check the data with `latbot data verify`)"
            )
        grad_norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip) if tc.grad_clip else None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        consumed += tc.global_batch_size
        samples_since += tc.global_batch_size
        done = step + 1
        if done % recipe.log.every_steps == 0 or done == tc.steps or done == start + 1:
            now = time.perf_counter()
            values = {k: float(v) for k, v in totals.items()} | {
                "lr": lr,
                "samples_per_s": samples_since / (now - t_last),
            }
            if grad_norm is not None:
                values["grad_norm"] = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
            if on_log is not None:  # on every rank (a sharded model computes on all of them), then averaged
                values |= _on_every_rank(on_log, model, batch, world, autocast)
            log.log(done, values)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", sps=f"{values['samples_per_s']:.1f}")
            t_last, samples_since = now, 0
        if done % tc.checkpoint_every == 0 or done == tc.steps:
            checkpoint.save(run_dir, done, model, optimizer, world, {"global_samples": consumed}, tc.keep_last)
    bar.close()
    log.close()
    return model


def _on_every_rank(on_log, model, batch, world, autocast) -> dict[str, float]:
    """A stage's `on_log` scalars, computed by every rank on its own micro-batch and averaged over the ranks.
    Under FSDP2 only `forward` gathers the root unit's parameters: a stage's other methods (`encode`) would
    meet sharded DTensors, so the root is unsharded around the call (and resharded after); under bf16 the
    gathered parameters are bf16, hence the loop's autocast."""
    sharded = hasattr(model, "unshard")
    if sharded:
        model.unshard()
    try:
        with autocast:
            values = on_log(model, batch)
    finally:
        if sharded:
            model.reshard()
    if world.size > 1 and values:
        import torch.distributed as dist

        names = sorted(values)
        box = torch.tensor([float(values[k]) for k in names], dtype=torch.float64, device=world.device)
        dist.all_reduce(box, op=dist.ReduceOp.SUM)
        values = {k: float(v) / world.size for k, v in zip(names, box.tolist(), strict=True)}
    return values


def export(run_dir: Path, model: torch.nn.Module, world: distributed.World, extra: dict) -> None:
    """Gather the full weights and complete the run (safetensors + manifest, `latbot.runs.finish_run`)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from latbot import runs

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if world.main:
        runs.finish_run(Path(run_dir), state, extra)
    distributed.barrier(world)
