"""`latbot quickstart --preset smoke`, through the real CLI: SIGKILLed during the LAM stage, rerun — it
resumes the LAM from its checkpoint without recomputing the stores — finishes with every artifact and
report section, and a third run skips every stage."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latbot.quickstart.report import SECTIONS
from tests.conftest import REPO

PRETRAIN = "stores/pretrain_noise0.3"  # the smoke preset's noisy pretraining demonstrations have a store of their own
STAGES = (PRETRAIN, "stores/heldout", "runs/lam", "runs/distill", "runs/ft_distilled", "runs/ft_baseline")


def quickstart(out: Path) -> list[str]:
    return [sys.executable, "-m", "latbot", "quickstart", "--preset", "smoke", "--out", str(out)]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _complete(run: Path) -> bool:
    """A run's manifest exists from its start; it is finished when its status says so."""
    manifest = run / "latbot.json"
    return manifest.exists() and json.loads(manifest.read_text()).get("status") == "complete"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs") / "out"
    proc = subprocess.Popen(quickstart(out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ENV, cwd=REPO)
    latest = out / "runs" / "lam" / "checkpoints" / "latest"
    deadline = time.time() + 600
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    killed = {
        "returncode": proc.returncode,
        "lam_finished": _complete(out / "runs" / "lam"),
        "checkpoint": latest.exists(),
        "stores": {s: (out / s / "latbot.json").read_bytes() for s in STAGES[:2]},
        "mtimes": {s: (out / s / "latbot.json").stat().st_mtime_ns for s in STAGES[:2]},
    }
    second = subprocess.run(quickstart(out), capture_output=True, text=True, env=ENV, cwd=REPO, timeout=900)
    third = subprocess.run(quickstart(out), capture_output=True, text=True, env=ENV, cwd=REPO, timeout=900)
    return {"out": out, "killed": killed, "second": second, "third": third}


def test_sigkill_during_the_lam_then_rerun_resumes_without_recomputing_earlier_stages(runs):
    k, second, out = runs["killed"], runs["second"], runs["out"]
    assert k["returncode"] == -signal.SIGKILL and k["checkpoint"] and not k["lam_finished"]
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    for store in STAGES[:2]:
        assert f"{store}: up to date, skipped" in second.stdout
        assert (out / store / "latbot.json").read_bytes() == k["stores"][store]  # not rewritten
        assert (out / store / "latbot.json").stat().st_mtime_ns == k["mtimes"][store]
    assert "runs/lam: resuming from step_" in second.stdout
    steps = [json.loads(line)["step"] for line in (out / "runs/lam/metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 60 and steps == sorted(steps)  # the resumed run continued to the last step


def test_a_finished_quickstart_skips_every_stage_on_rerun(runs):
    third = runs["third"]
    assert third.returncode == 0, third.stderr[-3000:]
    for stage in (*STAGES, "eval/distilled", "eval/baseline"):
        assert f"{stage}: up to date, skipped" in third.stdout


def _finite(value, where="report.json"):
    if isinstance(value, dict):
        for k, v in value.items():
            _finite(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite(v, f"{where}[{i}]")
    elif isinstance(value, float):
        assert math.isfinite(value), where


def test_every_artifact_and_report_section_exists_with_finite_numbers(runs):
    from PIL import Image

    from latbot.artifacts import read_manifest
    from tests.test_grounding_viz import entities

    out = runs["out"]
    kinds = {"runs/lam": "lam", "runs/distill": "distill", "runs/ft_distilled": "finetune"}
    kinds |= {"runs/ft_baseline": "finetune", "eval/distilled": "eval", "eval/baseline": "eval", "report": "report"}
    for path, kind in kinds.items():
        assert read_manifest(out / path, kind=kind)
    assert read_manifest(out / "cache" / "teacher_latents", kind="teacher_cache")
    assert [p.kind for p in read_manifest(out / "runs/ft_distilled").parents] == ["distill", "episode_store"]
    assert [p.kind for p in read_manifest(out / "runs/ft_baseline").parents] == ["episode_store"]
    report = json.loads((out / "report/report.json").read_text())
    assert set(SECTIONS) <= set(report)
    _finite(report)
    for policy in ("distilled", "baseline"):
        overall = report["success"][policy]["overall"]
        assert overall["episodes"] == 1 and 0.0 <= overall["success_rate"] <= 1.0
    spans = report["stage_times"]  # wall-clock spans: the side-by-side finetunes overlap, the LAM precedes them
    assert all(t["end"] >= t["start"] >= 0 for t in spans.values() if "start" in t)
    assert report["wall_seconds_before_report"] < report["total_seconds_of_stages"]
    md = (out / "report/report.md").read_text()
    assert "**wall time, before this report**" in md
    assert "| slice | mean of 8 draws |" in md and "right_pos" in md  # the action stream per unified slice
    for heading in ("Success on the held-out tasks", "LAM reconstructions", "Latent diagnostics", "Grounding",
                    "Training curves", "Time per stage"):  # fmt: skip
        assert f"## {heading}" in md
    for png in ("success.png", "lam_reconstructions.png", "training_curves.png", "grounding/sample_0000.png"):
        assert Image.open(out / "report" / png).size[0] > 100
        assert png in md
    found = entities(out / "report/episode.rrd")
    assert {"episode_0/camera/corner", "episode_0/policy/actions_predicted/right_pos"} <= found
