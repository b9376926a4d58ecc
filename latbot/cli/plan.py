"""`latbot plan RECIPE`: a real-size dry run (meta device) and the recipe's per-GPU memory, FLOPs and time."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from latbot.cli._common import SET_HELP, user_errors


def _gib(n: float) -> str:
    return f"{n / 1024**3:8.1f} GiB"


@user_errors
def plan(
    path: Path = typer.Argument(..., help="Recipe YAML file.", dir_okay=False),
    overrides: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    gpus: int = typer.Option(16, "--gpus", min=1, help="GPUs (FSDP2 processes) in the cluster."),
    gpu_memory: float = typer.Option(80.0, "--gpu-memory", min=1.0, help="Memory per GPU, GiB."),
    gpu: str = typer.Option("A100", "--gpu", help="A100, H100 or H200 (peak dense bf16 FLOP/s)."),
    mfu: float = typer.Option(0.4, "--mfu", min=0.01, max=1.0, help="Assumed model FLOPs utilisation."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Build the real-size model on the meta device, run one forward + backward of one micro-batch of the
    recipe's shapes (no weights, no data), and print memory per GPU, FLOPs and time for the cluster."""
    from latbot.recipes import load_recipe
    from latbot.train.plan import check_batch, plan

    recipe = load_recipe(path, overrides)
    check_batch(recipe, gpus)  # fail in a line before the dry run
    report = plan(recipe, gpus, gpu_memory, gpu.upper(), mfu)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    m, t, f, b = report["memory_per_gpu_bytes"], report["time"], report["flops"], report["batch"]
    ckpt = report["activation_checkpointing"]
    rows = [
        ("parameters (sharded, fp32)", _gib(m["params_sharded"])),
        ("gradients (sharded, fp32)", _gib(m["grads_sharded"])),
        ("AdamW states (sharded, fp32)", _gib(m["optimizer_sharded"])),
        ("root unit, gathered", _gib(m["root_unit_gathered"])),
        ("largest block, gathered", _gib(m["largest_block_gathered"])),
        ("gathered at peak (root + 3 blocks)", _gib(m["gathered_peak"])),
        (f"activations, checkpointing{' (used)' if ckpt else ''}", _gib(m["activations_checkpointing"])),
        (f"activations, no checkpointing{'' if ckpt else ' (used)'}", _gib(m["activations_no_checkpointing"])),
        (f"TOTAL per GPU (of {gpu_memory:g} GiB)", _gib(m["total"]) + ("" if report["fits"] else "  DOES NOT FIT")),
    ]
    typer.echo(f"{path}  stage {recipe.stage}  on {gpus} × {report['cluster']['gpu']} ({gpu_memory:g} GiB)")
    typer.echo(f"batch {b['check']} (global = micro × GPUs × accumulation); {report['params']['blocks']} FSDP blocks")
    typer.echo(f"parameters {report['params']['total']:,} ({report['params']['trainable']:,} trainable)")
    for name, value in rows:
        typer.echo(f"  {name:<40} {value}")
    typer.echo(
        f"FLOPs per sample {f['per_sample_model'] / 1e12:.1f} T "
        f"(with checkpointing's recompute {f['per_sample_with_recompute'] / 1e12:.1f} T)"
    )
    typer.echo(
        f"step {t['step_s']:.1f} s at {t['mfu']:.0%} MFU → {t['steps']:,} steps in {t['days']:.1f} days "
        f"(peak {report['cluster']['peak_bf16_flops'] / 1e12:.0f} TFLOP/s: {report['peak_source']})"
    )
