"""`latbot study`: the grid runs through the real pipeline, resumes by skipping finished cells, and its
aggregation (Wilson per cell, hierarchical bootstrap over seeds, paired differences) says what it should."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from latbot.study import Study, load_study
from latbot.study.action_stream import is_action_stream_study, load_action_stream_study
from latbot.study.report import aggregate
from tests.conftest import REPO

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl"}


def _evaluation(task_successes: dict[str, list[int]]) -> dict:
    return {
        "episodes": [{"task": t, "success": bool(x), "error": None} for t, xs in task_successes.items() for x in xs]
    }


def _study(**update) -> Study:
    base = {
        "name": "t",
        "pretrain_tasks": ["reach"],
        "pretrain_episodes": 1,
        "heldout_tasks": ["a", "b"],
        "demos": [5],
        "seeds": [0, 1, 2],
        "eval_episodes": 10,
        "baseline": "base",
        "primary": {"variant": "ours", "demos": 5},
        "variants": {
            "ours": {"lam": "x.yaml", "distill": "y.yaml", "finetune": "z.yaml"},
            "base": {"finetune": "z.yaml"},
        },
    }
    return Study.model_validate(base | update)


def test_aggregation_pools_seeds_and_pairs_variants():
    study = _study()
    evaluations = {}
    for s in study.seeds:
        evaluations[f"ours/s{s}/d5"] = _evaluation({"a": [1] * 9 + [0], "b": [1] * 8 + [0] * 2})
        evaluations[f"base/s{s}/d5"] = _evaluation({"a": [1] * 3 + [0] * 7, "b": [0] * 10})
    probes = {f"ours/s{s}": {"probe_r2": {"z_mot": 0.6, "z_sce": 0.4, "random": -1.0}} for s in study.seeds}
    r = aggregate(study, evaluations, probes)
    ours, base = r["pooled"]["ours/d5"], r["pooled"]["base/d5"]
    assert ours["mean"] == pytest.approx(0.85) and base["mean"] == pytest.approx(0.15)  # tasks weigh the same
    assert ours["ci95"][0] <= ours["mean"] <= ours["ci95"][1]
    diff = r["paired_differences"]["ours/d5"]
    assert diff["mean"] == pytest.approx(0.70) and diff["ci95"][0] > 0.4 and diff["primary"]
    assert not diff["above_zero"] and diff["claim"] == "no claim: 3 seeds (< 5)"  # 3 seeds never make a claim
    assert diff["p_sign_flip"] == pytest.approx(0.25)  # all 3 differences positive: 2 of the 8 sign flips
    cell = next(c for c in r["cells"] if c["variant"] == "ours" and c["seed"] == 0)
    assert cell["successes"] == 17 and cell["episodes"] == 20 and 0.6 < cell["ci95"][0] < 0.85 < cell["ci95"][1]
    assert r["probe_means"]["ours"]["z_mot_above_z_sce"] == 3


def test_a_difference_that_seeds_disagree_on_is_not_called_significant():
    study = _study()
    rng = np.random.default_rng(0)
    evaluations = {}
    for s in study.seeds:
        for name in ("ours", "base"):
            evaluations[f"{name}/s{s}/d5"] = _evaluation({t: list(rng.integers(0, 2, 10)) for t in ("a", "b")})
    diff = aggregate(study, evaluations, {})["paired_differences"]["ours/d5"]
    assert diff["ci95"][0] < 0 < diff["ci95"][1] and not diff["above_zero"]


def test_study_files_are_checked():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="never be pretrained"):
        _study(pretrain_tasks=["a"])
    with pytest.raises(ValidationError, match="baseline 'nope'"):
        _study(baseline="nope")
    with pytest.raises(ValidationError, match="report_dir"):
        _study(report_dir="../elsewhere")
    with pytest.raises(ValidationError, match="heldout_episodes"):
        _study(heldout_episodes=1, demos=[3, 5])
    with pytest.raises(ValidationError, match="both `lam` and `distill`"):
        _study(variants={"base": {"finetune": "z.yaml", "lam": "x.yaml"}})
    files = sorted((REPO / "recipes/studies").glob("*.yaml"))
    assert {f.stem for f in files} >= {"fewshot_metaworld", "table5_metaworld", "heldout_pilot", "smoke"}
    for path in files:
        if is_action_stream_study(path):  # tests/test_action_stream_study.py
            assert load_action_stream_study(path).lam.is_file()
            continue
        study = load_study(path)
        for v in study.variants.values():
            assert v.finetune.is_file()


def test_smoke_study_runs_the_pipeline_then_resumes_by_skipping(tmp_path):
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "latbot", "study", str(REPO / "recipes/studies/smoke.yaml"), "--out", str(out)]
    first = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=1200)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    report = json.loads((out / "report" / "report.json").read_text())
    assert len(report["cells"]) == 2 and set(report["pooled"]) == {"latbot/d2", "pi05/d2"}
    assert set(report["paired_differences"]) == {"latbot/d2"} and set(report["probes"]["latbot"]) == {"s0"}
    assert all(0.0 <= c["success_rate"] <= 1.0 and c["episodes"] == 2 for c in report["cells"])
    assert (out / "report" / "success_vs_demos.png").stat().st_size > 1000
    md = (out / "report" / "report.md").read_text()
    assert "Paired differences" in md and "reconstructions_latbot.png" in md
    stream = report["action_stream_r2"]["latbot"]  # the LAM's action stream on held-out clips, one value per seed
    assert set(stream) >= {"mean_of_samples", "constant", "frames_frozen", "pixel_motion", "pixel_scene_and_motion"}
    assert all(len(v) == 1 for v in stream.values()) and "pixel ridge: motion" in md
    assert "action stream on held-out clips" in md
    per_slice = report["action_stream_r2_per_slice"]["latbot"]  # the same split by unified slice
    assert "right_pos" in per_slice and "per unified slice" in md
    assert {"mean_of_samples", "constant", "instruction_dropped", "pixel_motion"} <= set(per_slice["right_pos"])
    ground = report["grounding"]["latbot/d2"]["attention_entropy"]  # latbot's finetuned VLM against pi0.5's
    assert len(ground["difference"]["per_seed"]) == 1 and all(0 < v < 10 for v in ground["variant_per_seed"])
    assert "Grounding: each variant" in md and (out / "latbot" / "s0" / "d2" / "grounding.json").is_file()
    quality = report["reconstruction_means"]["latbot"]
    assert quality["copy_psnr_moving_db"] > 0 and -1 <= quality["ssim_moving"] <= 1
    assert (out / "report" / "reconstructions_latbot.png").stat().st_size > 1000
    assert (out / "report" / "finetune_loss.png").stat().st_size > 1000
    assert set(report["training"]["finetune_final_loss"]) == {"latbot/d2", "pi05/d2"}
    assert set(report["training"]["pretrain_final_loss"]["latbot"]) == {"lam_final_loss", "distill_final_loss"}
    # the study's episode limit reaches the simulator: no evaluation episode runs past it
    steps = [
        e["steps"]
        for variant in ("latbot", "pi05")
        for e in json.loads((out / variant / "s0" / "d2" / "eval" / "report.json").read_text())["episodes"]
    ]
    assert max(steps) == 40, steps  # 3-step policies rarely solve drawer-close: some episode hits the limit
    second = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.count("up to date, skipped") >= 2 + 2 + 2 + 2  # stores, LAM + distill, finetunes, evals
    assert "training (" not in second.stdout


def test_five_seeds_that_agree_make_a_claim_and_secondary_comparisons_are_holm_corrected():
    study = _study(
        seeds=[0, 1, 2, 3, 4],
        demos=[5, 10],
        primary={"variant": "ours", "demos": 10},
        variants={
            "ours": {"lam": "x.yaml", "distill": "y.yaml", "finetune": "z.yaml"},
            "other": {"finetune": "z.yaml"},
            "base": {"finetune": "z.yaml"},
        },
    )
    evaluations = {}
    for s in study.seeds:
        for d in study.demos:
            evaluations[f"ours/s{s}/d{d}"] = _evaluation(
                {"a": [1] * (8 + s % 2) + [0] * (2 - s % 2), "b": [1] * 5 + [0] * 5}
            )
            evaluations[f"other/s{s}/d{d}"] = _evaluation(
                {"a": [1] * 3 + [0] * 7, "b": [1] * (2 + s % 3) + [0] * (8 - s % 3)}
            )
            evaluations[f"base/s{s}/d{d}"] = _evaluation({"a": [1] * 3 + [0] * 7, "b": [1] * 2 + [0] * 8})
    r = aggregate(study, evaluations, {})
    pairs = r["paired_differences"]
    primary = pairs["ours/d10"]
    assert r["primary"] == "ours/d10" and primary["primary"] and "p_holm" not in primary
    assert primary["claim"] == "above 0" and primary["above_zero"] and primary["ci95"][0] > 0
    assert primary["p_sign_flip"] == pytest.approx(2 / 32)  # every seed positive: the smallest p 5 seeds allow
    secondary = {k: v for k, v in pairs.items() if not v["primary"]}
    assert set(secondary) == {"ours/d5", "other/d5", "other/d10"}
    raw = sorted((v["p_sign_flip"], k) for k, v in secondary.items())
    assert secondary[raw[0][1]]["p_holm"] == pytest.approx(min(1.0, 3 * raw[0][0]))  # the smallest p times m
    assert all(v["p_holm"] >= v["p_sign_flip"] for v in secondary.values())
    for v in secondary.values():  # the claim of a secondary row comes from its Holm-adjusted t-test p
        assert v["p_t_holm"] >= v["p_t"]
        assert (v["claim"] in ("above 0", "below 0")) == (
            v["p_t_holm"] < 0.05 and not v["ci95"][0] <= 0 <= v["ci95"][1]
        )
    lo, hi = primary["ci95"]
    from scipy import stats as sps

    d = np.asarray(primary["per_seed"])
    half = sps.t.ppf(0.975, 4) * d.std(ddof=1) / np.sqrt(5)
    assert lo == pytest.approx(d.mean() - half) and hi == pytest.approx(d.mean() + half)  # a t-interval over seeds
    assert "bootstrap_ci95" in primary  # the old interval, kept as a labelled secondary view


def test_the_study_file_declares_its_primary_comparison():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"primary: declare the comparison"):
        _study(primary=None)
    with pytest.raises(ValidationError, match=r"primary.variant 'base' must be a variant other than the baseline"):
        _study(primary={"variant": "base", "demos": 5})
    with pytest.raises(ValidationError, match=r"primary.demos \(3\) is not one of demos"):
        _study(primary={"variant": "ours", "demos": 3})
    alone = _study(primary=None, variants={"base": {"finetune": "z.yaml"}})  # a pilot compares nothing
    assert alone.primary is None


def test_a_secondary_interval_that_excludes_zero_alone_makes_no_claim_after_holm():
    """Three secondary rows: one whose 95% t-interval excludes 0 (t-test p ≈ 0.035) next to two nulls. Holm
    multiplies its p by 3, so the report says "includes 0 after Holm", not "above 0"."""
    study = _study(
        seeds=[0, 1, 2, 3, 4],
        primary={"variant": "prim", "demos": 5},
        variants={name: {"finetune": "z.yaml"} for name in ("prim", "lifted", "null1", "null2", "base")},
    )

    def rate(successes: int) -> dict:  # successes of 20 episodes over the two tasks
        a, b = successes // 2, successes - successes // 2
        return _evaluation({"a": [1] * a + [0] * (10 - a), "b": [1] * b + [0] * (10 - b)})

    evaluations = {}
    for s, (lifted, null) in enumerate(zip((12, 13, 10, 12, 11), (11, 9, 10, 11, 9), strict=True)):
        evaluations |= {f"base/s{s}/d5": rate(10), f"prim/s{s}/d5": rate(10), f"lifted/s{s}/d5": rate(lifted)}
        evaluations |= {f"null1/s{s}/d5": rate(null), f"null2/s{s}/d5": rate(20 - null)}
    pairs = aggregate(study, evaluations, {})["paired_differences"]
    lifted = pairs["lifted/d5"]
    assert lifted["ci95"][0] > 0 and lifted["p_t"] < 0.05  # on its own it would read "above 0"
    assert lifted["p_t_holm"] == pytest.approx(3 * lifted["p_t"]) and lifted["p_t_holm"] > 0.05
    assert lifted["claim"] == "includes 0 after Holm" and not lifted["above_zero"]
    assert pairs["null1/d5"]["claim"] == "includes 0" and "p_t_holm" not in pairs["prim/d5"]


def test_seed_level_statistics():
    from latbot.analysis import stats

    mean, _, hi = stats.t_interval([0.1, 0.2, 0.0])
    assert mean == pytest.approx(0.1) and hi - mean == pytest.approx(4.302653 * 0.1 / np.sqrt(3), rel=1e-5)
    assert stats.sign_flip_p([0.1, 0.2, 0.05]) == pytest.approx(0.25)
    assert stats.sign_flip_p([0.1, -0.2, 0.05, 0.3, 0.2]) == pytest.approx(12 / 32)  # |sum| ≥ 0.45 in 12 of 32
    assert stats.holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})
    assert stats.claim(0.1, 0.3, 3).startswith("no claim") and stats.claim(0.1, 0.3, 5) == "above 0"
    assert stats.claim(-0.3, -0.1, 6) == "below 0" and stats.claim(-0.1, 0.2, 6) == "includes 0"
    # a secondary comparison: its interval excludes 0, but the claim needs the Holm-adjusted t-test p too
    assert stats.claim(0.01, 0.2, 5, p_adjusted=0.09) == "includes 0 after Holm"
    assert stats.claim(-0.2, -0.01, 5, p_adjusted=0.03) == "below 0"
    from scipy import stats as sps

    d = [-0.13, -0.25, -0.08, -0.21, -0.08]
    assert stats.t_test_p(d) == pytest.approx(sps.ttest_1samp(d, 0).pvalue)
    *_, hi = stats.t_interval(d)  # p < 0.05 exactly when the 95% interval excludes 0
    assert (stats.t_test_p(d) < 0.05) == (hi < 0) and stats.t_test_p([0.1, -0.1, 0.05]) > 0.05
    assert stats.t_test_p([0.0, 0.0]) == 1.0 and stats.t_test_p([0.1, 0.1]) == 0.0 and np.isnan(stats.t_test_p([1]))


def test_the_interval_check_finds_the_bootstrap_too_narrow_at_three_seeds():
    from latbot.analysis import stats

    design = stats.Design((0.3, 0.5, 0.6, 0.4, 0.7), 0.0, 0.4, 30, 3)
    result = stats.coverage(design, reps=600, boot_draws=400, seed=1)
    t, boot = result["t_interval"], result["hierarchical_bootstrap"]
    assert t["coverage"] >= 0.93 and boot["coverage"] <= 0.90  # nominal 0.95 each
    assert boot["above_zero"] > 2 * max(t["above_zero"], 0.01)  # the old interval calls a null "above 0" more
    assert result["sign_flip_p<0.05"]["rejects"] == 0.0  # with 3 seeds p ≥ 0.25: it cannot


def test_check_intervals_from_the_command_line():
    from typer.testing import CliRunner

    from latbot.cli import app

    result = CliRunner().invoke(app, ["study", str(REPO / "recipes/studies/smoke.yaml"), "--check-intervals"])
    assert result.exit_code == 0, result.output
    assert "t_interval" in result.output and "hierarchical_bootstrap" in result.output
    rows = [line.split() for line in result.output.splitlines() if "t_interval" in line]
    assert {int(r[0]) for r in rows} == {1, 5, 10}  # the study's own seed count, and 5 and 10
    missing = CliRunner().invoke(app, ["study", str(REPO / "recipes/studies/smoke.yaml")])
    assert missing.exit_code == 2 and "--out is required" in missing.output


def test_noisy_pretraining_demonstrations_and_the_clip_stride_reach_the_steps(tmp_path):
    """`pretrain_action_noise` goes to the pretraining store only (few-shot demonstrations stay clean), and
    `lam_frame_stride` to the sources of both the LAM and its distillation (the teacher sees clips as it was
    trained on them); at their defaults the recipes' sets are what they were (finished runs stay valid)."""
    from latbot.recipes import load_recipe
    from latbot.study import _distill_args, _lam_args, _store_args

    study = _study(pretrain_action_noise=0.2, lam_frame_stride=4)
    assert _store_args(study, tmp_path, "pretrain", 0)[-1] == 0.2
    assert _store_args(study, tmp_path, "heldout", 1)[-1] == 0
    pre = tmp_path / "stores" / "pretrain"
    for args in (_lam_args(study, tmp_path, "ours", 0, pre), _distill_args(study, tmp_path, "ours", 0, pre)):
        assert args[3][0] == f"data.sources=[{{store: {pre}, frame_stride: 4}}]"
    recipe = load_recipe(REPO / "recipes/quickstart/lam.yaml", [_lam_args(study, tmp_path, "ours", 0, pre)[3][0]])
    assert recipe.data.sources[0].frame_stride == 4
    plain = _study()
    assert _lam_args(plain, tmp_path, "ours", 0, pre)[3][0] == f"data.sources=[{{store: {pre}}}]"


