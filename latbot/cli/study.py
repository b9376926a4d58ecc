"""`latbot study STUDY.yaml`: a grid of variants × seeds × demonstration counts, resumable (latbot/study);
with a launcher, each step's jobs go through submitit (local subprocesses or a Slurm array); `--status`
shows where every job stands."""

from __future__ import annotations

from pathlib import Path

import typer

from latbot.cli._common import user_errors


@user_errors
def study(
    path: Path = typer.Argument(..., help="Study file (recipes/studies/*.yaml).", dir_okay=False),
    out: Path | None = typer.Option(None, "--out", "-o", help="Directory for every artifact and the report."),
    check_intervals: bool = typer.Option(
        False,
        "--check-intervals",
        help="Simulate studies of this design and print how often each interval of a paired difference covers "
        "the truth (nominal 95%) and says 'above 0' when nothing differs; run nothing. With --out, the design's "
        "rates and seed spread come from the study's report.",
    ),
    workers: int | None = typer.Option(
        None, min=1, max=64, help="Steps run side by side without a launcher (default: the file's)."
    ),
    status: bool = typer.Option(
        False, "--status", help="Print each step's jobs: pending, running, done or failed (and its log); run nothing."
    ),
    launcher: str | None = typer.Option(
        None,
        "--launcher",
        help="Run each step's jobs through submitit: local (subprocesses of this machine) or slurm (one job "
        "array per step); the options below override the study file's `launcher:` block. Default: that block; "
        "without one, `workers` local processes.",
    ),
    partition: str | None = typer.Option(None, help="Slurm partition."),
    account: str | None = typer.Option(None, help="Slurm account."),
    qos: str | None = typer.Option(None, help="Slurm quality of service."),
    constraint: str | None = typer.Option(None, help="Slurm node constraint."),
    time_min: int | None = typer.Option(None, min=1, help="Wall-clock limit of one job, minutes."),
    gpus_per_job: int | None = typer.Option(None, min=0, help="GPUs of one job."),
    cpus_per_job: int | None = typer.Option(None, min=1, help="CPU cores of one job."),
    mem_gb: float | None = typer.Option(None, min=0.1, help="Memory of one job, GiB."),
    parallelism: int | None = typer.Option(None, min=1, help="Jobs running at once."),
    pretrain: Path | None = typer.Option(
        None, help="Action-stream study files only: the episode store every seed's LAM trains on."
    ),
    heldout: list[Path] | None = typer.Option(
        None,
        "--heldout",
        help="Action-stream study files only: one held-out episode store per seed, in the order of the file's "
        "`seeds` (repeat the option).",
    ),
) -> None:
    """Demonstrations → LAM → distillation → finetuning → closed-loop evaluation for every cell of the grid,
    then report.md / report.json / plots. Rerun the same command to resume; finished cells are skipped (with a
    launcher: only the jobs whose output is missing are submitted again).

    An action-stream study file (one that names `lam:`, latbot/study/action_stream.py) trains one LAM per seed
    on --pretrain, scores its action stream on its --heldout store and reports the file's comparisons over
    seeds."""
    from latbot.errors import LatBotError
    from latbot.study.action_stream import is_action_stream_study

    if is_action_stream_study(path):
        from latbot.study.action_stream import run_study

        if check_intervals or launcher is not None:
            raise LatBotError(
                f"{path}: --check-intervals and --launcher are for grid studies (with `variants:`); an "
                f"action-stream study runs with --out, --pretrain and --heldout (or --out and --status)"
            )
        if status:
            from latbot.study.action_stream import status as stream_status

            if out is None:
                raise LatBotError(f"{path}: --status needs --out (the study's directory)")
            for row in stream_status(path, out):
                step = f" step {row['step']}/{row['steps']}" if row["step"] is not None else ""
                pid = f" pid {row['pid']}" if row["state"] == "training" and row["pid"] not in (None, -1) else ""
                detail = f" ({row['detail']})" if row["detail"] else ""
                scored = " scored" if row["scored"] else ""
                typer.echo(f"seed {row['seed']:<6} {row['state']:<9}{step}{pid}{scored}{detail}  {row['run']}")
            return
        if out is None or pretrain is None or not heldout:
            raise LatBotError(f"{path}: an action-stream study needs --out, --pretrain and --heldout (one per seed)")
        report = run_study(path, out, pretrain, list(heldout))
        typer.echo(report.read_text())
        typer.echo(f"report: {report}")
        return
    if pretrain is not None or heldout:
        raise LatBotError(f"{path}: --pretrain and --heldout are for action-stream study files (with `lam:`) only")
    if check_intervals:
        from latbot.study import check_intervals as simulate

        checked = simulate(path, out)
        typer.echo(f"interval check: {checked['reps']} simulated studies per row; design from {checked['design_from']}")
        typer.echo(
            "seeds  interval                coverage (nominal 0.95)  'above 0' with no difference (nominal 0.025)"
        )
        for seeds, row in checked["by_seeds"].items():
            for method in ("t_interval", "hierarchical_bootstrap"):
                r = row[method]
                typer.echo(f"{seeds:>5}  {method:<22}  {r['coverage']:>23.3f}  {r['above_zero']:>37.3f}")
            flip = row["sign_flip_p<0.05"]
            typer.echo(
                f"{seeds:>5}  sign-flip p < 0.05: {flip['rejects']:.3f} (smallest possible p {flip['smallest_p']:.4f})"
            )
        return
    if out is None:
        raise LatBotError("--out is required (the study's directory), except with --check-intervals")
    if status:
        from latbot.study import status as study_status

        for step, keys in study_status(path, out).items():
            for key, info in keys.items():
                line = f"{step:<9} {key:<28} {info['state']:<8}"
                if info["job"]:
                    line += f" job {info['job']}"
                if info["state"] == "failed" and info["log"]:
                    line += f" log {info['log']}"
                typer.echo(line.rstrip())
        return
    from latbot.study import run

    overrides = {
        "kind": launcher, "partition": partition, "account": account, "qos": qos, "constraint": constraint,
        "time_min": time_min, "gpus_per_job": gpus_per_job, "cpus_per_job": cpus_per_job, "mem_gb": mem_gb,
        "parallelism": parallelism,
    }  # fmt: skip
    report = run(path, out, workers, overrides)
    typer.echo(f"report: {report / 'report.md'}")
