"""`latbot study --launcher local`: every step's jobs go through submitit's local executor (real subprocesses);
a job killed mid-way fails the study with one line naming its cell and log, `--status` shows it, and the rerun
resubmits only what is missing (the killed cell's unfinished run is trained again) and finishes the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from latbot.cluster.launcher import Launcher, LaunchError
from latbot.study import resolve_launcher
from tests.conftest import REPO

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl"}
QUICK = [f"{REPO}/recipes/quickstart/{name}.yaml" for name in ("lam", "distill", "finetune", "baseline")]
TINY = ["train.warmup_steps=1", "log.progress=false"]
KILLED = "pi05/s1/d2"  # its finetuning runs 60 steps: killed once it has logged its first ones


def _study_file(tmp_path: Path) -> Path:
    """The smoke study (tests/test_study.py) at two seeds: 2 variants × 2 seeds × 1 demo count = 4 cells."""
    lam, distill, finetune, baseline = QUICK
    study = {
        "name": "launched",
        "simulator": "metaworld",
        "image_size": 64,
        "pretrain_tasks": ["reach"],
        "pretrain_episodes": 2,
        "heldout_tasks": ["drawer-close"],
        "demos": [2],
        "seeds": [0, 1],
        "eval_episodes": 1,
        "eval_max_steps": 20,
        "baseline": "pi05",
        "primary": {"variant": "latbot", "demos": 2},
        "probe_samples": 8,
        "reconstruction_samples": 2,
        "variants": {
            "latbot": {
                "lam": lam,
                "distill": distill,
                "finetune": finetune,
                "sets": {
                    "lam": ["train.steps=4", "train.checkpoint_every=4", *TINY],
                    "distill": ["train.steps=3", "train.checkpoint_every=3", *TINY],
                    "finetune": ["train.steps=3", "train.checkpoint_every=3", *TINY],
                },
            },
            "pi05": {
                "finetune": baseline,
                "sets": {"finetune": ["train.steps=60", "train.checkpoint_every=60", *TINY]},
            },
        },
    }
    path = tmp_path / "launched.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def _latbot(*args: str) -> list[str]:
    return [sys.executable, "-m", "latbot", "study", *args]


def _record(out: Path, step: str) -> dict:
    path = out / ".jobs" / step / "jobs.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _status(study: Path, out: Path) -> dict[tuple[str, str], list[str]]:
    done = subprocess.run(_latbot(str(study), "--out", str(out), "--status"), capture_output=True, text=True,
                          env=ENV, cwd=REPO, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return {(w[0], w[1]): w[2:] for w in (line.split() for line in done.stdout.splitlines())}


def _kill_when_training(proc: subprocess.Popen, out: Path, timeout: float = 300) -> dict:
    """SIGKILL the finetuning job of KILLED (the job's controller and its task process: the whole job) once
    its run has logged metrics; returns its record."""
    import psutil

    metrics = out / KILLED / "ft" / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the study ended before the job could be killed"
        entry = _record(out, "finetune").get(KILLED)
        if entry and metrics.exists():
            job = psutil.Process(int(entry["job_id"]))  # a local job's id: its controller's process id
            for p in [*job.children(recursive=True), job]:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            return entry
        time.sleep(0.02)
    raise AssertionError(f"{KILLED}'s finetuning never logged its metrics")


def test_study_runs_through_the_local_launcher_and_resubmits_only_the_killed_job(tmp_path):
    from latbot import runs

    study, out = _study_file(tmp_path), tmp_path / "out"
    cmd = _latbot(str(study), "--out", str(out), "--launcher", "local", "--parallelism", "4", "--cpus-per-job", "1")
    with open(tmp_path / "first.out", "w") as stdout, open(tmp_path / "first.err", "w") as stderr:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=ENV, cwd=REPO)
        try:
            killed = _kill_when_training(proc, out)
            assert proc.wait(timeout=300) != 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert not runs.open_run(out / KILLED / "ft", complete=False).complete  # killed mid-way, not after
    errors = [line for line in (tmp_path / "first.err").read_text().splitlines() if line.startswith("error:")]
    assert len(errors) == 1, (tmp_path / "first.err").read_text()[-3000:]
    assert errors[0].startswith("error: finetune: 1 of 4 job(s) failed"), errors[0]
    assert f"{KILLED} (job {killed['job_id']}, log {killed['stderr']}): it ended without a result" in errors[0]
    first = _record(out, "finetune")

    state = _status(study, out)
    assert state[("finetune", KILLED)] == ["failed", "job", killed["job_id"], "log", killed["stderr"]]
    others = [k for k in state if k[0] in ("stores", "pretrain", "finetune") and k != ("finetune", KILLED)]
    assert len(others) == 3 + 2 + 3 and all(state[k][0] == "done" for k in others), state
    assert all(state[k] == ["pending"] for k in state if k[0] in ("evaluate", "probes")), state

    second = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "] finetune: 1 job(s) to local, 3 already done" in second.stdout
    assert "] stores: " not in second.stdout and "] pretrain: " not in second.stdout  # nothing submitted
    assert "] evaluate: 4 job(s) to local" in second.stdout and "] probes: 2 job(s) to local" in second.stdout
    again = _record(out, "finetune")
    assert again[KILLED]["job_id"] != killed["job_id"] and again[KILLED]["state"] == "COMPLETED"
    assert {k: v for k, v in again.items() if k != KILLED} == {k: v for k, v in first.items() if k != KILLED}
    assert f"{KILLED}/ft: training (finetune, 60 steps)" in Path(again[KILLED]["stdout"]).read_text()
    assert runs.open_run(out / KILLED / "ft").complete

    report = json.loads((out / "report" / "report.json").read_text())
    assert {(c["variant"], c["seed"]) for c in report["cells"]} == {(v, s) for v in ("latbot", "pi05") for s in (0, 1)}
    assert set(report["probes"]["latbot"]) == {"s0", "s1"}
    assert all(value[0] == "done" for value in _status(study, out).values())


def test_the_command_line_overrides_the_study_files_launcher(tmp_path):
    from latbot.study import load_study

    path = _study_file(tmp_path)
    assert load_study(path).launcher is None
    path.write_text(path.read_text() + "launcher: {kind: slurm, partition: gpu, time_min: 30}\n")
    assert load_study(path).launcher == Launcher(kind="slurm", partition="gpu", time_min=30)
    assert resolve_launcher(None, {"kind": None, "partition": None}) is None  # no launcher: workers, as before
    local = resolve_launcher(None, {"kind": "local", "parallelism": 3})
    assert local == Launcher(kind="local", parallelism=3)
    block = Launcher(kind="slurm", partition="gpu", time_min=30)
    assert resolve_launcher(block, {"time_min": 90}) == Launcher(kind="slurm", partition="gpu", time_min=90)
    assert resolve_launcher(block, {"kind": "local"}).partition == "gpu"
    with pytest.raises(LaunchError, match="--partition needs --launcher"):
        resolve_launcher(None, {"partition": "gpu"})
    with pytest.raises(LaunchError, match="--launcher"):
        resolve_launcher(None, {"kind": "cloud"})
