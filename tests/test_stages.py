"""Stages are plugins: a new stage is one module (recipe schema + hooks) and one registration, and then
`latbot train`, `--resume`, `latbot recipe show RUN` and `latbot.runs` work for it unchanged."""

from __future__ import annotations

import json
from typing import Literal

import pytest
import torch
from pydantic import Field
from typer.testing import CliRunner

from latbot import registry, runs, stages
from latbot.cli import app
from latbot.config import Section
from latbot.recipes.schema import RecipeBase
from latbot.stages import Stage

runner = CliRunner()


# -- a whole stage, as a plugin author would write it in one module -------------------------------------------
class ToyModel(Section):
    width: int = Field(4, ge=1)


class ToyRecipe(RecipeBase):
    stage: Literal["toy_regression"]
    model: ToyModel = Field(default_factory=ToyModel)


class ToyRegressionStage(Stage):
    """Fits y = 3·x with a linear layer on 64 fixed samples."""

    Config = ToyRecipe

    def architecture(self):
        class Net(torch.nn.Module):
            def __init__(self, width):
                super().__init__()
                self.lin = torch.nn.Linear(width, 1)

            def repeated_blocks(self):
                return []

            def forward(self, batch):
                loss = torch.nn.functional.mse_loss(self.lin(batch["x"]), batch["y"])
                return {"loss": loss}

        return Net(self.recipe.model.width)

    def example_batch(self, batch_size, device="meta"):
        x = torch.randn(batch_size, self.recipe.model.width, device=device)
        return {"x": x, "y": 3 * x[:, :1]}

    def build_data(self, world):
        from latbot.data.clips import MixtureSampler

        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, self.recipe.model.width, generator=g)
        data = [{"x": x[i], "y": 3 * x[i, :1]} for i in range(64)]
        return data, MixtureSampler([64], [1.0], seed=self.recipe.train.seed, rank=world.rank, world_size=world.size)

    def extra(self, model) -> dict:
        return {"weight": float(model.lin.weight[0, 0].detach())}


@pytest.fixture
def toy_stage():
    registry.register("stages", "toy_regression", ToyRegressionStage)
    yield
    registry.unregister("stages", "toy_regression")


def recipe_file(tmp_path, steps=150):
    path = tmp_path / "toy.yaml"
    path.write_text(
        "stage: toy_regression\nmodel: {width: 2}\n"
        f"train: {{steps: {steps}, lr: 0.05, warmup_steps: 0, min_lr: 0.05, global_batch_size: 8, micro_batch_size: 8,"
        f" precision: fp32, checkpoint_every: 20}}\n"
        f"data: {{num_workers: 0}}\nlog: {{out_dir: {tmp_path / 'runs'}, run_name: toy, progress: false, "
        "tensorboard: false}\n"
    )
    return path


def test_a_registered_stage_trains_through_the_cli_and_its_run_loads(toy_stage, tmp_path):
    assert "toy_regression" in stages.stage_names()
    result = runner.invoke(app, ["train", str(recipe_file(tmp_path))])
    assert result.exit_code == 0, result.output
    run = runs.open_run(tmp_path / "runs" / "toy", "toy_regression")
    assert run.complete and run.manifest.format_version == ToyRegressionStage.format_version
    assert abs(run.extra["weight"] - 3.0) < 0.5  # it learned: y = 3·x
    assert run.recipe.model.width == 2 and isinstance(run.recipe, ToyRecipe)
    assert set(run.state_dict()) == {"lin.weight", "lin.bias"}
    shown = runner.invoke(app, ["recipe", "show", str(run.path)])
    assert shown.exit_code == 0 and "stage: toy_regression" in shown.output
    # the saved manifest is the run's only copy of its recipe
    assert not (run.path / "recipe.yaml").exists()
    assert json.loads((run.path / "latbot.json").read_text())["recipe"]["model"] == {"width": 2}


def test_resume_needs_only_the_run_and_refuses_another_stages_recipe(toy_stage, tmp_path):
    path = recipe_file(tmp_path, steps=40)
    first = runner.invoke(app, ["train", str(path), "--set", "train.steps=20"])  # stops after its step-20 save
    assert first.exit_code == 0, first.output
    run_dir = tmp_path / "runs" / "toy"
    # pretend it was interrupted: mark unfinished and ask for more steps in the saved recipe
    manifest = json.loads((run_dir / "latbot.json").read_text())
    manifest["status"] = "running"
    manifest["recipe"]["train"]["steps"] = 40
    (run_dir / "latbot.json").write_text(json.dumps(manifest))
    other = tmp_path / "lam.yaml"
    other.write_text("stage: lam\nmodel: {encoder: {type: tiny_conv}, decoder: {type: tiny_mlp}}\n")
    refused = runner.invoke(app, ["train", str(other), "--resume", str(run_dir)])
    assert refused.exit_code == 2 and "is a 'lam' recipe, but" in refused.output
    resumed = runner.invoke(app, ["train", "--resume", str(run_dir)])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming" in resumed.output or "steps 20→40" in resumed.output
    assert runs.open_run(run_dir).complete


def test_unfinished_runs_are_refused_by_the_loaders(toy_stage, tmp_path):
    path = recipe_file(tmp_path, steps=20)
    assert runner.invoke(app, ["train", str(path)]).exit_code == 0
    run_dir = tmp_path / "runs" / "toy"
    manifest = json.loads((run_dir / "latbot.json").read_text())
    manifest["status"] = "running"
    (run_dir / "latbot.json").write_text(json.dumps(manifest))
    from latbot.errors import ArtifactError

    with pytest.raises(ArtifactError, match="has not finished"):
        runs.open_run(run_dir)
    with pytest.raises(ArtifactError, match="is a 'toy_regression' artifact"):
        runs.load_lam(run_dir)


def test_a_stage_without_a_stage_literal_is_a_broken_plugin():
    class Broken(Stage):
        Config = ToyModel  # not a recipe

    registry.register("stages", "broken_stage", Broken)
    try:
        from latbot.errors import PluginLoadError

        with pytest.raises(PluginLoadError, match="RecipeBase"):
            stages.stage("broken_stage")
    finally:
        registry.unregister("stages", "broken_stage")
