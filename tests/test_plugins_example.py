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

    from latbot.policy import load_policy

    policy = load_policy(out / "ft")
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


def test_the_example_stage_works_with_every_command(tmp_path):
    """A third-party stage through validate → show --params → plan → train (killed mid-run) → resume: every
    command asks the stage object, none knows its model's attributes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from latbot import runs
    from latbot.train import checkpoint

    out = tmp_path / "runs"
    recipe = tmp_path / "curve.yaml"
    recipe.write_text(
        "stage: curve_fit\nmodel: {width: 3, samples: 64}\n"
        "train: {steps: 1500, global_batch_size: 8, micro_batch_size: 8, lr: 0.05, warmup_steps: 0, min_lr: 0.05, "
        "grad_clip: null, precision: fp32, checkpoint_every: 10}\n"
        f"data: {{num_workers: 0}}\nlog: {{out_dir: {out}, run_name: fit, progress: false, tensorboard: false, "
        "every_steps: 1}\n"
    )
    schema = json.loads(cli("recipe", "schema", "--stage", "curve_fit"))
    assert set(schema["$defs"]["CurveFitModel"]["properties"]) == {"width", "samples"}
    assert "ok:" in cli("recipe", "validate", recipe)
    bad = cli_fails("recipe", "validate", recipe, "--set", "model.samples=4")
    assert "model.samples (4) is smaller than train.micro_batch_size (8)" in bad  # the stage's own validate()
    params = json.loads(cli("recipe", "show", recipe, "--params", "--json"))
    assert params["total"] == {"total": 4, "trainable": 4, "frozen": 0}  # Linear(3, 1)
    assert params["components"] == {"lin": {"total": 4, "trainable": 4, "frozen": 0}}
    plan = json.loads(cli("plan", recipe, "--gpus", "1", "--json"))
    assert plan["recipe_stage"] == "curve_fit" and plan["params"]["total"] == 4
    assert plan["flops"]["forward_per_sample"] == 2 * 3  # one multiply-add per weight
    assert not out.exists()  # validate, show and plan write nothing

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "latbot", "train", str(recipe)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    run = out / "fit"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").is_file() else []
        if len(lines) >= 25:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    stopped = checkpoint.latest(run)
    assert stopped is not None and not runs.open_run(run, complete=False).complete, "killed after a checkpoint"
    resumed = subprocess.run([sys.executable, "-m", "latbot", "train", "--resume", str(run)], env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    done = runs.open_run(run, "curve_fit")
    assert done.complete and abs(done.extra["weight"] - 3) < 0.1
    model, stage = runs.trained_model(run)  # read back through its stage
    assert (
        type(stage).__name__ == "CurveFitStage"
        and abs(float(model.lin.weight[0, 0].detach()) - done.extra["weight"]) < 1e-6
    )


def cli_fails(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, (args, result.output, result.exception)
    return result.output
