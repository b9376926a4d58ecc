"""`latbot data gen-sim` and `latbot eval sim`: generic over the simulator (`--sim NAME`)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import typer

from latbot.cli._common import plugin_options, user_errors

eval_app = typer.Typer(help="Closed-loop evaluation.", no_args_is_help=True)

SIM_HELP = "Simulator (`latbot plugins list --kind simulators`)."
TASKS_HELP = "Task names or suites of the simulator (MetaWorld: MT10, MT50); repeatable or comma-separated."


def _sim_config(name: str, overrides: list[str]):
    return plugin_options("simulators", name, None, overrides)


@user_errors
def gen_sim(
    sim: str = typer.Option("metaworld", help=SIM_HELP),
    tasks: list[str] = typer.Option(..., "--tasks", help=TASKS_HELP),
    episodes: int = typer.Option(10, min=1, help="Episodes per task."),
    out: Path = typer.Option(..., "--out", "-o", help="Episode store to create or resume."),
    image_size: int = typer.Option(128, help="Rendered square resolution."),
    cameras: list[str] = typer.Option(
        [], "--camera", help="Cameras to record (repeatable; default: the simulator's default camera)."
    ),
    seed: int = typer.Option(0, help="Run seed; every episode's seed derives from it."),
    keep_failures: bool = typer.Option(False, help="Also keep episodes the expert failed."),
    action_noise: float = typer.Option(
        0.0,
        min=0.0,
        help="σ of Gaussian noise added to every native action dimension before it is applied (and recorded): "
        "demonstrations whose actions the scene alone does not determine (docs/simulators.md).",
    ),
    gripper_holds: float = typer.Option(
        0.0,
        min=0.0,
        max=1.0,
        help="Per-step probability that the expert's gripper is replaced, for 8–24 steps, by fully open or "
        "closed at random: demonstrations whose gripper the task does not give away (use with --keep-failures).",
    ),
    overrides: list[str] = typer.Option([], "--set", "-s", help="Simulator option KEY=VALUE."),
) -> None:
    """Generate scripted-expert demonstrations (with language and subtasks) into an episode store."""
    from latbot.sim.generate import generate

    result = generate(
        _sim_config(sim, overrides),
        tasks,
        episodes,
        out,
        image_size=image_size,
        cameras=cameras or None,
        seed=seed,
        keep_failures=keep_failures,
        action_noise=action_noise,
        gripper_holds=gripper_holds,
    )
    typer.echo(
        f"{out}: {result.added} episode(s) added, {result.skipped} already present, "
        f"{result.failed_attempts} failed expert attempt(s) dropped; "
        f"{result.seconds_per_episode:.2f} s per simulated episode"
    )


@eval_app.command("sim")
@user_errors
def eval_sim(
    sim: str = typer.Option("metaworld", help=SIM_HELP),
    policy: str = typer.Option(..., help="'scripted', 'random' or a policy checkpoint directory."),
    tasks: list[str] = typer.Option(..., "--tasks", help=TASKS_HELP),
    episodes: int | None = typer.Option(
        None, min=1, help="Episodes per task (default: the simulator's protocol, e.g. SIMPLER's 24; otherwise 10)."
    ),
    seed: int | None = typer.Option(None, help="First evaluation seed (default: away from generation seeds)."),
    image_size: int = typer.Option(128),
    execute_steps: int = typer.Option(4, min=1, help="Actions of each chunk executed before re-planning."),
    video_dir: Path | None = typer.Option(None, help="Write one MP4 per episode here."),
    video_camera: str | None = typer.Option(None, help="Camera filmed for --video-dir (default: the simulator's)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    out: Path | None = typer.Option(
        None, help="Also write the report into this folder (report.json + latbot.json): new, empty or an evaluation."
    ),
    allow_crashes: bool = typer.Option(
        False, help="Report crashed episodes as failures and exit 0 (default: any crash fails the evaluation, exit 1)."
    ),
    overrides: list[str] = typer.Option([], "--set", "-s", help="Simulator option KEY=VALUE."),
    launcher: str | None = typer.Option(
        None,
        help="Split the episodes into --jobs jobs: `local` processes or a `slurm` job array (submitit); the "
        "merged report is the one a single process gives. Parts go to OUT/.jobs (slurm needs --out).",
    ),
    jobs: int | None = typer.Option(
        None, min=1, help="Jobs of --launcher: contiguous ranges of the (task, episode) list (default: one per task)."
    ),
    partition: str | None = typer.Option(None, help="--launcher slurm: partition."),
    account: str | None = typer.Option(None, help="--launcher slurm: account."),
    qos: str | None = typer.Option(None, help="--launcher slurm: quality of service."),
    constraint: str | None = typer.Option(None, help="--launcher slurm: node constraint."),
    time_min: int | None = typer.Option(None, min=1, help="--launcher: wall-clock limit of one job, minutes (240)."),
    gpus_per_job: int | None = typer.Option(None, min=0, help="--launcher: GPUs of one job (0)."),
    cpus_per_job: int | None = typer.Option(None, min=1, help="--launcher: CPU cores of one job (2)."),
    mem_gb: float | None = typer.Option(None, help="--launcher: memory of one job, GiB (default: the scheduler's)."),
    parallelism: int | None = typer.Option(None, min=1, help="--launcher: jobs running at once (32)."),
) -> None:
    """Closed-loop evaluation: success rate per task and overall, with Wilson 95% intervals."""
    from latbot.sim.evaluate import EVAL_SEED_BASE, evaluate, evaluate_into

    launch = {
        "jobs": jobs, "partition": partition, "account": account, "qos": qos, "constraint": constraint,
        "time_min": time_min, "gpus_per_job": gpus_per_job, "cpus_per_job": cpus_per_job, "mem_gb": mem_gb,
        "parallelism": parallelism,
    }  # fmt: skip
    if episodes is None:
        from latbot import registry

        episodes = getattr(registry.get("simulators", sim), "default_episodes", 10)
    run = evaluate if out is None else functools.partial(evaluate_into, out)
    report = run(
        _sim_config(sim, overrides),
        policy,
        tasks,
        episodes,
        seed=EVAL_SEED_BASE if seed is None else seed,
        image_size=image_size,
        execute_steps=execute_steps,
        video_dir=video_dir,
        video_camera=video_camera,
        allow_crashes=allow_crashes,
        **_launch_options(launcher, launch),
    )
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    for t in report["tasks"]:
        typer.echo(
            f"{t['task']:<28} {t['successes']:>3}/{t['episodes']:<3} = {t['success_rate']:.2f}  "
            f"[{t['ci95'][0]:.2f}, {t['ci95'][1]:.2f}]  len {t['mean_length'] or 0:.0f}"
            + (f"  ({t['errors']} crashed, counted as failures)" if t["errors"] else "")
            + _metrics_text(t)
        )
        for e in report["episodes"]:
            if e["task"] == t["task"] and e["error"] is not None:
                typer.echo(f"    crashed: seed {e['seed']} after {e['steps']} step(s): {e['error']}")
    o = report["overall"]
    typer.echo(
        f"{'overall':<28} {o['successes']:>3}/{o['episodes']:<3} = {o['success_rate']:.2f}  "
        f"[{o['ci95'][0]:.2f}, {o['ci95'][1]:.2f}]  {report['seconds_per_episode']:.2f} s/episode"
        + (f"  ({o['errors']} crashed, counted as failures)" if o["errors"] else "")
        + _metrics_text(o)
    )
    if out is not None:
        typer.echo(f"report written to {out / 'report.json'}")


def _metrics_text(summary: dict) -> str:
    """The further outcomes' rates a simulator reports (SIMPLER: `success_at_any_step 0.42`), if any."""
    return "".join(f"  {name} {rate:.2f}" for name, rate in (summary.get("metrics") or {}).items())


def _launch_options(kind: str | None, given: dict) -> dict:
    """The `launcher` / `jobs` / `say` arguments of `evaluate` for --launcher and its options (none without)."""
    from pydantic import ValidationError

    from latbot.cluster.launcher import Launcher, LaunchError

    named = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
    if kind is None:
        if named:
            raise LaunchError(f"{', '.join(named)} need(s) --launcher local or --launcher slurm")
        return {}
    if kind not in ("local", "slurm"):
        raise LaunchError(f"--launcher {kind!r}: expected 'local' or 'slurm'")
    fields = {k: v for k, v in given.items() if v is not None and k != "jobs"}
    try:
        launcher = Launcher(kind=kind, **fields)
    except ValidationError as e:
        problems = "; ".join(
            f"--{'.'.join(map(str, err['loc'])).replace('_', '-')}: {err['msg']}" for err in e.errors()
        )
        raise LaunchError(problems) from None
    return {"launcher": launcher, "jobs": given["jobs"], "say": lambda line: typer.echo(line, err=True)}