def test_grounding_is_compared_over_seeds():
    """Each seed's grounding value is the mean over its frames; B − A gets a t-interval and a sign-flip p over
    the seeds, and a statistic that is the same number everywhere is called degenerate."""
    from latbot.study.report import grounding_by_seed

    study = _study(seeds=[0, 1, 2, 3, 4])
    rng = np.random.default_rng(0)
    grounding = {}
    for s in study.seeds:
        a = list(2.7 + rng.normal(0, 0.02, 16))
        grounding[f"ours/s{s}/d5"] = {
            "A": {"attention_entropy": a, "spatial_entropy": [0.0] * 16},
            "B": {"attention_entropy": [v - 0.3 for v in a], "spatial_entropy": [0.0] * 16},
        }
    g = grounding_by_seed(study, grounding)["ours/d5"]
    att = g["attention_entropy"]["difference"]
    assert att["mean"] == pytest.approx(-0.3) and att["ci95"][1] < 0 and att["p_sign_flip"] == pytest.approx(0.0625)
    assert len(att["per_seed"]) == 5 and not g["attention_entropy"]["degenerate"]
    assert g["spatial_entropy"]["degenerate"] and g["spatial_entropy"]["difference"]["mean"] == 0
    assert grounding_by_seed(study, {k: v for k, v in grounding.items() if "/s4/" not in k}) == {}  # a seed missing
    grounding["ours/s2/d5"] = {"error": "TinyCNN has no image_attention"}  # a student that cannot be analysed
    assert grounding_by_seed(study, grounding)["ours/d5"] == {"error": "TinyCNN has no image_attention"}
