"""Stage 3, `finetune`: train a student VLM (distilled, or plain for the baseline) and an action expert on
robot actions (paper §3.3, end)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from latbot.config import Section
from latbot.errors import TrainingError
from latbot.recipes.schema import ActionExpertSlot, RecipeBase, StudentSlot
from latbot.stages.base import Stage, example_tensor, without_weights

# student fields that do not shape the weights, so they may differ from the distilled student's
FREE_STUDENT_FIELDS = ("num_frames", "freeze_vision", "attn_implementation", "pretrained")  # pretrained: overwritten


class FinetuneModel(Section):
    """Stage 3: student + action expert trained on robot actions (paper §3.3, end)."""

    student: StudentSlot = Field(description="The VLM backbone (kind `students`).")
    student_checkpoint: Path | None = Field(
        None, description="Distilled checkpoint to start from; None trains the plain VLM (the baseline)."
    )
    action_expert: ActionExpertSlot = Field(description="Flow-matching action expert (kind `action_experts`).")
    action_horizon: int = Field(10, ge=1, description="H, the action chunk length.")


class FinetuneRecipe(RecipeBase):
    stage: Literal["finetune"]
    model: FinetuneModel


class FinetuneStage(Stage):
    Config = FinetuneRecipe
    reads_stores = True

    @classmethod
    def tiny_recipe(cls) -> dict:
        """A CPU-sized recipe of this stage's architecture (what `latbot plugins check` builds and steps)."""
        return {
            "stage": "finetune",
            "data": {"image_size": 32},
            "model": {
                "student": {"type": "paligemma", "preset": "tiny", "num_scene_tokens": 4, "num_motion_tokens": 4},
                "action_expert": {"type": "flow", "width": 32, "depth": 2, "heads": 2},
                "action_horizon": 3,
            },
            "train": {"steps": 2, "global_batch_size": 2, "micro_batch_size": 2, "precision": "fp32"},
        }

    def prepare(self) -> None:
        """The one embodiment the policy targets, the episodes each source gives, the distilled parent and the
        sizes of the pi0.5 parts read from their checkpoint (`resolve_sizes`)."""
        self.target, self.selection = _target(self.sources(), self.recipe.data.cameras)
        self.parent = self._distilled_parent()
        self.resolve_sizes()

    def resolve_sizes(self) -> None:
        """The `pi05` parts that load `pretrained` (the student only without a distilled parent): a part with
        `preset: checkpoint` takes its sizes from the checkpoint (written into the recipe as `preset:
        custom`, which the run records; with a parent, the student's sizes are the parent's), and every such
        part is checked tensor by tensor against it. Reads config.json and safetensors headers only."""
        from latbot.models.pi05 import checkpoint

        m, parent = self.recipe.model, getattr(self, "parent", None)
        student, m.action_expert, self.pretrained_sizes = checkpoint.resolve(
            student=None if parent else m.student, expert=m.action_expert, vlm=m.student if parent else None
        )
        if student is not None:
            m.student = student

    def _distilled_parent(self):
        """The distillation run the student starts from (its manifest), checked to hold the same student; None
        for the plain-VLM baseline."""
        from latbot import runs
        from latbot.models.pi05 import checkpoint
        from latbot.recipes import to_dict

        m = self.recipe.model
        if m.student_checkpoint is None:
            return None
        parent = runs.open_run(m.student_checkpoint, "distill")
        theirs = parent.manifest.recipe["model"]["student"]
        m.student = checkpoint.sizes_of_parent(m.student, theirs)  # preset checkpoint: the parent's sizes
        ours = to_dict(m)["student"]
        diff = sorted(k for k in {*theirs, *ours} if k not in FREE_STUDENT_FIELDS and theirs.get(k) != ours.get(k))
        if diff:
            raise TrainingError(
                f"model.student differs from the student of {m.student_checkpoint} in {diff}; copy model.student "
                f"from that run's recipe (`latbot recipe show {m.student_checkpoint}`)"
            )
        return parent

    @property
    def latent_width(self) -> int | None:
        """D of the distilled parent's latents (its student's projection), or None without a parent."""
        parent = getattr(self, "parent", None)
        return parent.extra["latent_width"] if parent is not None else getattr(self, "_latent_width", None)

    @latent_width.setter
    def latent_width(self, value: int | None) -> None:
        self._latent_width = value

    def parents(self) -> list:
        from latbot.artifacts import parent_ref

        distilled = [parent_ref(self.parent.path, "distill")] if self.parent else []
        return distilled + self.source_parents()

    # -- the model -------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Student and expert build as configured, and agree (on the meta device: nothing loaded or written);
        a distilled parent that exists holds the same student (its manifest only)."""
        import torch

        from latbot.models.pi05 import checkpoint

        m = self.recipe.model
        if m.student_checkpoint is not None and Path(m.student_checkpoint).is_dir():
            self.parent = self._distilled_parent()  # its latent width shapes the architecture
        if not checkpoint.pending(m.student, m.action_expert):  # else sized from their checkpoint in `prepare`
            with torch.device("meta"):
                self.architecture()

    def _model(self, with_weights: bool):
        from latbot.models.vla import VisionLanguageAction

        m = self.recipe.model
        student = m.student if with_weights else without_weights(m.student)
        expert = m.action_expert if with_weights else without_weights(m.action_expert)
        return VisionLanguageAction(student, expert, m.action_horizon, self.latent_width)

    def architecture(self):
        return self._model(with_weights=False)

    def build_model(self):
        """A student plugin that loads a transformers checkpoint named by `pretrained` does so as it is built;
        pi0.5 weights and the distilled parent's student are loaded after it (`initialise`)."""
        model = self._model(with_weights=True)
        self.pretrained = self.initialise(model)
        return model

    def initialise(self, model) -> dict:
        """pi0.5 weights named by `pretrained` (the student's only without a distilled parent), then the
        distilled parent's student."""
        from latbot import runs
        from latbot.models.pi05 import checkpoint

        parent = getattr(self, "parent", None)
        report = checkpoint.apply(student=None if parent else model.student, expert=model.expert)
        if parent is not None:
            model.student.load_state_dict(runs.student_weights(parent.path))
        return {part: getattr(self, "pretrained_sizes", {}).get(part, {}) | loaded for part, loaded in report.items()}

    def trained_model(self, weights, extra: dict):
        self.latent_width = extra.get("latent_width")
        model = self._model(with_weights=True)  # a pretrained backbone brings its own tokenizer
        model.load_state_dict(weights)
        return model.eval()

    def example_batch(self, batch_size: int, device="meta") -> dict:
        import torch

        from latbot.data import clips
        from latbot.data.spaces import ACTION_DIM, STATE_DIM
        from latbot.stages.lam import EXAMPLE_INSTRUCTION

        r, b = self.recipe, batch_size
        s, h = r.data.image_size, r.model.action_horizon
        cams = len(r.data.cameras or [None])
        return {
            clips.K_FRAMES: example_tensor((b, cams, 3, s, s), torch.uint8, device),
            clips.K_INSTRUCTION: [EXAMPLE_INSTRUCTION] * b,
            clips.K_STATE: example_tensor((b, STATE_DIM), torch.float32, device),
            clips.K_STATE_MASK: example_tensor((b, STATE_DIM), torch.bool, device),
            clips.K_ACTIONS: example_tensor((b, h, ACTION_DIM), torch.float32, device),
            clips.K_GRIPPER: example_tensor((b, h, 2), torch.float32, device).sigmoid(),
            clips.K_ACTION_MASK: example_tensor((b, ACTION_DIM), torch.bool, device),
            clips.K_ACTION_PAD: example_tensor((b, h), torch.bool, device).logical_not(),
        }

    def components(self, model) -> dict:
        from latbot.stages.lam import split_components

        return split_components({"student": model.student}) | {"action_expert": model.expert}

    def vlm(self, model):
        return model.student

    def build_data(self, world):
        from torch.utils.data import ConcatDataset

        from latbot.data.clips import ChunkDataset, MixtureSampler

        r = self.recipe
        sources = self.sources()
        t = self.target
        parts = [
            ChunkDataset(s.store, r.model.action_horizon, episodes=ep, cameras=t["cameras"], stats=t["stats"])
            for s, ep in zip(sources, self.selection, strict=True)
        ]
        sampler = MixtureSampler(
            [len(p) for p in parts],
            [s.weight for s in sources],
            seed=r.train.seed,
            rank=world.rank,
            world_size=world.size,
        )
        return ConcatDataset(parts), sampler

    def extra(self, model) -> dict:
        return {
            "target": self.target,
            "latent_width": self.latent_width,
            "steps": self.recipe.train.steps,
            "pretrained": getattr(self, "pretrained", {}),  # which pi0.5 components were loaded
        }


