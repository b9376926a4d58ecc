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
    nodes: int | None = typer.Option(
        None, "--nodes", min=1, help="Nodes; with --gpus-per-node (GPUs = nodes × GPUs per node, replaces --gpus)."
    ),
    gpus_per_node: int | None = typer.Option(
        None, "--gpus-per-node", min=1, help="GPUs per node: HSDP's shard group in the FSDP vs HSDP comparison."
    ),
    gpu_memory: float = typer.Option(80.0, "--gpu-memory", min=1.0, help="Memory per GPU, GiB."),
    gpu: str = typer.Option("A100", "--gpu", help="A100, H100 or H200 (peak dense bf16 FLOP/s)."),
    mfu: float = typer.Option(0.4, "--mfu", min=0.01, max=1.0, help="Assumed model FLOPs utilisation."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    teacher_recipe: Path | None = typer.Option(
        None, "--teacher-recipe", help="Distillation: the teacher's LAM recipe, when its run does not exist yet."
    ),
    codec: str = typer.Option("lz4", "--codec", help="Disk: the store codec the sources will be converted with."),
    frames: list[str] = typer.Option(
        [], "--frames", help="Disk: NAME=N, frames of a source whose size is not known otherwise (repeatable)."
    ),
    codec_table: Path | None = typer.Option(
        None, "--codec-table", help='Disk: JSON {"image_size", "bytes_per_frame": {codec: bytes}, "source"}.'
    ),
) -> None:
    """Build the real-size model on the meta device, run one forward + backward of one micro-batch of the
    recipe's shapes (no weights, no data), and print memory per GPU, FLOPs and time for the cluster."""
    from latbot.errors import TrainingError
    from latbot.recipes import load_recipe
    from latbot.train.plan import check_batch, load_codec_table, plan

    if (nodes is None) != (gpus_per_node is None):
        raise TrainingError("give --nodes and --gpus-per-node together (or --gpus alone)")
    if nodes is not None:
        gpus = nodes * gpus_per_node
    recipe = load_recipe(path, overrides)
    check_batch(recipe, gpus)  # fail in a line before the dry run
    sizes = {}
    for item in frames:
        name, _, n = item.partition("=")
        if not n.strip().isdigit():
            raise TrainingError(f"--frames {item}: expected NAME=N (N frames, an integer)")
        sizes[name.strip()] = int(n)
    table = load_codec_table(codec_table) if codec_table is not None else None
    report = plan(recipe, gpus, gpu_memory, gpu.upper(), mfu, nodes=nodes or 1, teacher_recipe=teacher_recipe,
                  codec=codec, frames=sizes, codec_table=table)  # fmt: skip
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
        ("no-sync accumulation (unsharded)", _gib(m["accumulation_unsharded"])),
        (f"activations, checkpointing{' (used)' if ckpt else ''}", _gib(m["activations_checkpointing"])),
        (f"activations, no checkpointing{'' if ckpt else ' (used)'}", _gib(m["activations_no_checkpointing"])),
        (f"TOTAL per GPU (of {gpu_memory:g} GiB)", _gib(m["total"]) + ("" if report["fits"] else "  DOES NOT FIT")),
    ]
    c = report["cluster"]
    where = f"{nodes} node(s) × {gpus_per_node} = " if nodes is not None else ""
    typer.echo(f"{path}  stage {recipe.stage}  on {where}{gpus} × {c['gpu']} ({gpu_memory:g} GiB)")
    typer.echo(f"batch {b['check']} (global = micro × GPUs × accumulation); {report['params']['blocks']} FSDP blocks")
    typer.echo(f"parameters {report['params']['total']:,} ({report['params']['trainable']:,} trainable)")
    frozen = report.get("frozen")
    if frozen is not None:
        label = "frozen teacher (online), not counted" if "not_counted" in frozen else "frozen teacher (online)"
        rows.insert(-1, (label, _gib(m.get("frozen_models", 0))))
    for name, value in rows:
        typer.echo(f"  {name:<40} {value}")
    host = report["host_memory_per_rank_bytes"]
    gib = lambda n: f"{n / 1024**3:.1f} GiB"  # noqa: E731
    typer.echo(
        f"host memory per rank at start-up: {gib(host['ordinary_every_rank'])} on every rank; with dist.meta_init "
        f"{gib(host['meta_init_process_0'])} on process 0 and {gib(host['meta_init_other_ranks'])} on the others, "
        f"{host['pretrained_params'] / 1e9:.2f}B pretrained parameters read by every rank, its own rows "
        f"({host['used']} here)"
    )
    if frozen is not None and "not_counted" in frozen:
        typer.echo(f"  (teacher not counted: {frozen['not_counted']}; give --teacher-recipe LAM_RECIPE)")
    typer.echo(
        f"FLOPs per sample {f['per_sample_model'] / 1e12:.1f} T "
        f"(with checkpointing's recompute {f['per_sample_with_recompute'] / 1e12:.1f} T)"
    )
    typer.echo(
        f"step {t['step_s']:.1f} s at {t['mfu']:.0%} MFU → {t['steps']:,} steps in {t['days']:.1f} days "
        f"(peak {report['cluster']['peak_bf16_flops'] / 1e12:.0f} TFLOP/s: {report['peak_source']})"
    )
    if nodes is not None:
        _strategies(report["strategies"], nodes, gpus_per_node)
    _disk(report["disk"])


