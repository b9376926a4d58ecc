"""Stage 3, `finetune`: train a student VLM (distilled, or plain for the baseline) and an action expert on
robot actions (paper §3.3, end)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from latbot.config import Section
from latbot.errors import TrainingError
from latbot.recipes.schema import ActionExpertSlot, RecipeBase, StudentSlot
from latbot.stages.base import Stage

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

    def prepare(self) -> None:
        """The one embodiment the policy targets, the episodes each source gives, and the distilled parent."""
        from latbot import runs
        from latbot.recipes import to_dict

        self.target, self.selection = _target(self.sources(), self.recipe.data.cameras)
        m = self.recipe.model
        self.parent = None
        if m.student_checkpoint is not None:
            self.parent = runs.open_run(m.student_checkpoint, "distill")
            theirs = self.parent.manifest.recipe["model"]["student"]
            ours = to_dict(m)["student"]
            diff = sorted(k for k in {*theirs, *ours} if k not in FREE_STUDENT_FIELDS and theirs.get(k) != ours.get(k))
            if diff:
                raise TrainingError(
                    f"model.student differs from the student of {m.student_checkpoint} in {diff}; copy model.student "
                    f"from that run's recipe (`latbot recipe show {m.student_checkpoint}`)"
                )

    @property
    def latent_width(self) -> int | None:
        return self.parent.extra["latent_width"] if self.parent else None

    def parents(self) -> list:
        from latbot.artifacts import parent_ref

        distilled = [parent_ref(self.parent.path, "distill")] if self.parent else []
        return distilled + self.source_parents()

    def build_model(self):
        from latbot import runs
        from latbot.models.vla import VisionLanguageAction

        m = self.recipe.model
        from latbot import pretrained

        model = VisionLanguageAction(m.student, m.action_expert, m.action_horizon, self.latent_width)
        # pi05: pi0.5 weights named by `pretrained` (the student's only without a distilled parent)
        self.pretrained = pretrained.apply(student=None if self.parent else model.student, expert=model.expert)
        if self.parent is not None:
            model.student.load_state_dict(runs.student_weights(self.parent.path))
        return model

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
