"""One real-size LAM training step on one CUDA GPU: step time, peak memory and MFU against `latbot plan`.

    python tools/bench/real_size_step.py                                  # recipes/lam_internvl.yaml, micro-batch 1
    python tools/bench/real_size_step.py --recipe recipes/lam_paligemma.yaml --micro-batch 2 --steps 5
    python tools/bench/real_size_step.py --out tools/bench/results/real_size_step.json

The model is the recipe's, at real size, randomly initialised on the GPU from the architecture presets in
latbot (InternVL3.5-2B / PaliGemma-3B encoder, SANA-1.6B decoder, DC-AE): no hub access, no weights, no
data (random uint8 clips of the recipe's shapes; the text goes through the local tokenizer of the tiny
presets, as in `latbot plan`). The step is the training loop's: fp32 master weights, bf16 autocast,
activation checkpointing as the recipe says, AdamW (fused), gradient clipping. One GPU, no FSDP: the
sharded memory terms of the plan do not apply; the activations and FLOPs do.

Prints JSON: median step time over `--steps` measured steps (after `--warmup`), peak allocated memory,
achieved TFLOP/s and MFU (model FLOPs per sample from the meta-device dry run of `latbot.train.plan`,
against the GPU's peak dense bf16 throughput), and the plan's activation estimate for comparison.
Needs torch with CUDA, transformers and diffusers, and this repository importable (run it from the repo
root, or `pip install -e .`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def peak_flops(name: str) -> tuple[str, float]:
    from latbot.train.plan import GPUS

    for key, (flops, _) in GPUS.items():
        if key in name.upper():
            return key, flops
    raise SystemExit(f"unknown GPU '{name}': add its peak bf16 FLOP/s to latbot.train.plan.GPUS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes/lam_internvl.yaml"))
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-checkpointing", action="store_true", help="Override the recipe: store activations.")
    parser.add_argument("--out", default=None, help="Also write the JSON here.")
    parser.add_argument("--device", default="cuda", help="cpu: a smoke test of this script (tiny recipes only).")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU (or --device cpu for a smoke test with a tiny recipe)")

    from latbot.recipes import load_recipe
    from latbot.train import distributed
    from latbot.train.loop import select_trainable
    from latbot.train.plan import _give_tokenizers, dry_run, stage_of

    recipe = load_recipe(args.recipe)
    b, tc = args.micro_batch, recipe.train
    checkpointing = tc.activation_checkpointing and not args.no_checkpointing
    run = dry_run(recipe, micro_batch=b)  # FLOPs and the activation estimate, on the meta device

    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    torch.manual_seed(0)
    stage = stage_of(recipe)
    t0 = time.perf_counter()
    with device:
        model = stage.architecture()
    build_s = time.perf_counter() - t0
    _give_tokenizers(model)
    select_trainable(model, tc.trainable, tc.frozen)
    if checkpointing:
        distributed.checkpoint_activations(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tc.lr, betas=tc.betas, eps=tc.eps, fused=cuda)
    torch.manual_seed(0)
    batch = stage.example_batch(b, device=device)  # the recipe's real shapes, random values

    model.train()
    times, losses = [], []
    sync = torch.cuda.synchronize if cuda else (lambda device: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(args.warmup + args.steps):
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = stage.train_step(model, batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, tc.grad_clip or float("inf"))
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
        losses.append(float(loss.detach()))
    step_s = statistics.median(times)
    gpu_name = torch.cuda.get_device_name(device) if cuda else "cpu"
    gpu, peak = peak_flops(gpu_name) if cuda else ("cpu", float("nan"))
    model_flops = run.forward_flops + run.backward_flops  # one micro-batch
    achieved = model_flops / step_s
    plan_act = run.saved_outside_blocks + run.block_input_bytes + run.largest_block_saved
    report = {
        "recipe": str(args.recipe),
        "gpu": gpu_name,
        "gpu_kind": gpu,
        "micro_batch": b,
        "activation_checkpointing": checkpointing,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in params),
        "build_s": build_s,
        "step_s_median": step_s,
        "step_s_all": times,
        "losses": losses,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 1024**3 if cuda else None,
        "plan": {
            "model_flops_per_step": model_flops,
            "activations_gib": (plan_act if checkpointing else run.saved_bytes) / 1024**3,
            "states_gib_one_gpu": 16 * sum(p.numel() for p in params) / 1024**3
            + 4 * (sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in params)) / 1024**3,
        },
        "achieved_tflops": achieved / 1e12,
        "peak_bf16_tflops": peak / 1e12,
        "mfu": achieved / peak,
        "mfu_with_recompute": (model_flops + (run.block_forward_flops if checkpointing else 0)) / step_s / peak,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
