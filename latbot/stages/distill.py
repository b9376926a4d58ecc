"""Stage 2, `distill`: distil a LAM's latents (and the subtask text) into a student VLM (paper §3.3)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from latbot.config import Section
from latbot.errors import TrainingError
from latbot.recipes.schema import RecipeBase, StudentSlot
from latbot.stages.base import Stage, example_tensor, without_weights


class DistillModel(Section):
    """Stage 2: distil the LAM's latents into a VLA's VLM (paper §3.3)."""

    student: StudentSlot = Field(description="Student VLM seeing V_1 and the instruction (kind `students`).")
    teacher: Path | None = Field(None, description="LAM checkpoint directory (its manifest is checked).")
    teacher_cache: Path | None = Field(
        None,
        description="Teacher latents cache (for small data sets): built there on first use (per rank, shard by "
        "shard, resumable), then distilled from; null (the default, and the real-size choice): the teacher runs "
        "online in every step.",
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
        description="L_a over tokens and channels, L_r over its target tokens: mean (scale-free in N and D), or "
        "sum (Eq. 4–5 as written: the MSE summed over tokens and channels, the KL over tokens, L_r over the "
        "subtask's target tokens, each averaged over samples).",
    )


EXAMPLE_SUBTASK = "grasp the black bowl"


class DistillRecipe(RecipeBase):
    stage: Literal["distill"]
    model: DistillModel


class DistillStage(Stage):
    Config = DistillRecipe
    reads_stores = True

    @classmethod
    def tiny_recipe(cls) -> dict:
        """A CPU-sized recipe of this stage's architecture (what `latbot plugins check` builds and steps)."""
        return {
            "stage": "distill",
            "data": {"num_frames": 3, "image_size": 32},
            "model": {
                "student": {"type": "paligemma", "preset": "tiny", "num_scene_tokens": 4, "num_motion_tokens": 4}
            },
            "train": {"steps": 2, "global_batch_size": 2, "micro_batch_size": 2, "precision": "fp32"},
        }

    def prepare(self) -> None:
        """The sources, the student's sizes (`resolve_sizes`) and the frozen teacher (loaded once; `validate`
        has checked it fits)."""
        import torch

        from latbot import runs

        self.sources()
        self._check_teacher()
        self.resolve_sizes()
        lam = runs.load_lam(self.recipe.model.teacher)
        lam.decoder = torch.nn.Identity()  # only the encoder teaches; free the decoder
        self.teacher = lam
        if self.recipe.model.teacher_cache is not None:
            self._check_cache_space()

    def _cache_shape(self) -> tuple[int, int]:
        """(tokens, width) of one clip's latents: the teacher's Ns + Nm and D."""
        enc = self.teacher.config.encoder
        return enc.num_scene_tokens + enc.num_motion_tokens, self.teacher.encoder.width

    def _check_cache_space(self) -> None:
        """A cache still to (finish) building is refused, in one line and before anything is written, when its
        destination's file system lacks room for clips × tokens × D × bytes of `cache_dtype`."""
        from latbot.data.latent_cache import check_space, is_complete
        from latbot.data.mixture import build_mixture

        r = self.recipe
        if is_complete(r.model.teacher_cache):
            return
        clips, _ = build_mixture(self.sources(), r.data.num_frames, seed=r.train.seed, cameras=r.data.cameras)
        check_space(r.model.teacher_cache, len(clips), *self._cache_shape(), r.model.cache_dtype)

    def _check_teacher(self) -> None:
        """The teacher run (its manifest: no weights read) against the data and the student: the same clip
        length, token counts and latent groups."""
        from latbot import runs

        r = self.recipe
        m = r.model
        if m.teacher is None:
            raise TrainingError(
                "model.teacher is not set: point it at a LAM run, e.g. --set model.teacher=runs/tiny/lam"
            )
        enc = runs.open_run(m.teacher, "lam").recipe.model.encoder
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

    def parents(self) -> list:
        from latbot.artifacts import parent_ref

        return [parent_ref(self.recipe.model.teacher, "lam"), *self.source_parents()]

    # -- the model -------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """The student builds as configured (on the meta device: nothing loaded, nothing written) and, when
        the teacher run exists, fits it (clip length, token layout; its manifest only)."""
        import torch

        from latbot.models.pi05 import checkpoint

        if not checkpoint.pending(self.recipe.model.student):  # else sized from its checkpoint in `prepare`
            with torch.device("meta"):
                self.architecture()
        teacher = self.recipe.model.teacher
        if teacher is not None and Path(teacher).is_dir():
            self._check_teacher()

    @property
    def latent_width(self) -> int | None:
        """D of the teacher's latents, which the student's answer is projected to (known once `prepare` has
        loaded the teacher, or set by `plan --latent-width`); None: the student's own width."""
        teacher = getattr(self, "teacher", None)
        return teacher.encoder.width if teacher is not None else getattr(self, "_latent_width", None)

    @latent_width.setter
    def latent_width(self, value: int | None) -> None:
        self._latent_width = value

    def _model(self, with_weights: bool):
        from latbot import registry
        from latbot.models.distill import DistillationModel

        m = self.recipe.model
        config = m.student if with_weights else without_weights(m.student)
        student = registry.build("students", config, latent_width=self.latent_width)
        return DistillationModel(
            student,
            getattr(self, "teacher", None),
            m.temperature,
            m.reasoning_weight,
            m.subtask_fallback,
            m.loss_reduction,
        )

    def architecture(self):
        """The student and its losses; the frozen teacher is not part of the trained model (its latents come
        from the teacher loaded by `prepare`, or from the latent cache, in the batch)."""
        return self._model(with_weights=False)

    def build_model(self):
        """A student plugin that loads a transformers checkpoint named by `pretrained` does so as it is built;
        pi0.5 weights are loaded after it (`initialise`)."""
        model = self._model(with_weights=True)
        self.pretrained = self.initialise(model)
        return model

    def resolve_sizes(self) -> None:
        """A `pi05` student that loads `pretrained`: `preset: checkpoint` takes its sizes from the checkpoint
        (written into the recipe as `preset: custom` + `dims`, which the run records), and any preset is
        checked tensor by tensor against it. Reads config.json and the safetensors headers only (no tensor);
        `architecture()` reads nothing, so `plan` builds a checkpoint-sized student only once its sizes are
        written out (docs/distillation.md)."""
        from latbot.models.pi05 import checkpoint

        m = self.recipe.model
        m.student, _, self.pretrained_sizes = checkpoint.resolve(student=m.student)

    def initialise(self, model) -> dict:
        from latbot.models.pi05 import checkpoint

        report = checkpoint.apply(student=model.student)  # pi05: pi0.5 weights named by `pretrained`
        return {part: getattr(self, "pretrained_sizes", {}).get(part, {}) | loaded for part, loaded in report.items()}

    def trained_model(self, weights, extra: dict):
        self.latent_width = extra.get("latent_width")
        model = self._model(with_weights=True)  # no teacher; a pretrained backbone brings its own tokenizer
        model.load_state_dict(weights)
        return model.eval()

    def example_batch(self, batch_size: int, device="meta") -> dict:
        """A cached batch: frame 0, the instruction, a subtask and the teacher's latents."""
        import torch

        from latbot.data import clips
        from latbot.stages.lam import EXAMPLE_INSTRUCTION

        r, b = self.recipe, batch_size
        s, student = r.data.image_size, r.model.student
        width = self.latent_width
        if width is None:
            with torch.device("meta"):
                width = self.architecture().student.latent_width
        tokens = student.num_scene_tokens + student.num_motion_tokens
        return {
            clips.K_FRAMES: example_tensor((b, 1, 3, s, s), torch.uint8, device),
            clips.K_INSTRUCTION: [EXAMPLE_INSTRUCTION] * b,
            clips.K_SUBTASK: [EXAMPLE_SUBTASK] * b,
            clips.K_LATENTS: example_tensor((b, tokens, width), torch.float32, device),
        }

    def components(self, model) -> dict:
        from latbot.stages.lam import split_components

        return split_components({"student": model.student})

    def vlm(self, model):
        return model.student

    def frozen_cost(self, gpus: int, micro_batch: int) -> dict | None:
        """The online teacher (no `teacher_cache`): its forward FLOPs and memory per GPU, built on the meta
        device from the teacher run's recipe, or from `self.teacher_recipe` (`latbot plan --teacher-recipe`)."""
        if self.recipe.model.teacher_cache is not None:
            return None
        from latbot.train.plan import teacher_cost

        return teacher_cost(self.recipe, gpus, micro_batch, lam_recipe=getattr(self, "teacher_recipe", None))

    def build_data(self, world):
        """This rank's clips and sampler. Online teacher (no `teacher_cache`, the default): the teacher is
        sharded here under `dist.strategy: fsdp` or `hsdp` (on the student's mesh, after the loop has
        sharded the student; it is not part of the trained module). With a cache: every rank writes its own
        shards (`build_cache`), the ranks agree that all succeeded, rank 0 writes the manifest, and every
        rank reads every shard."""
        from latbot.data.latent_cache import CachedLatentDataset, cache_identity
        from latbot.data.mixture import build_mixture

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
            if r.dist.strategy != "none":  # fsdp or hsdp: the teacher on the student's mesh
                from latbot.train.distributed import shard_teacher

                shard_teacher(
                    self.teacher, world, r.train.precision, r.dist.strategy, getattr(r.dist, "shard_size", None)
                )
            return clips, sampler
        from latbot import runs

        teacher_hash = runs.open_run(m.teacher, "lam").manifest.content_hash
        identity = cache_identity(teacher_hash, sources, r.data.num_frames, r.data.cameras)
        self._ensure_cache(world, clips, identity)
        self.teacher.to("cpu")  # the step reads cached latents: the teacher leaves the accelerator
        return CachedLatentDataset(clips, m.teacher_cache, identity), sampler

    def _ensure_cache(self, world, clips, identity: dict) -> None:
        """Build what is missing of the cache: each rank its shards; a failure on any rank is raised on every
        rank (no rank waits on a barrier for a rank that died with an error); completed shards are kept."""
        from latbot.data.latent_cache import CacheError, build_cache, finish_cache, is_complete
        from latbot.train import distributed

        r = self.recipe
        m = r.model
        if not is_complete(m.teacher_cache):
            shape = self._cache_shape()
            error = None
            try:
                build_cache(
                    m.teacher_cache,
                    self.teacher,
                    clips,
                    identity,
                    shape=shape,
                    batch_size=r.train.micro_batch_size,
                    dtype=m.cache_dtype,
                    device=world.device,
                    precision=r.train.precision,
                    rank=world.rank,
                    world_size=world.size,
                    progress=r.log.progress,
                )
            except Exception as e:  # told to every rank below, then raised here
                error = e
            if _failures(world, error is not None):
                if error is not None:
                    raise error
                raise CacheError(
                    f"{m.teacher_cache}: another rank failed to write its shards of the teacher cache (its error "
                    "is in its log); the completed shards are kept: run again to compute only the missing ones"
                )
            if world.main:
                finish_cache(m.teacher_cache, identity, len(clips), shape, m.cache_dtype)
        distributed.barrier(world)

    def extra(self, model) -> dict:
        return {
            "latent_width": self.teacher.encoder.width,
            "teacher_latents": "online" if self.recipe.model.teacher_cache is None else "cache",
            "temperature": model.temperature,
            "steps": self.recipe.train.steps,
            "pretrained": getattr(self, "pretrained", {}),  # which pi0.5 components were loaded
            "subtask_coverage": {str(s.store): subtask_coverage(s) for s in self.sources()},
            "subtask_fallback": self.recipe.model.subtask_fallback,
        }


def _failures(world, failed: bool) -> int:
    """How many ranks failed (an all-reduce: every rank learns it, nobody waits for a dead rank)."""
    if world.size == 1:
        return int(failed)
    import torch
    import torch.distributed as dist

    flag = torch.tensor([int(failed)], device=world.device)
    dist.all_reduce(flag)
    return int(flag.item())


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
