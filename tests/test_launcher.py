"""The launcher under every command that runs jobs: finished jobs run here (they verify and return at once),
the rest are submitted (real submitit local executor, real subprocesses), a failed job is named with its log
and is the only one a rerun submits, and `status` reads the record of submissions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from latbot.cluster.launcher import Launcher, LaunchError, run_jobs, status


def square(x: int, out: str) -> int:
    """A job: writes its own output, fails for 3 until `ok` exists."""
    if x == 3 and not (Path(out) / "ok").exists():
        raise RuntimeError("boom on 3")
    (Path(out) / f"{x}.txt").write_text(str(x * x))
    return x * x


def test_jobs_run_fail_by_name_and_only_the_missing_one_is_resubmitted(tmp_path):
    jobs = {f"k{x}": (square, (x, str(tmp_path))) for x in range(5)}
    done = lambda key: (tmp_path / f"{key[1:]}.txt").exists()  # noqa: E731
    said: list[str] = []
    with pytest.raises(
        LaunchError, match=r"1 of 5 job\(s\) failed.*k3 \(job \d+, log .*\.err\): RuntimeError: boom on 3"
    ):
        run_jobs(jobs, Launcher(parallelism=2), tmp_path / "jobs", done=done, say=said.append)
    assert said == ["jobs: 5 job(s) to local"]
    states = status(tmp_path / "jobs", list(jobs), done)
    assert {k: v["state"] for k, v in states.items()} == {"k0": "done", "k1": "done", "k2": "done", "k3": "failed",
                                                          "k4": "done"}  # fmt: skip
    assert Path(states["k3"]["log"]).is_file() and "boom on 3" in Path(states["k3"]["log"]).read_text()
    first_ids = {k: v["job_id"] for k, v in json.loads((tmp_path / "jobs" / "jobs.json").read_text()).items()}

    (tmp_path / "ok").write_text("")
    said.clear()
    results = run_jobs(jobs, Launcher(parallelism=2), tmp_path / "jobs", done=done, say=said.append)
    assert results == {f"k{x}": x * x for x in range(5)} and list(results) == list(jobs)
    assert said == ["jobs: 1 job(s) to local, 4 already done"]
    record = json.loads((tmp_path / "jobs" / "jobs.json").read_text())
    assert [k for k in jobs if record[k]["job_id"] != first_ids[k]] == ["k3"]
    assert {v["state"] for v in record.values()} == {"COMPLETED"}
    assert {v["state"] for v in status(tmp_path / "jobs", list(jobs), done).values()} == {"done"}


def test_slurm_needs_sbatch(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(LaunchError, match=r"no `sbatch` on PATH"):
        run_jobs({"a": (square, (0, str(tmp_path)))}, Launcher(kind="slurm"), tmp_path / "jobs")
