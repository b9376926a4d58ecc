"""Stage 1, `lam`: pretrain the latent action model (paper §3.1–3.2) on LAM clips of episode stores."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from latbot.config import Section
from latbot.recipes.schema import DecoderSlot, EncoderSlot, RecipeBase
from latbot.stages.base import Stage


class LamModel(Section):
    """Stage 1: the latent action model (paper §3.1–3.2)."""

    encoder: EncoderSlot = Field(description="VLM encoder producing Z_sce and Z_mot (kind `encoders`).")
    decoder: DecoderSlot = Field(description="Unified decoder: future frame + action sequence (kind `decoders`).")
    decoupled: bool = Field(True, description="Separate scene/motion tokens (off: one group feeds both streams).")
    unified_decoder: bool = Field(True, description="Decode actions too (off: image reconstruction only).")
    image_loss_weight: float = Field(1.0, ge=0, description="w_img in L = L_action + w_img · L_image.")
    action_normalization: Literal["quantile", "none"] = Field(
        "quantile",
        description="Action targets per source: q01/q99 of the aggregated deltas at the source's stride → [−1, 1] "
        "(none: raw unified units).",
    )

    @model_validator(mode="after")
    def _groups_follow_decoupling(self) -> LamModel:
        """`decoupled: false` means one group of latent tokens: the encoder's template follows (Table 5)."""
        fields = getattr(type(self.encoder), "model_fields", {})
        if "latent_groups" in fields:
            wanted = 2 if self.decoupled else 1
            if self.encoder.latent_groups != wanted and "latent_groups" in self.encoder.model_fields_set:
                raise ValueError(
                    f"encoder.latent_groups: {self.encoder.latent_groups} contradicts decoupled: {self.decoupled}; "
                    "set only `decoupled` (the encoder's template follows it)"
                )
            self.encoder = self.encoder.model_copy(update={"latent_groups": wanted})
        return self


class LamRecipe(RecipeBase):
    stage: Literal["lam"]
    model: LamModel


class LamStage(Stage):
    Config = LamRecipe

    def prepare(self) -> None:
        """The sources (a recipe without data fails before anything is created on disk) and, per source, the
        statistics its action targets are normalised with (deterministic: a resumed run recomputes the same)."""
        from latbot.data.mixture import source_action_stats

        self.action_stats = None
        if self.recipe.model.action_normalization == "quantile":
            self.action_stats = [source_action_stats(s) for s in self.sources()]
        else:
            self.sources()

    def parents(self) -> list:
        return self.source_parents()

    def build_model(self):
        from latbot.models.lam import LatentActionModel

        return LatentActionModel(self.recipe.model, self.recipe.data.num_frames)

    def build_data(self, world):
        from latbot.data.mixture import build_mixture

        r = self.recipe
        return build_mixture(
            self.sources(),
            r.data.num_frames,
            seed=r.train.seed,
            rank=world.rank,
            world_size=world.size,
            cameras=r.data.cameras,
            action_stats=self.action_stats,
        )

    def on_log(self, model, batch) -> dict[str, float]:
        """Latent collapse, watched during training: effective rank of each group over the batch."""
        import torch

        from latbot.analysis.diagnostics import effective_rank
        from latbot.data.clips import K_FRAMES, K_INSTRUCTION

        with torch.no_grad():
            z_sce, z_mot = model.encode(batch[K_FRAMES], list(batch[K_INSTRUCTION]))
        return {"rank_z_sce": effective_rank(z_sce), "rank_z_mot": effective_rank(z_mot)}

    def extra(self, model) -> dict:
        from latbot.data.mixture import resolve_stores
        from latbot.data.store import EpisodeStore

        stats = {}
        for s in self.sources():  # the statistics of the stores the weights were trained on
            for path in resolve_stores(s.store):
                with EpisodeStore.open(path) as store:
                    stats[str(path)] = store.stats
        normalization = {"method": self.recipe.model.action_normalization, "sources": []}
        for s, a in zip(self.sources(), self.action_stats or [], strict=False):
            normalization["sources"].append({"store": str(s.store), **a})
        return {"steps": self.recipe.train.steps, "data_stats": stats, "action_normalization": normalization}
