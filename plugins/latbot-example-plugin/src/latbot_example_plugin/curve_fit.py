"""`curve_fit`: a training stage that fits y = 3·x with a linear layer, as an example of a `stages` plugin.

A stage is its recipe (a `RecipeBase` subclass with `stage: Literal[name]` and its own `model:` section)
and its hooks; `latbot train`, `--resume`, run directories and manifests then work for it unchanged
(docs/training.md, "Adding a stage")."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from latbot.config import Section
from latbot.recipes.schema import RecipeBase
from latbot.stages import Stage


class CurveFitModel(Section):
    width: int = Field(4, ge=1, description="Input features.")
    samples: int = Field(64, ge=2, description="Fixed training samples.")


class CurveFitRecipe(RecipeBase):
    stage: Literal["curve_fit"]
    model: CurveFitModel = Field(default_factory=CurveFitModel)


class Regressor(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.lin = torch.nn.Linear(width, 1)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """{"x" (B, width), "y" (B, 1)} → {"loss"}."""
        return {"loss": torch.nn.functional.mse_loss(self.lin(batch["x"]), batch["y"])}


class CurveFitStage(Stage):
    Config = CurveFitRecipe

    @classmethod
    def tiny_recipe(cls) -> dict:
        """A recipe that trains in a second (what `latbot plugins check` runs)."""
        return {"stage": "curve_fit", "train": {"steps": 5, "global_batch_size": 8, "micro_batch_size": 8}}

    def build_model(self) -> Regressor:
        return Regressor(self.recipe.model.width)

    def build_data(self, world):
        from latbot.data.clips import MixtureSampler

        m = self.recipe.model
        x = torch.randn(m.samples, m.width, generator=torch.Generator().manual_seed(0))
        data = [{"x": x[i], "y": 3 * x[i, :1]} for i in range(m.samples)]
        return data, MixtureSampler(
            [m.samples], [1.0], seed=self.recipe.train.seed, rank=world.rank, world_size=world.size
        )

    def extra(self, model) -> dict:
        return {"weight": float(model.lin.weight[0, 0].detach())}
