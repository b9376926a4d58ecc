"""`curve_fit`: a training stage that fits y = 3·x with a linear layer, as an example of a `stages` plugin.

A stage is its recipe (a `RecipeBase` subclass with `stage: Literal[name]` and its own `model:` section)
and one object that says everything about its model: `architecture()` (no weights, buildable on the meta
device), `example_batch()` (the shapes of one micro-batch) and `build_data()`. `latbot train`, `--resume`,
`recipe validate`, `recipe show --params`, `plan`, run directories and manifests then work for it unchanged
(docs/training.md, "Adding a stage")."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from latbot.api import MixtureSampler, RecipeBase, Section, Stage, TrainingError


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

    def repeated_blocks(self) -> list[torch.nn.Module]:
        """The units of FSDP sharding and activation checkpointing: none, the root holds the one layer."""
        return []

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """{"x" (B, width), "y" (B, 1)} → {"loss"}."""
        return {"loss": torch.nn.functional.mse_loss(self.lin(batch["x"]), batch["y"])}


class CurveFitStage(Stage):
    Config = CurveFitRecipe

    @classmethod
    def tiny_recipe(cls) -> dict:
        """A recipe that trains in a second (what `latbot plugins check` runs)."""
        return {"stage": "curve_fit", "train": {"steps": 5, "global_batch_size": 8, "micro_batch_size": 8}}

    def validate(self) -> None:
        m = self.recipe.model
        if m.samples < self.recipe.train.micro_batch_size:
            raise TrainingError(
                f"model.samples ({m.samples}) is smaller than train.micro_batch_size "
                f"({self.recipe.train.micro_batch_size}); raise model.samples"
            )

    def architecture(self) -> Regressor:
        return Regressor(self.recipe.model.width)

    def example_batch(self, batch_size: int, device="meta") -> dict:
        x = torch.randn(batch_size, self.recipe.model.width, device=device)
        return {"x": x, "y": 3 * x[:, :1]}

    def build_data(self, world):
        m = self.recipe.model
        x = torch.randn(m.samples, m.width, generator=torch.Generator().manual_seed(0))
        data = [{"x": x[i], "y": 3 * x[i, :1]} for i in range(m.samples)]
        return data, MixtureSampler(
            [m.samples], [1.0], seed=self.recipe.train.seed, rank=world.rank, world_size=world.size
        )

    def extra(self, model) -> dict:
        return {"weight": float(model.lin.weight[0, 0].detach())}
