"""Stage 1, `lam`: pretrain the latent action model (paper §3.1–3.2) on LAM clips of episode stores."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from latbot.config import Section
from latbot.recipes.schema import DecoderSlot, EncoderSlot, RecipeBase
from latbot.stages.base import Stage, example_tensor, without_weights


class LamModel(Section):
    """Stage 1: the latent action model (paper §3.1–3.2)."""

    encoder: EncoderSlot = Field(description="VLM encoder producing Z_sce and Z_mot (kind `encoders`).")
    decoder: DecoderSlot = Field(description="Unified decoder: future frame + action sequence (kind `decoders`).")
    decoupled: bool = Field(True, description="Separate scene/motion tokens (off: one group feeds both streams).")
    unified_decoder: bool = Field(True, description="Decode actions too (off: image reconstruction only).")
    image_loss_weight: float = Field(1.0, ge=0, description="w_img in L = L_action + w_img · L_image.")
    instruction_dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Training only: the chance that a clip's instruction is replaced by an empty one, so the "
        "latents must come from the frames' motion and not from the task's name (docs/models.md).",
    )
    motion_head_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of an auxiliary loss: a linear head reads the clip's actions from Z_mot (masked MSE), so "
        "the motion latents are supervised directly and not only through the flow-matching action stream; 0 = off, "
        "the paper's objective. Needs decoupled and unified_decoder (docs/models.md).",
    )
    flow_draws: int = Field(
        1,
        ge=1,
        le=64,
        description="Training only: flow-matching (time, noise) draws per clip for the decoder's losses, averaged; "
        "the encoder runs once per clip. More draws lower the variance of the flow gradient that reaches the "
        "latents, at the decoder's cost (paper silent; docs/models.md).",
    )
    shift_augment: int = Field(
        0,
        ge=0,
        le=64,
        description="Training only: pad each clip by this many pixels and crop it back at a random offset, the "
        "same for all its frames (random-shift augmentation; 0 = off; not in the paper, docs/models.md).",
    )
    reverse_clips: float = Field(
        0.0,
        ge=0,
        le=0.5,
        description="Training only: the fraction of pretraining clips played backwards (frames reversed, each "
        "interval's action undone), so the scene alone cannot predict the action and the latents must read the "
        "motion; not in the paper (docs/models.md). Stores with a moving camera (frame_motion) refuse it.",
    )
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


EXAMPLE_INSTRUCTION = "pick up the black bowl between the plate and the ramekin and place it on the plate"


def split_components(owners: dict) -> dict:
    """{name: module} of the parts a parameter report lists: a VLM's vision tower / projector / language
    model and a decoder's transformer / VAE where a plugin has them, the rest of each owner as `<name>.other`
    (or the owner whole when it has none of them)."""
    from torch import nn

    parts: dict = {}
    for name, owner in owners.items():
        found = {}
        vlm = getattr(owner, "vlm", None)
        if isinstance(vlm, nn.Module):
            for label, attr in (("vision_tower", "vision_tower"), ("projector", "multi_modal_projector"),
                                ("language_model", "language_model")):  # fmt: skip
                if isinstance(getattr(vlm, attr, None), nn.Module):
                    found[f"{name}.{label}"] = getattr(vlm, attr)
        for attr in ("transformer", "vae"):
            if isinstance(getattr(owner, attr, None), nn.Module):
                found[f"{name}.{attr}"] = getattr(owner, attr)
        if not found:
            parts[name] = owner
            continue
        parts |= found
        covered = {id(p) for m in found.values() for p in m.parameters()}
        rest = [p for p in owner.parameters() if id(p) not in covered]
        if rest:
            parts[f"{name}.other"] = rest
    return parts


class LamRecipe(RecipeBase):
    stage: Literal["lam"]
    model: LamModel


class LamStage(Stage):
    Config = LamRecipe
    reads_stores = True

    @classmethod
    def tiny_recipe(cls) -> dict:
        """A CPU-sized recipe of this stage's architecture (what `latbot plugins check` builds and steps)."""
        return {
            "stage": "lam",
            "data": {"num_frames": 3, "image_size": 32},
            "model": {
                "encoder": {
                    "type": "internvl",
                    "preset": "tiny",
                    "num_frames": 3,
                    "num_scene_tokens": 4,
                    "num_motion_tokens": 4,
                },
                "decoder": {
                    "type": "dit",
                    "width": 32,
                    "depth": 1,
                    "heads": 2,
                    "image_size": 16,
                    "patch_size": 8,
                    "horizon": 2,
                },
            },
            "train": {"steps": 2, "global_batch_size": 2, "micro_batch_size": 2, "precision": "fp32"},
        }

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

    # -- the model -------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Every constructor-time check (horizon vs frames, latent groups, the encoder's frame count), by
        building the architecture on the meta device: no memory, no weights, nothing written."""
        import torch

        with torch.device("meta"):
            self.architecture()

    def _model(self, config):
        from latbot.models.lam import LatentActionModel

        return LatentActionModel(config, self.recipe.data.num_frames)

    def architecture(self):
        m = self.recipe.model
        return self._model(
            m.model_copy(update={"encoder": without_weights(m.encoder), "decoder": without_weights(m.decoder)})
        )

    def build_model(self):
        """With `pretrained` named in the encoder or decoder slot, their plugins load those checkpoints as
        they are built (transformers / diffusers `from_pretrained`), so the model is built once, with them."""
        self.pretrained = {}
        return self._model(self.recipe.model)

    def trained_model(self, weights, extra: dict):
        model = self._model(self.recipe.model)  # a pretrained backbone brings its own tokenizer
        model.load_state_dict(weights)
        return model.eval()

    def example_batch(self, batch_size: int, device="meta") -> dict:
        import torch

        from latbot.data import clips
        from latbot.data.spaces import ACTION_DIM

        r, b = self.recipe, batch_size
        t, s = r.data.num_frames, r.data.image_size
        return {
            clips.K_FRAMES: example_tensor((b, t, 3, s, s), torch.uint8, device),
            clips.K_INSTRUCTION: [EXAMPLE_INSTRUCTION] * b,
            clips.K_ACTIONS: example_tensor((b, t - 1, ACTION_DIM), torch.float32, device),
            clips.K_ACTION_MASK: example_tensor((b, ACTION_DIM), torch.bool, device),
        }

    def components(self, model) -> dict:
        """The VLM's vision tower, projector and language model, and the decoder's transformer and VAE,
        where the plugins have them; everything else of the encoder / decoder as `.other`."""
        return split_components({"encoder": model.encoder, "decoder": model.decoder})

    def vlm(self, model):
        return model.encoder

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
            reverse=r.model.reverse_clips,
        )

    def on_log(self, model, batch) -> dict[str, float]:
        """Latent collapse, watched during training: effective rank of each group over the batch."""
        import torch

        from latbot.data.clips import K_FRAMES, K_INSTRUCTION
        from latbot.train.metrics import effective_rank

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
