"""Running independent jobs on this machine or as a Slurm job array, through submitit.

    run_jobs({"lam/s0": (fn, args), ...}, Launcher(kind="slurm", partition="gpu"), folder, done=...)

Each job is one picklable call (a module-level function and its arguments). `run_jobs` asks `done(key)`
first and runs a finished job's call here (it returns at once: the work verifies and is skipped); the
others are submitted together (one Slurm array, or local subprocesses), waited for, and their results
returned. A job that fails or is preempted fails the whole step with one line naming its key and its log;
the outputs of the jobs that did finish stay, so rerunning the command resubmits only what is missing.

Every submission is recorded in ``folder/jobs.json`` (key → job id, state, log paths), which `status`
reads without submitit: pending / running / done / failed per key. Results come back through submitit's
result files, and only for jobs this process submitted itself; a `jobs.json` left by an earlier process
is read as plain JSON, never unpickled.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from latbot.config import Section
from latbot.errors import LatBotError

JOBS_FILE = "jobs.json"


class LaunchError(LatBotError):
    """A job failed, or a launcher cannot be used as configured."""


class Launcher(Section):
    """Where independent jobs run: `local` (subprocesses of this machine, submitit's local executor) or
    `slurm` (one job array, submitit's Slurm executor). A recipe's or study's `launcher:` block, or the
    `--launcher` / `--partition` / ... options of `study`, `data convert`, `eval sim`."""

    kind: Literal["local", "slurm"] = Field("local", description="local: this machine; slurm: a job array.")
    partition: str | None = Field(None, description="Slurm partition (--partition).")
    account: str | None = Field(None, description="Slurm account (--account).")
    qos: str | None = Field(None, description="Slurm quality of service (--qos).")
    time_min: int = Field(240, ge=1, description="Wall-clock limit of one job, minutes.")
    gpus_per_job: int = Field(0, ge=0, description="GPUs of one job (--gpus-per-node).")
    cpus_per_job: int = Field(2, ge=1, description="CPU cores of one job (--cpus-per-task).")
    mem_gb: float | None = Field(None, gt=0, description="Memory of one job, GiB (--mem); null: the default.")
    parallelism: int = Field(32, ge=1, description="Jobs running at once (Slurm array %N; local: processes).")
    constraint: str | None = Field(None, description="Slurm node constraint (--constraint).")


def executor(launcher: Launcher, folder: Path):
    """The submitit executor for `launcher`, writing its logs under `folder/logs/`."""
    try:
        import submitit
    except ImportError as e:  # a core dependency: only a broken install lacks it
        raise LaunchError(f"launchers need submitit ({e}); reinstall latbot") from e
    if launcher.kind == "slurm":
        import shutil

        if shutil.which("sbatch") is None:
            raise LaunchError(
                "--launcher slurm: no `sbatch` on PATH; run on a Slurm login node, or use --launcher local"
            )
    # One folder per job (`%j`) on Slurm. Locally, submitit's job controller starts at once and opens its logs
    # in that folder, which the submitting process creates only after starting it: on a busy machine the
    # controller can win and die. One shared, existing folder has no such race (file names carry the job id).
    logs = Path(folder) / "logs" / ("%j" if launcher.kind == "slurm" else "")
    ex = submitit.AutoExecutor(folder=logs, cluster=launcher.kind)
    params: dict[str, Any] = {
        "timeout_min": launcher.time_min,
        "cpus_per_task": launcher.cpus_per_job,
        "gpus_per_node": launcher.gpus_per_job,
        "tasks_per_node": 1,
        "nodes": 1,
    }
    if launcher.mem_gb is not None:
        params["mem_gb"] = launcher.mem_gb
    if launcher.kind == "slurm":
        params["slurm_array_parallelism"] = launcher.parallelism
        for field, name in (("partition", "slurm_partition"), ("account", "slurm_account"), ("qos", "slurm_qos"),
                            ("constraint", "slurm_constraint")):  # fmt: skip
            if getattr(launcher, field) is not None:
                params[name] = getattr(launcher, field)
    ex.update_parameters(**params)
    return ex


def run_jobs(
    jobs: dict[str, tuple[Callable, tuple]],
    launcher: Launcher,
    folder: str | Path,
    *,
    done: Callable[[str], bool] | None = None,
    label: str = "jobs",
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every job ({key: (fn, args)}) and return {key: fn(*args)}: the finished ones (`done(key)`) here,
    the rest as submitted jobs (see the module doc). Raises `LaunchError` naming every failed key and its log,
    after all jobs have ended."""
    folder = Path(folder)
    results: dict[str, Any] = {}
    pending = {}
    for key, (fn, args) in jobs.items():
        if done is not None and done(key):
            results[key] = fn(*args)  # verifies and returns at once
        else:
            pending[key] = (fn, args)
    if not pending:
        return results
    folder.mkdir(parents=True, exist_ok=True)
    ex = executor(launcher, folder)
    say(f"{label}: {len(pending)} job(s) to {launcher.kind}" + (f", {len(results)} already done" if results else ""))
    record = _read_record(folder)

    def recorded(wave: dict[str, Any]) -> None:  # written as soon as a wave is submitted: `status` sees it run
        for key, job in wave.items():
            record[key] = {
                "kind": launcher.kind,
                "job_id": str(job.job_id),
                "state": "PENDING",
                "stdout": str(job.paths.stdout),
                "stderr": str(job.paths.stderr),
                "submitted": time.time(),
            }
        _write_record(folder, record)

    submitted = _submit(ex, pending, launcher, recorded)
    failures = []
    for key, job in submitted.items():
        try:
            results[key] = job.result()
            record[key]["state"] = "COMPLETED"
        except Exception as e:  # the job's own error, or the scheduler's (preempted, timed out, cancelled)
            record[key]["state"] = "FAILED"
            failures.append(f"{key} (job {job.job_id}, log {job.paths.stderr}): {_cause(e)}")
        _write_record(folder, record)
    results = {key: results[key] for key in jobs if key in results}  # in the order of `jobs`
    if failures:
        raise LaunchError(
            f"{label}: {len(failures)} of {len(submitted)} job(s) failed; rerun the same command to resubmit only "
            f"those: " + "; ".join(failures)
        )
    return results


def _cause(e: BaseException) -> str:
    """The job's own error in one line (submitit wraps it with the job's traceback and log paths)."""
    import re

    if type(e).__name__ == "UncompletedJobError":  # no result at all: its log's last line is no cause
        state = re.search(r"has not produced any output \(state: ([^)]*)\)", str(e))
        return (
            f"it ended without a result (state {state.group(1) if state else 'unknown'}): killed, out of memory, "
            f"timed out or preempted"
        )
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b", line)]
    return (errors or lines or [type(e).__name__])[-1]


def _submit(ex, pending: dict[str, tuple[Callable, tuple]], launcher: Launcher, recorded: Callable) -> dict[str, Any]:
    """Slurm: one array (`parallelism` running at once). Local: submitit starts every job it is given at once,
    so the jobs go in waves of `parallelism` processes, each wave waited for before the next."""
    if launcher.kind == "slurm":
        with ex.batch():
            jobs = [ex.submit(fn, *args) for fn, args in pending.values()]
        submitted = dict(zip(pending, jobs, strict=True))
        recorded(submitted)
        return submitted
    submitted: dict[str, Any] = {}
    keys = list(pending)
    for start in range(0, len(keys), launcher.parallelism):
        wave = {
            key: ex.submit(*pending[key][:1], *pending[key][1]) for key in keys[start : start + launcher.parallelism]
        }
        submitted |= wave
        recorded(wave)
        if start + launcher.parallelism < len(keys):
            for job in wave.values():
                job.wait()
    return submitted


# -- the record of submissions ----------------------------------------------------------------------------------
def _read_record(folder: Path) -> dict[str, dict]:
    path = folder / JOBS_FILE
    if not path.is_file() or path.is_symlink() or path.stat().st_size > 16 * 1024 * 1024:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def _write_record(folder: Path, record: dict[str, dict]) -> None:
    from latbot.atomic import replace_file

    replace_file(folder / JOBS_FILE, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())


def status(folder: str | Path, keys: list[str], done: Callable[[str], bool]) -> dict[str, dict[str, str]]:
    """{key: {"state": pending|running|done|failed, "job": id, "log": stderr path}} for `keys`: done when its
    output verifies; otherwise what the record of submissions says, refreshed from the scheduler for Slurm
    jobs (`sacct`) and from the process table for local ones."""
    record = _read_record(Path(folder))
    out = {}
    for key in keys:
        entry = record.get(key, {})
        info = {"job": str(entry.get("job_id", "")), "log": str(entry.get("stderr", ""))}
        if done(key):
            out[key] = {"state": "done", **info}
            continue
        state = str(entry.get("state", ""))
        if not entry:
            out[key] = {"state": "pending", **info}
        elif state == "FAILED":
            out[key] = {"state": "failed", **info}
        elif _alive(entry):
            out[key] = {"state": "running", **info}
        else:  # submitted, not finished, and no longer running: killed, preempted or lost
            out[key] = {"state": "failed", **info}
    return out


def _alive(entry: dict) -> bool:
    """Whether a recorded job still runs: a local job's process exists; a Slurm job is queued or running."""
    job_id = str(entry.get("job_id", ""))
    if not job_id:
        return False
    if entry.get("kind") == "local":  # a local job is named by its process id
        if not job_id.isdigit():
            return False
        try:
            os.kill(int(job_id), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    import shutil
    import subprocess

    if shutil.which("sacct") is None:
        return False
    try:
        out = subprocess.run(["sacct", "-n", "-X", "-o", "State", "-j", job_id], capture_output=True, text=True,
                             timeout=30).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return any(s in out for s in ("PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED"))
