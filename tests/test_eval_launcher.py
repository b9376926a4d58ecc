"""`latbot eval sim --launcher local --jobs M`: the (task, episode) list split into M launcher jobs (real
submitit local jobs, real subprocesses) gives the report of one process with the same seeds; a rerun after
a failed job submits only the missing part. On the example plugin's `dot_reach` simulator with a tiny
finetuned policy (64 px, 2 training steps)."""

from __future__ import annotations

import json
import tempfile

import pytest
from typer.testing import CliRunner

from latbot.cli import app
from tests.conftest import REPO

runner = CliRunner()
TASKS = "reach-red,reach-blue"


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def cli(*args: object) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result


def evaluation(policy, *extra: object) -> list[object]:
    return ["eval", "sim", "--sim", "dot_reach", "--policy", policy, "--tasks", TASKS, "--episodes", "3",
            "--image-size", "64", *extra]  # fmt: skip


def untimed(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "seconds_per_episode"}


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    """A finetuned dot_reach policy: gen-sim 2 × 2 episodes at 64 px, then 2 finetuning steps."""
    root = tmp_path_factory.mktemp("policy")
    cli("data", "gen-sim", "--sim", "dot_reach", "--tasks", TASKS, "--episodes", "2", "-o", root / "demos",
        "--image-size", "64")  # fmt: skip
    sets = [f"log.out_dir={root / 'runs'}", "log.run_name=ft", "log.progress=false", "log.tensorboard=false",
            f"data.sources=[{{store: {root / 'demos'}}}]", "train.steps=2", "train.checkpoint_every=50"]  # fmt: skip
    cli("train", REPO / "recipes/examples/finetune_example_plugin.yaml", *[x for s in sets for x in ("--set", s)])
    return root / "runs" / "ft"


@pytest.mark.parametrize(("which", "jobs"), [("checkpoint", 2), ("random", 4)])
def test_local_jobs_give_the_single_process_report(policy, which, jobs, tmp_path, monkeypatch):
    """2 jobs: one per task; 4 jobs (1, 2, 1, 2 episodes) cut tasks, and `random` reseeds per episode."""
    spec = str(policy) if which == "checkpoint" else "random"
    single = json.loads(cli(*evaluation(spec, "--json")).stdout)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the job folder goes without --out
    result = cli(*evaluation(spec, "--json", "--launcher", "local", "--jobs", jobs))
    assert f"eval dot_reach: {jobs} job(s) to local" in result.stderr
    split = json.loads(result.stdout)
    assert untimed(split) == untimed(single)
    assert split["overall"]["episodes"] == 6 and [e["seed"] for e in split["episodes"]] == [
        1_000_000, 1_000_001, 1_000_002, 1_010_007, 1_010_008, 1_010_009]  # fmt: skip
    assert split["seconds_per_episode"] > 0
    assert list(tmp_path.iterdir()) == []  # the temporary job folder is removed


def test_a_rerun_resubmits_only_the_failed_part(policy, tmp_path):
    from latbot.artifacts import verify_manifest

    single = json.loads(cli(*evaluation(policy, "--json")).stdout)
    out = tmp_path / "eval"
    blocked = out / ".jobs" / "part_2_of_3.json"  # a folder where job 2 must write its part: it fails there
    blocked.mkdir(parents=True)
    failed = invoke(*evaluation(policy, "--out", out, "--launcher", "local", "--jobs", "3"))
    assert failed.exit_code == 2, failed.output
    assert "eval dot_reach: 3 job(s) to local" in failed.stderr
    assert "1 of 3 job(s) failed" in failed.stderr and "part_2_of_3 (job" in failed.stderr
    assert "IsADirectoryError" in failed.stderr
    assert (out / ".jobs" / "part_1_of_3.json").is_file() and (out / ".jobs" / "part_3_of_3.json").is_file()
    record = json.loads((out / ".jobs" / "jobs.json").read_text())
    assert {k: v["state"] for k, v in record.items()} == {
        "part_1_of_3": "COMPLETED", "part_2_of_3": "FAILED", "part_3_of_3": "COMPLETED"}  # fmt: skip
    assert not (out / "report.json").exists() and not (out / "latbot.json").exists()
    ranges = [json.loads((out / ".jobs" / f"part_{i}_of_3.json").read_text())["identity"]["range"] for i in (1, 3)]
    assert ranges == [[0, 2], [4, 6]]  # part 2 is episodes 2..3: the last of reach-red, the first of reach-blue

    blocked.rmdir()
    rerun = cli(*evaluation(policy, "--out", out, "--launcher", "local", "--jobs", "3", "--json"))
    assert "eval dot_reach: 1 job(s) to local, 2 already done" in rerun.stderr
    report = json.loads((out / "report.json").read_text())
    assert untimed(report) == untimed(single) == untimed(json.loads(rerun.stdout))
    assert not (out / ".jobs").exists()  # merged into the report, never part of the artifact
    assert verify_manifest(out, "eval").extra["settings"]["tasks"] == ["reach-red", "reach-blue"]


def test_a_part_of_other_settings_is_not_reused(tmp_path):
    from latbot.sim.evaluate import read_part, run_part

    identity = {"episodes": [["reach-red", 5]], "image_size": 64}
    part = {"identity": identity, "file": str(tmp_path / "part_1_of_1.json"), "allow_crashes": False}
    episode = {"task": "reach-red", "seed": 5, "success": True, "steps": 3, "error": None, "video": None}
    (tmp_path / "part_1_of_1.json").write_text(json.dumps({"identity": identity, "episodes": [episode], "seconds": 1}))
    assert run_part(part)["episodes"] == [episode]  # done: returned as it is, nothing evaluated
    assert read_part({**part, "identity": {**identity, "image_size": 32}}) is None  # other settings
    assert read_part({**part, "identity": {**identity, "episodes": [["reach-red", 6]]}}) is None  # other seeds
    crashed = {**episode, "error": "RuntimeError: boom"}
    (tmp_path / "part_1_of_1.json").write_text(json.dumps({"identity": identity, "episodes": [crashed], "seconds": 1}))
    assert read_part(part) is None  # a crash is evaluated again unless crashes are allowed
    assert read_part({**part, "allow_crashes": True}) is not None


def test_launcher_options_are_checked_before_anything_runs(tmp_path):
    result = invoke(*evaluation("random", "--jobs", "2"))
    assert result.exit_code == 2 and "--jobs need(s) --launcher" in result.stderr
    result = invoke(*evaluation("random", "--launcher", "slurm"))
    assert result.exit_code == 2 and "--launcher slurm needs --out" in result.stderr
    result = invoke(*evaluation("random", "--launcher", "cloud"))
    assert result.exit_code == 2 and "expected 'local' or 'slurm'" in result.stderr
    (tmp_path / "eval" / ".jobs").mkdir(parents=True)
    (tmp_path / "eval" / ".jobs" / "notes.txt").write_text("mine")
    result = invoke(*evaluation("random", "--out", tmp_path / "eval", "--launcher", "local"))
    assert result.exit_code == 2 and "is not a folder of `eval sim --launcher` jobs" in result.stderr
    assert (tmp_path / "eval" / ".jobs" / "notes.txt").read_text() == "mine"
