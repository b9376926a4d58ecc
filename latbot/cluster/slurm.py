"""Multi-node training on Slurm: the sbatch script that runs `latbot train` under torchrun on every node.

    latbot train recipes/lam_internvl.yaml --launcher slurm --nodes 2 --gpus-per-node 8 --partition gpu --dry-run

One task per node runs `torchrun` (`python -m torch.distributed.run`), which starts one rank per GPU; the
ranks find each other through the c10d rendezvous on the first node of the allocation. The run directory
is fixed when the script is written (`log.run_name`, timestamped if the recipe has none), so a requeued job
(preemption, node failure: `#SBATCH --requeue`) continues the run with `--resume` instead of starting over.
Nothing here talks to the scheduler except `submit`, which calls `sbatch`.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from latbot.cluster.launcher import Launcher, LaunchError
from latbot.errors import TrainingError

RDZV_PORT = 29500


def _hhmmss(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def train_script(
    recipe_path: Path,
    overrides: list[str],
    recipe,
    nodes: int,
    gpus_per_node: int,
    launcher: Launcher,
    *,
    python: str | None = None,
) -> tuple[str, Path]:
    """(the sbatch script, the run directory it trains into) for `recipe` (loaded from `recipe_path` with
    `overrides`) on `nodes` × `gpus_per_node` GPUs."""
    from latbot.train.plan import check_batch

    world = nodes * gpus_per_node
    if world > 1 and recipe.dist.strategy == "none":
        raise TrainingError(
            f"{recipe_path}: {nodes} node(s) × {gpus_per_node} GPU(s) = {world} processes need dist.strategy: fsdp "
            f"(or hsdp); the recipe says none: add --set dist.strategy=fsdp"
        )
    shard = getattr(recipe.dist, "shard_size", None)
    if recipe.dist.strategy == "hsdp" and shard and world % shard:
        raise TrainingError(
            f"{recipe_path}: dist.shard_size ({shard}) must divide {nodes} node(s) × {gpus_per_node} GPU(s) = {world} "
            f"processes; set it to the GPUs of a node (--set dist.shard_size={gpus_per_node})"
        )
    check_batch(recipe, world)  # the global batch must split over every rank
    name = recipe.log.run_name or time.strftime(f"{recipe.stage}-%Y%m%d-%H%M%S")
    sets = [s for s in overrides if not s.startswith("log.run_name=")] + [f"log.run_name={name}"]
    run_dir = Path(recipe.log.out_dir).resolve() / name
    logs = Path(recipe.log.out_dir).resolve() / "slurm"
    python = python or sys.executable
    lines = [
        "#!/bin/bash",
        f"# written by `latbot train --launcher slurm`: {recipe.stage} on {nodes} node(s) × {gpus_per_node} GPU(s),",
        f"# {world} FSDP2 rank(s) under torchrun; the run goes to {run_dir}",
        f"#SBATCH --job-name=latbot-{name}"[:80],
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={gpus_per_node}" if gpus_per_node else "",
        f"#SBATCH --cpus-per-task={max(launcher.cpus_per_job, gpus_per_node)}",
        f"#SBATCH --mem={int(launcher.mem_gb * 1024)}M" if launcher.mem_gb else "",
        f"#SBATCH --time={_hhmmss(launcher.time_min)}",
        f"#SBATCH --partition={launcher.partition}" if launcher.partition else "",
        f"#SBATCH --account={launcher.account}" if launcher.account else "",
        f"#SBATCH --qos={launcher.qos}" if launcher.qos else "",
        f"#SBATCH --constraint={launcher.constraint}" if launcher.constraint else "",
        f"#SBATCH --output={logs}/%x-%j.out",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        "set -euo pipefail",
        'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        f'export MASTER_PORT="${{MASTER_PORT:-{RDZV_PORT}}}"',
        f"export OMP_NUM_THREADS={max(1, max(launcher.cpus_per_job, gpus_per_node) // max(gpus_per_node, 1))}",
        f"RUN={shlex.quote(str(run_dir))}",
        'if [ -f "$RUN/latbot.json" ]; then  # requeued: continue the run where its last checkpoint left it',
        '  TRAIN=(train --resume "$RUN")',
        "else",
        "  TRAIN=(train "
        + " ".join([shlex.quote(str(Path(recipe_path).resolve()))] + [f"--set {shlex.quote(s)}" for s in sets])
        + ")",
        "fi",
        "srun --kill-on-bad-exit=1 " + shlex.quote(python) + " -m torch.distributed.run \\",
        f"  --nnodes {nodes} --nproc-per-node {max(gpus_per_node, 1)} \\",
        '  --rdzv-backend c10d --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv-id "$SLURM_JOB_ID" \\',
        '  -m latbot "${TRAIN[@]}"',
    ]
    return "\n".join(line for line in lines if line) + "\n", run_dir


def submit(script: str, run_dir: Path) -> str:
    """Write the script beside the run (`<out_dir>/slurm/<run>.sbatch`) and `sbatch` it; returns the job id."""
    if shutil.which("sbatch") is None:
        raise LaunchError(
            "--launcher slurm: no `sbatch` on PATH; run this on a Slurm login node, or add --dry-run to print the "
            "script"
        )
    folder = run_dir.parent / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_dir.name}.sbatch"
    from latbot.atomic import replace_file

    replace_file(path, script.encode())
    done = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise LaunchError(f"sbatch {path} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return done.stdout.strip().split(";")[0]
