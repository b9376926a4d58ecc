"""The example plugin package (plugins/latbot-example-plugin) covers every plugin kind, and its plugins
alone carry the whole pipeline: `data convert` (npz_episodes adapter, dot embodiment) and `gen-sim`
(dot_reach simulator and its scripted expert) → `train` lam (tiny_conv + tiny_mlp) → distill (tiny_cnn)
→ finetune (tiny_cnn + mlp_head) → `eval sim` → `serve`, plus its own stage (curve_fit)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from latbot import registry
from latbot.cli import app
from latbot.testing.contracts import check
from tests.conftest import REPO

DIST = "latbot-example-plugin"
EXAMPLE = {
    "encoders": "tiny_conv",
    "decoders": "tiny_mlp",
    "students": "tiny_cnn",
    "action_experts": "mlp_head",
    "datasets": "npz_episodes",
    "simulators": "dot_reach",
    "embodiments": "dot",
    "stages": "curve_fit",
}
runner = CliRunner()


def cli(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.stdout


def test_the_example_plugin_registers_one_plugin_of_every_kind():
    assert set(EXAMPLE) == set(registry.KINDS)
    for kind, name in EXAMPLE.items():
        assert registry.entry(kind, name).distribution == DIST, (kind, name)


@pytest.mark.parametrize(("kind", "name"), EXAMPLE.items())
def test_the_example_plugins_pass_their_contracts(kind, name):
    report = check(kind, name)
    assert report.ok, "\n".join(map(str, report.failures))
    assert not report.skipped, report.skipped  # every rule of the kind runs (tiny_task, sample_source, tiny_recipe)


def test_the_example_plugins_alone_carry_the_pipeline(tmp_path):
    from latbot import runs
    from latbot.data.store import EpisodeStore
    from latbot.serve.client import PolicyClient
    from latbot.serve.server import PolicyServer

    cls = registry.get("datasets", "npz_episodes")
    source = cls.sample_source(tmp_path / "npz", episodes=3, steps=12)
    converted, demos, out = tmp_path / "converted", tmp_path / "demos", tmp_path / "runs"
    assert "3 episode(s) added" in cli("data", "convert", source, "--format", "npz_episodes", "-o", converted,
                                      "--image-size", "64")  # fmt: skip
    tasks = "reach-red,reach-blue"
    assert "8 episode(s) added" in cli(
        "data", "gen-sim", "--sim", "dot_reach", "--tasks", tasks, "--episodes", "4", "-o", demos, "--image-size", "64"
    )
    with EpisodeStore.open(demos) as s:
        assert {r.embodiment for r in s.records} == {"dot"} and s.records[0].subtasks

    common = [f"log.out_dir={out}", "log.progress=false", "log.tensorboard=false", "train.checkpoint_every=50"]
    sets = lambda *extra: [x for s in (*common, *extra) for x in ("--set", s)]  # noqa: E731
    both = f"data.sources=[{{store: {demos}}}, {{store: {converted}}}]"
    cli("train", REPO / "recipes/examples/lam_example_plugin.yaml",
        *sets("log.run_name=lam", both, "train.steps=6", "train.micro_batch_size=8"))  # fmt: skip
    demo_only = f"data.sources=[{{store: {demos}}}]"
    cli("train", REPO / "recipes/examples/distill_example_plugin.yaml",
        *sets("log.run_name=distill", demo_only, f"model.teacher={out / 'lam'}", "train.steps=6"))  # fmt: skip
    cli("train", REPO / "recipes/examples/finetune_example_plugin.yaml",
        *sets("log.run_name=ft", demo_only, f"model.student_checkpoint={out}/distill", "train.steps=10"))  # fmt: skip

    # nothing built-in in the models: every plugin slot of every run is the example plugin's
    recipes = {name: runs.open_run(out / name).manifest.recipe["model"] for name in ("lam", "distill", "ft")}
    slots = [recipes["lam"]["encoder"], recipes["lam"]["decoder"], recipes["distill"]["student"],
             recipes["ft"]["student"], recipes["ft"]["action_expert"]]  # fmt: skip
    assert {s["type"] for s in slots} == {"tiny_conv", "tiny_mlp", "tiny_cnn", "mlp_head"}

    report = json.loads(cli("eval", "sim", "--sim", "dot_reach", "--policy", out / "ft", "--tasks", tasks,
                            "--episodes", "2", "--image-size", "64", "--json"))  # fmt: skip
    assert report["embodiment"] == "dot" and report["overall"]["episodes"] == 4 and report["overall"]["errors"] == 0

    policy = runs.load_policy(out / "ft")
    observation = {"images": {"top": np.zeros((64, 64, 3), np.uint8)}, "state": np.array([0.5, 0.5], np.float32),
                   "instruction": "move the dot onto the red square"}  # fmt: skip
    with PolicyServer(policy, port=0) as server, PolicyClient(port=server.port) as client:
        actions = client.predict(observation)
    assert actions.shape == (4, 2) and np.abs(actions).max() <= 1  # (H, A) native dot commands
    np.testing.assert_allclose(actions, policy.predict(observation), atol=1e-6)


def test_the_example_stage_trains_through_the_cli(tmp_path):
    recipe = tmp_path / "curve.yaml"
    recipe.write_text(
        "stage: curve_fit\n"
        "train: {steps: 150, global_batch_size: 8, micro_batch_size: 8, lr: 0.1, warmup_steps: 0, min_lr: 0.01, "
        "grad_clip: null, precision: fp32}\n"
        f"log: {{out_dir: {tmp_path / 'runs'}, run_name: fit, progress: false, tensorboard: false}}\n"
    )
    cli("train", recipe)
    from latbot import runs

    assert abs(runs.open_run(tmp_path / "runs" / "fit").extra["weight"] - 3) < 0.5