def _size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1024:.1f} KiB"


def _disk(disk: dict) -> None:
    rows, total = disk["sources"], disk["total"]
    if not rows:
        typer.echo("disk: the recipe names no data sources")
        return
    typer.echo(
        f"disk: episode stores at {disk['image_size']}² with codec {disk['codec']}, "
        f"{disk['bytes_per_frame']:,.0f} B per camera image ({disk['bytes_per_frame_source']})"
    )
    typer.echo(f"  {'source':<30} {'frames':>12} {'cams':>4} {'store':>10} {'source copy':>12}")
    for r in rows:
        n = f"{r['frames']:,}" if r["frames"] is not None else "?"
        typer.echo(f"  {r['name']:<30} {n:>12} {r['cameras']:>4} {_size(r['store_bytes']):>10} "
                   f"{_size(r['source_bytes']):>12}")  # fmt: skip
    label = f"TOTAL ({total['sources_counted']} of {len(rows)} sources)"
    typer.echo(f"  {label:<30} {total['frames']:>12,} {'':>4} {_size(total['store_bytes']):>10} "
               f"{_size(total['source_bytes'] or None):>12}")  # fmt: skip
    if total["sources_unknown"]:
        typer.echo(
            f"  frames unknown for {len(total['sources_unknown'])} source(s) (not counted): give --frames NAME=N, "
            "or convert them and plan again (an existing store is counted); sizes from: "
            + "; ".join(sorted({r["frames_from"] for r in rows if r["frames_from"]}))
        )


def _strategies(strategies: dict, nodes: int, gpus_per_node: int) -> None:
    fsdp, hsdp = strategies["fsdp"], strategies["hsdp"]
    typer.echo(
        f"FSDP (sharded over all {fsdp['shard_size']} GPUs) vs HSDP (sharded over the {gpus_per_node} GPUs of a "
        f"node, replicated across {nodes} nodes), per GPU:"
    )
    typer.echo(f"  {'':<40} {'FSDP':>12} {'HSDP':>12}")
    rows = [
        ("params + grads + AdamW (sharded)", "memory", ("params_sharded", "grads_sharded", "optimizer_sharded")),
        ("memory TOTAL", "memory", ("total",)),
        ("all-gather, sent per step", "comm", ("all_gather_bytes",)),
        ("reduce-scatter, sent per step", "comm", ("reduce_scatter_bytes",)),
        ("all-reduce across replicas, per step", "comm", ("all_reduce_bytes",)),
        ("sent within a node, per step", "comm", ("within_node_bytes",)),
        ("sent across nodes, per step", "comm", ("across_nodes_bytes",)),
    ]
    for label, kind, keys in rows:
        values = []
        for s in (fsdp, hsdp):
            table = s["memory_per_gpu_bytes"] if kind == "memory" else s["communication_per_step"]
            values.append(_gib(sum(table[k] for k in keys)))
        typer.echo(f"  {label:<40} {values[0]:>12} {values[1]:>12}")
