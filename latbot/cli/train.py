"""`latbot train RECIPE` / `latbot train --resume RUN`: run a recipe's stage, or continue a run."""

from __future__ import annotations

from pathlib import Path

import typer

from latbot.cli._common import SET_HELP, user_errors


@user_errors
def train(
    path: Path | None = typer.Argument(None, help="Recipe YAML file (not needed with --resume).", dir_okay=False),
    overrides: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    resume: Path | None = typer.Option(None, help="Run directory to continue (exactly where it stopped)."),
    launcher: str = typer.Option("local", help="local: train here (torchrun starts the ranks); slurm: sbatch a job."),
    nodes: int = typer.Option(1, min=1, help="--launcher slurm: nodes of the job."),
    gpus_per_node: int = typer.Option(8, min=0, help="--launcher slurm: GPUs (ranks) per node."),
    partition: str | None = typer.Option(None, help="--launcher slurm: partition."),
    account: str | None = typer.Option(None, help="--launcher slurm: account."),
    qos: str | None = typer.Option(None, help="--launcher slurm: quality of service."),
    time_min: int = typer.Option(
        2880, min=1, help="--launcher slurm: wall-clock limit, minutes (requeued jobs resume)."
    ),
    cpus_per_node: int = typer.Option(32, min=1, help="--launcher slurm: CPU cores per node (data loading)."),
    mem_gb: float | None = typer.Option(None, min=1, help="--launcher slurm: memory per node, GiB."),
    dry_run: bool = typer.Option(False, "--dry-run", help="--launcher slurm: print the sbatch script, submit nothing."),
) -> None:
    """Train one stage (lam, distill, finetune, or a plugin's) as the recipe says, or continue a run; with
    `--launcher slurm`, write and submit the multi-node torchrun job instead (docs/cluster.md)."""
    from latbot import runs, stages
    from latbot.errors import LatBotError
    from latbot.recipes import load_recipe

    if launcher not in ("local", "slurm"):
        raise LatBotError(f"--launcher {launcher}: expected local or slurm")
    if launcher == "slurm":
        from latbot.cluster.launcher import Launcher
        from latbot.cluster.slurm import submit, train_script

        if path is None or resume is not None:
            raise LatBotError("--launcher slurm takes a recipe file (a requeued job resumes its run by itself)")
        recipe = load_recipe(path, overrides, check_paths=not dry_run)
        from latbot import registry

        registry.get("stages", recipe.stage)(recipe).validate()  # model-side checks before anything is queued
        spec = Launcher(kind="slurm", partition=partition, account=account, qos=qos, time_min=time_min,
                        cpus_per_job=cpus_per_node, mem_gb=mem_gb)  # fmt: skip
        script, run_dir = train_script(path, list(overrides), recipe, nodes, gpus_per_node, spec)
        if dry_run:
            typer.echo(script, nl=False)
            return
        job = submit(script, run_dir)
        typer.echo(f"submitted job {job}: {run_dir} ({run_dir.parent / 'slurm' / (run_dir.name + '.sbatch')})")
        return
    if dry_run:
        raise LatBotError("--dry-run prints a Slurm script: add --launcher slurm")

    if resume is None:
        if path is None:
            raise LatBotError("give a recipe file (latbot train RECIPE) or a run to continue (--resume RUN)")
        recipe = load_recipe(path, overrides, check_paths=True)
        try:
            stages.run(recipe, recipe_path=path)
        except LatBotError as e:  # a stage-time error: say which recipe it is about
            if not str(e).startswith(str(path)):
                e.args = (f"{path}: {e}", *e.args[1:])
            raise
        return
    if not resume.is_dir():
        raise LatBotError(f"--resume {resume}: no such run directory")
    if overrides:
        raise LatBotError("--resume continues the run with its saved recipe; --set cannot change it")
    run = runs.resumable(resume)
    if path is not None:  # allowed (the run's own recipe is used), but not a recipe of another stage
        given = load_recipe(path).stage
        saved = run.manifest.recipe.get("stage")
        if given != saved:
            raise LatBotError(
                f"{path} is a '{given}' recipe, but {resume} is a '{saved}' run; "
                f"continue it with `latbot train --resume {resume}`"
            )
    stages.run(run.recipe, resume=resume)
