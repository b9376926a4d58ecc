"""Pre-registered action-stream studies (`latbot.study.action_stream`; `latbot study` and
`tools/action_stream_study.py` run them): a real
run trains tiny LAMs with `latbot train`, scores their action streams on real stores and reports over seeds;
the statistics are the seed-level ones; bad input stops before anything trains."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import yaml

from latbot.data.convert import finalize
from latbot.data.store import EpisodeStore
from latbot.errors import ArtifactError, RecipeError
from latbot.study.action_stream import ActionStreamStudy, load_action_stream_study, run_study, status, summarise
from tests.conftest import REPO
from tests.test_store import episode


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("action_stream")
    paths = []
    for name, seeds in (("pretrain", range(6)), ("heldout_a", range(10, 13)), ("heldout_b", range(20, 23))):
        with EpisodeStore.create(root / name, cameras=["cam"], image_size=(32, 32)) as s:
            for i in seeds:
                s.append(episode(f"e{i}", steps=14, size=32, seed=i))
            finalize(s)
        paths.append(root / name)
    return paths


def write_study(path, **over):
    data = {
        "name": "tiny_action_stream",
        "lam": str(REPO / "recipes/tiny/lam.yaml"),
        "set": {"train.steps": 2, "train.checkpoint_every": 2, "data.num_workers": 0},
        "seeds": [3, 4],
        "samples": 8,
        "primary": {"slice": "right_pos", "against": "constant"},
        "secondary": [{"slice": "all", "against": "constant"}, {"slice": "right_pos", "against": "frames_frozen"}],
        **over,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_study_trains_one_lam_per_seed_scores_it_on_its_store_and_resumes(stores, tmp_path):
    pretrain, heldout_a, heldout_b = stores
    source, out = write_study(tmp_path / "study.yaml"), tmp_path / "out"
    report = run_study(source, out, pretrain, [heldout_a, heldout_b])
    result = json.loads((out / "report.json").read_text())
    assert result["provenance"]["study_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert result["seeds"] == [3, 4]
    assert [r["role"] for r in result["comparisons"]] == ["primary", "secondary", "secondary"]
    for seed, store in ((3, heldout_a), (4, heldout_b)):
        manifest = json.loads((out / "lams" / f"seed{seed}" / "latbot.json").read_text())
        assert manifest["status"] == "complete" and manifest["recipe"]["train"]["seed"] == seed
        assert manifest["recipe"]["train"]["steps"] == 2
        cached = json.loads((out / "scores" / f"seed{seed}.json").read_text())
        assert cached["key"]["store"] == str(store.resolve())  # seed i is scored on the i-th held-out store
        r2 = cached["action_stream_r2"]
        primary = result["comparisons"][0]["per_seed"][[3, 4].index(seed)]
        assert primary["value"] == r2["per_slice"]["right_pos"]["mean_of_samples"]
        assert primary["reference"] == r2["per_slice"]["right_pos"]["constant"]
        assert primary["difference"] == pytest.approx(primary["value"] - primary["reference"])
        pooled = result["comparisons"][1]["per_seed"][[3, 4].index(seed)]
        assert pooled["value"] == r2["mean_of_samples"] and pooled["reference"] == r2["constant"]
    assert all(r["claim"] == "no claim: 2 seeds (< 5)" for r in result["comparisons"])
    text = report.read_text()
    assert "| primary | right_pos: mean_of_samples − constant |" in text and "`heldout_b`" in text

    # Again: the finished LAMs and the cached scores are kept, not redone.
    stamps = {p: p.stat().st_mtime_ns for p in [*out.glob("lams/*/weights/*"), *out.glob("scores/*.json")]}
    assert len(stamps) >= 4
    run_study(source, out, pretrain, [heldout_a, heldout_b])
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # The file edited after its runs (or another study's --out): refused, nothing overwritten.
    edited = write_study(tmp_path / "edited.yaml", set={"train.steps": 3, "train.checkpoint_every": 3})
    with pytest.raises(ArtifactError, match=r"seed3: not this study's run \(train.steps is 2, the study sets 3"):
        run_study(edited, out, pretrain, [heldout_a, heldout_b])
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # --status reads each seed's run (and writes nothing): trained and scored here; the edited file's view of
    # the same runs is "foreign", with what differs.
    assert [(r["state"], r["step"], r["scored"]) for r in status(source, out)] == [("trained", 2, True)] * 2
    assert {r["state"] for r in status(edited, out)} == {"foreign"}
    assert "train.steps is 2, the study sets 3" in status(edited, out)[0]["detail"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_status_tells_pending_stopped_training_and_failed_runs_apart(stores, tmp_path):
    """An unfinished run is "training" while another process holds its lock and "stopped" otherwise (the next
    `latbot study` resumes it); a run marked failed says why; a seed without a run is "pending"."""
    import shutil

    from typer.testing import CliRunner

    from latbot.cli import app
    from latbot.runs import lock_run

    pretrain, heldout_a, _ = stores
    source, done = write_study(tmp_path / "study.yaml", seeds=[3, 4]), tmp_path / "done"
    run_study(write_study(tmp_path / "one.yaml", seeds=[3, 5]), done, pretrain, [heldout_a, heldout_a])
    out = tmp_path / "out"
    assert [r["state"] for r in status(source, out)] == ["pending", "pending"]
    shutil.copytree(done / "lams" / "seed3", out / "lams" / "seed3")
    manifest = out / "lams" / "seed3" / "latbot.json"
    manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"status": "running"}))
    assert [r["state"] for r in status(source, out)] == ["stopped", "pending"]
    with lock_run(out / "lams" / "seed3"):  # this fd holds the lock; status reads it through another
        row = status(source, out)[0]
        assert row["state"] == "training" and row["step"] == 2 and row["steps"] == 2
    failed = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(failed | {"status": "failed", "extra": {"error": "CUDA out of memory"}}))
    assert status(source, out)[0] | {"run": None} == {
        "seed": 3, "run": None, "state": "failed", "step": 2, "steps": 2, "pid": None, "detail": "CUDA out of memory",
        "scored": False,
    }  # fmt: skip
    shown = CliRunner().invoke(app, ["study", str(source), "--status", "--out", str(out)])
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[0].startswith("seed 3      failed    step 2/2 (CUDA out of memory)")
    assert shown.output.splitlines()[1].startswith("seed 4      pending")


def scores(position: list[float], pooled: list[float], frozen: list[float]) -> dict[int, dict]:
    return {
        seed: {
            "mean_of_samples": p_all, "constant": -0.05,
            "per_slice": {"right_pos": {"mean_of_samples": p, "constant": -0.1, "frames_frozen": p - f}},
        }
        for seed, (p, p_all, f) in enumerate(zip(position, pooled, frozen, strict=True))
    }  # fmt: skip


def study(seeds: int) -> ActionStreamStudy:
    return ActionStreamStudy(
        name="s",
        lam="x.yaml",
        seeds=list(range(seeds)),
        primary={"slice": "right_pos"},
        secondary=[{"slice": "all"}, {"slice": "right_pos", "against": "frames_frozen"}],
    )


def test_the_summary_is_over_seeds_with_an_exact_sign_flip_p_and_holm_on_the_secondary_rows():
    frozen_by = [0.3, 0.5, 0.4, 0.35, 0.45]
    summary = summarise(study(5), scores([0.5, 0.6, 0.4, 0.55, 0.45], [0.1, -0.3, 0.2, -0.1, 0.0], frozen_by))
    primary, pooled, frozen = summary["comparisons"]
    assert primary["mean"] == pytest.approx(0.6) and primary["low"] > 0 and primary["claim"] == "above 0"
    assert primary["p_sign_flip"] == pytest.approx(2 / 32)  # all five positive: the smallest exact p with 5 seeds
    assert primary["p_holm"] is None and primary["above_in"] == 5
    assert pooled["claim"] == "includes 0" and pooled["above_in"] == 3  # a null
    assert pooled["mean"] == pytest.approx(-0.02 + 0.05)
    assert frozen["mean"] == pytest.approx(0.4) and frozen["p_t"] < pooled["p_t"]
    assert frozen["p_holm"] == pytest.approx(2 * frozen["p_t"])  # the smaller of two p's, times 2
    assert pooled["p_holm"] == pytest.approx(pooled["p_t"])  # the larger, times 1
    assert frozen["claim"] == "above 0"
    few = summarise(study(3), scores([0.5, 0.6, 0.4], [0.1, 0.2, 0.3], [0.3, 0.5, 0.4]))
    assert {r["claim"] for r in few["comparisons"]} == {"no claim: 3 seeds (< 5)"}
    assert not math.isnan(few["comparisons"][0]["low"])  # the interval is still shown
    with pytest.raises(RecipeError, match="slice 'left_pos': not among the scored slices \\(right_pos\\)"):
        summarise(study(5).model_copy(update={"primary": study(5).primary.model_copy(update={"slice": "left_pos"})}),
                  scores([0.1] * 5, [0.1] * 5, [0.1] * 5))  # fmt: skip


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"seed": [1, 2]}, "seed"),
        ({"seeds": [1, 1]}, "repeat a seed"),
        ({"seeds": [1]}, "seeds"),
        ({"set": {"train.seed": 3}}, r"\['train.seed'\] are the runner's"),
        ({"primary": {"slice": "right_pos", "against": "mean_of_samples"}}, "the difference is 0"),
        ({"primary": {"slice": "right_pos", "against": "median"}}, "against"),
        ({"lam": "missing.yaml"}, "missing.yaml is not a file"),
    ],
)
def test_a_bad_study_file_is_one_clear_error_naming_the_file(tmp_path, over, message):
    path = write_study(tmp_path / "bad.yaml", **over)
    with pytest.raises(RecipeError, match=message) as err:
        load_action_stream_study(path)
    assert "bad.yaml" in str(err.value)


def test_the_tool_exits_2_on_bad_input_before_training_anything(stores, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("action_stream_study", REPO / "tools/action_stream_study.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    pretrain, heldout_a, _ = stores
    source, out = write_study(tmp_path / "study.yaml"), tmp_path / "out"
    assert tool.main([str(source), "--out", str(out), "--pretrain", str(pretrain), "--heldout", str(heldout_a)]) == 2
    assert "--heldout: 1 store(s) for 2 seeds" in capsys.readouterr().err
    missing = tmp_path / "nowhere"
    assert tool.main([str(source), "--out", str(out), "--pretrain", str(missing), "--heldout", str(heldout_a)]) == 2
    assert f"{missing}: no such episode store" in capsys.readouterr().err
    assert not out.exists()  # nothing half-written


def test_latbot_study_runs_an_action_stream_file_and_refuses_mixed_options(stores, tmp_path):
    from typer.testing import CliRunner

    from latbot.cli import app

    pretrain, heldout_a, heldout_b = stores
    source, out = write_study(tmp_path / "study.yaml", seeds=[0, 1, 2, 3, 4]), tmp_path / "out"
    missing = CliRunner().invoke(app, ["study", str(source), "--out", str(out), "--pretrain", str(pretrain)])
    assert missing.exit_code == 2 and "needs --out, --pretrain and --heldout" in missing.output
    few = ["study", str(source), "--out", str(out), "--pretrain", str(pretrain), "--heldout", str(heldout_a)]
    result = CliRunner().invoke(app, [*few, "--heldout", str(heldout_b)])
    assert result.exit_code == 2 and "--heldout: 2 store(s) for 5 seeds" in result.output
    assert not out.exists()
    intervals = CliRunner().invoke(app, ["study", str(source), "--check-intervals", "--out", str(out)])
    assert intervals.exit_code == 2 and "are for grid studies" in intervals.output
    no_out = CliRunner().invoke(app, ["study", str(source), "--status"])
    assert no_out.exit_code == 2 and "--status needs --out" in no_out.output
    other = REPO / "recipes/studies/smoke.yaml"
    mixed = CliRunner().invoke(app, ["study", str(other), "--out", str(out), "--pretrain", str(pretrain)])
    assert mixed.exit_code == 2 and "for action-stream study files (with `lam:`) only" in mixed.output


def test_the_registered_study_files_load():
    registered = load_action_stream_study(REPO / "recipes/studies/prereg3_action_stream.yaml")
    assert registered.seeds == [5, 6, 7, 8, 9] and registered.primary.slice == "right_pos"
    assert registered.lam == (REPO / "recipes/quickstart/lam.yaml").resolve()
    fourth = load_action_stream_study(REPO / "recipes/studies/prereg4_gripper_holds.yaml")
    assert fourth.seeds == [10, 11, 12, 13, 14] and fourth.primary.slice == "all"
    assert fourth.set == registered.set  # registration 3's LAM; only the pretraining store differs
