"""`latbot export RUN --format lerobot`: the exported checkpoint, loaded by LeRobot 0.6.1's own code
(tools/lerobot_export_check/check.py, recorded in tests/fixtures/lerobot_export/), predicts what LatBotPolicy
predicts for the same observations and noise; runs LeRobot's PI05Policy cannot reproduce are refused.

The tiny run is rebuilt here (tools/lerobot_export_check/tiny_run.py: deterministic, no data, no training)
and exported again; the files must equal the committed checkpoint LeRobot was run on, so the comparison
below is between this code's export and LeRobot's recorded outputs. No LeRobot is needed."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "lerobot_export"
TOL = 1e-4  # fp32, the same network run by two implementations
runner = CliRunner()


def _tiny_run():
    spec = importlib.util.spec_from_file_location(
        "lerobot_export_tiny_run", REPO / "tools/lerobot_export_check/tiny_run.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export(run, out, *args):
    from latbot.cli import app

    return runner.invoke(app, ["export", str(run), "--format", "lerobot", "--out", str(out), *args])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    mod = _tiny_run()
    root = tmp_path_factory.mktemp("export")
    run = mod.make_run(root)
    out = root / "lerobot"
    result = export(run, out)
    assert result.exit_code == 0, result.output + result.stderr
    return mod, run, out


def test_the_export_is_the_checkpoint_lerobot_ran(tiny):
    import torch
    from safetensors.torch import load_file

    mod, _, out = tiny
    committed = FIXTURE / "checkpoint"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in committed.iterdir())
    for name in ("model.safetensors", "policy_preprocessor_step_3_normalizer_processor.safetensors",
                 "policy_postprocessor_step_0_unnormalizer_processor.safetensors"):  # fmt: skip
        ours, theirs = load_file(str(out / name)), load_file(str(committed / name))
        assert ours.keys() == theirs.keys(), name
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), f"{name} differs: rerun check.py"
    for name in ("config.json", "policy_postprocessor.json", "policy_preprocessor.json", "latbot_export.json"):
        ours, theirs = json.loads((out / name).read_text()), json.loads((committed / name).read_text())
        if name == "policy_preprocessor.json":
            assert ours["steps"][5]["config"].pop("tokenizer_name") == str((out / "tokenizer").resolve())
            theirs["steps"][5]["config"].pop("tokenizer_name")
        if name == "latbot_export.json":
            assert ours.pop("source_run") == str(tiny[1]) and theirs.pop("source_run") == mod.SOURCE_RUN
        assert ours == theirs, name


def test_lerobot_and_latbot_predict_the_same_actions(tiny):
    """LeRobot's preprocessor → PI05Policy(noise) → postprocessor, recorded, against LatBotPolicy.predict with
    the seed whose noise LeRobot was given: the normalised chunk (every exported dim, grippers included), the
    native actions, the prompts and their tokens."""
    import torch
    from safetensors.torch import load_file

    from latbot.models.pi05.student import TEXT, pi05_prompt
    from latbot.policy import LatBotPolicy, embodiments

    mod, run, out = tiny
    record = json.loads((out / "latbot_export.json").read_text())
    inputs, lerobot = load_file(str(FIXTURE / "inputs.safetensors")), load_file(str(FIXTURE / "crosscheck.safetensors"))
    prompts = json.loads((FIXTURE / "crosscheck.json").read_text())["prompts"]
    policy = LatBotPolicy.from_checkpoint(run)
    emb = embodiments.get(policy.embodiment)
    dims = [d["unified"] for d in record["action"]]
    grip = [j for j, d in enumerate(record["action"]) if "gripper" in d]
    cont = [j for j in range(len(dims)) if j not in grip]
    slots = torch.tensor(record["action_slots"])
    diffs = {"normalized": 0.0, "native": 0.0}
    for i, (obs, seed) in enumerate(zip(mod.observations(), mod.SEEDS, strict=True)):
        assert np.array_equal(obs["state"], inputs["state"][i].numpy()) and seed == int(inputs["seeds"][i])
        assert all(np.array_equal(obs["images"][c], inputs[f"images.{c}"][i].numpy()) for c in policy.cameras)
        p = policy.model.expert.config.action_dim
        assert torch.equal(mod.latbot_noise(seed, p)[:, slots], inputs["noise"][i])  # torch's generator unchanged

        # what predict_unified hands the model, and the normalised chunk it samples
        frames, native_state, instruction = policy.check(obs)
        state = policy.state_norm.normalize(emb.state_to_unified(native_state)).astype(np.float32)
        valid = state[policy.state_mask]
        assert pi05_prompt(instruction, valid) == prompts[i]
        seq = policy.model.student.batch(torch.zeros(1, 1, 3, 8, 8), [instruction], [valid])
        ids = seq["ids"][0][seq["slots"][0] == TEXT]
        assert torch.equal(ids, lerobot["tokens"][i][lerobot["token_mask"][i]])
        x = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))[None]
        normalized, _ = policy.model.sample(
            x, [instruction], torch.from_numpy(state)[None],
            torch.from_numpy(policy.state_mask.astype(np.float32))[None], torch.from_numpy(policy.action_mask)[None],
            torch.Generator().manual_seed(seed),
        )  # fmt: skip
        diff = (normalized[0][:, dims] - lerobot["normalized"][i]).abs().max()
        diffs["normalized"] = max(diffs["normalized"], float(diff))

        # end to end, native units: continuous dims equal, grippers LatBot's command where LeRobot's value lies
        native = policy.predict(obs, seed=seed)
        theirs = lerobot["actions"][i].numpy()
        diffs["native"] = max(diffs["native"], float(np.abs(native[:, cont] - theirs[:, cont]).max()))
        for j in grip:
            lo, hi = record["action"][j]["gripper"]
            np.testing.assert_array_equal(native[:, j], np.where(theirs[:, j] > (lo + hi) / 2, hi, lo))
    print(f"max |LatBot − LeRobot|: normalised chunk {diffs['normalized']:.2e}, native actions {diffs['native']:.2e}")
    assert diffs["normalized"] <= TOL and diffs["native"] <= TOL, diffs


def test_the_statistics_reproduce_latbots_normalisation(tiny):
    """LeRobot's quantile formula with the exported q01/q99 on native values = LatBot's on unified values."""
    from safetensors.torch import load_file

    from latbot.policy import LatBotPolicy, embodiments

    _, run, out = tiny
    policy = LatBotPolicy.from_checkpoint(run)
    emb = embodiments.get(policy.embodiment)
    stats = load_file(str(out / "policy_preprocessor_step_3_normalizer_processor.safetensors"))
    native = np.random.default_rng(0).uniform(0, 1, (32, emb.native_state_dim)).astype(np.float32)
    ours = policy.state_norm.normalize(emb.states_to_unified(native))[:, policy.state_mask]
    q01, q99 = stats["observation.state.q01"].numpy(), stats["observation.state.q99"].numpy()
    np.testing.assert_allclose(2 * (native - q01) / (q99 - q01) - 1, ours, atol=1e-5)
    # actions: LeRobot's unnormaliser on its normalised output vs LatBotPolicy's path from the same values
    record = json.loads((out / "latbot_export.json").read_text())
    y = np.random.default_rng(1).uniform(-1, 1, (32, emb.native_action_dim))  # slot j = exported dim j
    a01, a99 = stats["action.q01"].numpy(), stats["action.q99"].numpy()
    theirs = (y + 1) * (a99 - a01) / 2 + a01
    normalized = np.zeros((32, len(policy.action_mask)))
    for j, d in enumerate(record["action"]):
        normalized[:, d["unified"]] = y[:, j]
    unified = policy.action_norm.unnormalize(normalized)
    for j, d in enumerate(record["action"]):
        if "gripper" in d:  # LatBot: (x + 1) / 2 > 0.5, the middle of the normalised range
            unified[:, d["unified"]] = y[:, j] > 0
    unified[:, ~policy.action_mask] = 0
    expected = emb.actions_to_native(unified.astype(np.float32))
    for j, d in enumerate(record["action"]):
        if "gripper" in d:
            np.testing.assert_array_equal(np.where(theirs[:, j] > d["threshold"], *d["gripper"][::-1]), expected[:, j])
        else:
            np.testing.assert_allclose(theirs[:, j], expected[:, j], atol=1e-5)


REFUSED = {
    "flow": (dict(recipe="finetune.yaml"),
             "student 'paligemma' with action expert 'flow': only pi0.5 policies have a LeRobot counterpart"),
    "queries": (dict(sets=("model.student.num_scene_tokens=2", "model.student.num_motion_tokens=2")),
                "4 distilled latent query tokens"),
    "continuous": (dict(sets=("model.action_expert.state=continuous",)), "continuous token"),
    "no_state": (dict(sets=("model.action_expert.state=none",)), "trained without the state"),
}  # fmt: skip


@pytest.mark.parametrize("variant", sorted(REFUSED))
def test_refused_runs_exit_2_in_one_line_and_write_nothing(tmp_path, variant):
    kwargs, message = REFUSED[variant]
    run = _tiny_run().make_run(tmp_path, variant, weights=False, **kwargs)
    out = tmp_path / "out"
    result = export(run, out)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert lines[0].startswith("error: ") and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_a_nonlinear_embodiment_is_refused_natively_and_exported_in_the_unified_space(tmp_path):
    """LIBERO's Franka: rotations are axis-angle natively (Euler in the unified space) and the state holds a
    quaternion: no per-dimension q01/q99 reproduces that. --space unified carries the unified dims as they are."""
    import torch
    from safetensors.torch import load_file

    mod = _tiny_run()
    run = mod.make_run(tmp_path, "franka", embodiment="franka_panda")
    result = export(run, tmp_path / "native")
    assert result.exit_code == 2 and "export with --space unified" in result.stderr, result.stderr
    assert "native state[3] moves" in result.stderr and not (tmp_path / "native").exists()
    out = tmp_path / "unified"
    result = export(run, out, "--space", "unified")
    assert result.exit_code == 0, result.stderr
    record = json.loads((out / "latbot_export.json").read_text())
    names = [*(f"right_pos[{i}]" for i in range(3)), *(f"right_quat[{i}]" for i in range(4)), "right_gripper"]
    assert [d["name"] for d in record["state"]] == names
    assert record["action"][-1] == {"unified": 13, "name": "right_gripper", "gripper": [0.0, 1.0], "threshold": 0.5}
    config = json.loads((out / "config.json").read_text())
    assert config["input_features"]["observation.state"]["shape"] == [8]
    assert config["output_features"]["action"]["shape"] == [7]
    stats = load_file(str(out / "policy_postprocessor_step_0_unnormalizer_processor.safetensors"))
    target = mod.target("franka_panda")["stats"]["actions"]
    q01 = [target["q01"][d["unified"]] for d in record["action"][:-1]] + [0.0]
    assert torch.allclose(stats["action.q01"], torch.tensor(q01))


def test_the_output_folder_must_be_new_or_empty(tiny, tmp_path):
    _, run, _ = tiny
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    result = export(run, tmp_path / "taken")
    assert result.exit_code == 2 and "holds files LatBot did not write" in result.stderr
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["notes.txt"]
    result = export(run, run / "lerobot")  # inside the run: its hash would no longer match
    assert result.exit_code == 2 and "lies inside the 'finetune' artifact" in result.stderr
    (tmp_path / "empty").mkdir()
    assert export(run, tmp_path / "empty").exit_code == 0
    assert (tmp_path / "empty" / "model.safetensors").is_file()


def test_action_slots_follow_the_exported_order(tiny):
    """An embodiment whose native action lists the unified dims in another order: LeRobot's slot j must be
    the j-th native dim, so the expert's projections are permuted (the built-in robots need no permutation)."""
    import torch

    from latbot import runs
    from latbot.interop.lerobot_policy import Dim, _tensors

    _, run, _ = tiny
    r = runs.open_run(run)
    weights = r.state_dict()
    mask = np.asarray(r.extra["target"]["action_mask"], bool)  # sawyer: unified 7, 8, 9, 13 in slots 0 … 3
    action = [Dim(13, "right_gripper", gripper=(-1.0, 1.0)), Dim(7, "x"), Dim(8, "y"), Dim(9, "z")]
    tensors, slots, _ = _tensors(weights, action, mask, str(run))
    assert slots == [3, 0, 1, 2, *range(4, 32)]
    x, h = torch.randn(5, 32), torch.randn(5, 16)
    w_in, w_out, b_out = (weights[f"expert.action_{k}"] for k in ("in_proj.weight", "out_proj.weight", "out_proj.bias"))
    lr_in, lr_out, lr_b = (tensors[f"model.action_{k}"] for k in ("in_proj.weight", "out_proj.weight", "out_proj.bias"))
    torch.testing.assert_close(x[:, slots] @ lr_in.T, x @ w_in.T)  # LeRobot's input = LatBot's, slots permuted
    torch.testing.assert_close(h @ lr_out.T + lr_b, (h @ w_out.T + b_out)[:, slots])
