"""Stage 2, `distill`: distil a LAM's latents (and the subtask text) into a student VLM (paper §3.3)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from latbot.config import Section
from latbot.errors import TrainingError
from latbot.recipes.schema import RecipeBase, StudentSlot
from latbot.stages.base import Stage


class DistillModel(Section):
    """Stage 2: distil the LAM's latents into a VLA's VLM (paper §3.3)."""

    student: StudentSlot = Field(description="Student VLM seeing V_1 and the instruction (kind `students`).")
    teacher: Path | None = Field(None, description="LAM checkpoint directory (its manifest is checked).")
    teacher_cache: Path | None = Field(
        None, description="Teacher latents cache (Zarr): built there on first use, then distilled from."
    )
    cache_dtype: Literal["float32", "float16"] = Field("float32", description="Storage type of the cached latents.")
    temperature: float | None = Field(
        None, gt=0, description="Softmax temperature τ of the KL term; null: 1/√D of the teacher's width."
    )
    reasoning_weight: float = Field(0.5, ge=0, description="λ_r in L = L_a + λ_r · L_r (paper: 0.5).")
    subtask_fallback: Literal["skip", "instruction"] = Field(
        "skip",
        description="Samples without a subtask annotation: no L_r (skip, what the paper implies) or predict the "
        "instruction instead.",
    )
    loss_reduction: Literal["mean", "sum"] = Field(
        "mean",
        description="L_a over tokens and channels: mean (scale-free in N and D), or sum (Eq. 4–5 as written; L_a "
        "then weighs N·D (MSE) and N (KL) times more against λ_r · L_r).",
    )


class DistillRecipe(RecipeBase):
    stage: Literal["distill"]
    model: DistillModel


class DistillStage(Stage):
    Config = DistillRecipe

    def prepare(self) -> None:
        """The sources and the frozen teacher (loaded once), checked against the student and the data."""
        import torch

        from latbot import runs

        self.sources()
        r = self.recipe
        m = r.model
        if m.teacher is None:
            raise TrainingError(
                "model.teacher is not set: point it at a LAM run, e.g. --set model.teacher=runs/tiny/lam"
            )
        lam = runs.load_lam(m.teacher)
        lam.decoder = torch.nn.Identity()  # only the encoder teaches; free the decoder
        enc = lam.config.encoder
        frames = getattr(enc, "num_frames", r.data.num_frames)
        if frames != r.data.num_frames:
            raise TrainingError(
                f"data.num_frames is {r.data.num_frames}, the teacher {m.teacher} reads clips of {frames}; "
                f"set data.num_frames: {frames}"
            )
        # the student answers in the teacher's layout: the same token counts and latent groups
        for field, default in (("num_scene_tokens", None), ("num_motion_tokens", None), ("latent_groups", 2)):
            if field == "latent_groups" and not hasattr(m.student, field):
                continue  # a student whose queries are one block whatever the teacher's layout (pi05)
            theirs, ours = getattr(enc, field, default), getattr(m.student, field, default)
            if ours != theirs:
                raise TrainingError(f"model.student.{field} is {ours}, the teacher has {theirs}; make them equal")
        self.teacher = lam

    def parents(self) -> list:
        from latbot.artifacts import parent_ref

        return [parent_ref(self.recipe.model.teacher, "lam"), *self.source_parents()]

    def build_model(self):
        from latbot import registry
        from latbot.models.distill import DistillationModel

        m = self.recipe.model
        student = registry.build("students", m.student, latent_width=self.teacher.encoder.width)
        from latbot import pretrained

        self.pretrained = pretrained.apply(student=student)  # pi05: pi0.5 weights named by `pretrained`
        return DistillationModel(
            student, self.teacher, m.temperature, m.reasoning_weight, m.subtask_fallback, m.loss_reduction
        )

    def build_data(self, world):
        from latbot.data.latent_cache import CachedLatentDataset, build_cache, cache_identity
        from latbot.data.mixture import build_mixture
        from latbot.train import distributed

        r = self.recipe
        m = r.model
        sources = self.sources()
        clips, sampler = build_mixture(
            sources,
            r.data.num_frames,
            seed=r.train.seed,
            rank=world.rank,
            world_size=world.size,
            cameras=r.data.cameras,
        )
        if m.teacher_cache is None:
            return clips, sampler
        identity = cache_identity(m.teacher, sources, r.data.num_frames, r.data.cameras)
        if not Path(m.teacher_cache).exists() and world.main:
            build_cache(
                m.teacher_cache,
                self.teacher,
                clips,
                identity,
                batch_size=r.train.micro_batch_size,
                dtype=m.cache_dtype,
                device=world.device,
                progress=r.log.progress,
            )
        distributed.barrier(world)
        return CachedLatentDataset(clips, m.teacher_cache, identity), sampler

    def extra(self, model) -> dict:
        return {
            "latent_width": self.teacher.encoder.width,
            "temperature": model.temperature,
            "steps": self.recipe.train.steps,
            "pretrained": getattr(self, "pretrained", {}),  # which pi0.5 components were loaded
            "subtask_coverage": {str(s.store): subtask_coverage(s) for s in self.sources()},
            "subtask_fallback": self.recipe.model.subtask_fallback,
        }


def subtask_coverage(source) -> float:
    """Share of the source's steps (its selected episodes) that carry a subtask annotation; the rest get the
    `subtask_fallback` treatment."""
    from latbot.data.mixture import resolve_stores, source_episodes
    from latbot.data.store import EpisodeStore

    steps = covered = 0
    for path in resolve_stores(source.store):  # one store, or every store of a shard set
        with EpisodeStore.open(path) as store:
            chosen = source_episodes(source, path)
            records = [store.records[i] for i in chosen] if chosen is not None else store.records
            steps += sum(r.length for r in records)
            covered += sum(1 for r in records for t in range(r.length) if r.subtask_at(t) is not None)
    return covered / max(steps, 1)