def _target(sources, cameras: list[str] | None) -> tuple[dict, list[list[int]]]:
    """What a policy must know about the embodiment it is finetuned for: one embodiment over all sources,
    its validity masks, cameras, image size, native dimensions and the first store's statistics; and the
    episodes each source contributes (tasks / exclude_tasks / demos_per_task)."""
    from latbot.data.mixture import select_episodes
    from latbot.data.store import EpisodeStore

    target: dict = {}
    selection = []
    for s in sources:
        with EpisodeStore.open(s.store) as store:
            chosen = select_episodes(store.records, s.tasks, s.demos_per_task, s.exclude_tasks)
            selection.append(chosen)
            if not chosen:
                raise TrainingError(f"{s.store}: no episode left after tasks / exclude_tasks / demos_per_task")
            recs = [store.records[i] for i in chosen]
            embodiments = sorted({r.embodiment for r in recs})
            am, sm = recs[0].masks()
            this = {
                "embodiment": embodiments[0],
                "action_mask": am.tolist(),
                "state_mask": sm.tolist(),
                "cameras": cameras or store.cameras[:1],
                "image_size": list(store.image_size),
                "native_action_dim": _width(store, "native_actions"),
                "native_state_dim": _width(store, "native_states"),
            }
            if len(embodiments) > 1 or (target and any(target[k] != this[k] for k in ("embodiment", "action_mask"))):
                raise TrainingError(
                    f"finetuning targets one embodiment, the data holds {[*embodiments, target.get('embodiment')]}; "
                    "restrict data.sources[].tasks or use one store per embodiment"
                )
            if not target:
                if store.stats is None:
                    raise TrainingError(f"{s.store}: the store has no statistics; run `latbot data stats {s.store}`")
                target = this | {"stats": store.stats, "tasks": sorted({r.task for r in recs})}
            else:
                target["tasks"] = sorted({*target["tasks"], *(r.task for r in recs)})
    return target, selection


def _width(store, name: str) -> int | None:
    return int(store.array(name).shape[1]) if store.has_array(name) else None
