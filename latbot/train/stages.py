"""Stage runners behind `latbot train`: each builds its model and data, then hands them to the loop."""

from __future__ import annotations

from pathlib import Path

import torch

from latbot import registry
from latbot.train import distributed
from latbot.train.loop import TrainingError, export, prepare_run, train


def _sources(recipe):
    from latbot.data.mixture import load_mixture

    if recipe.data.mixture is not None:
        return list(load_mixture(recipe.data.mixture).sources)
    if not recipe.data.sources:
        raise TrainingError(
            "data.sources is empty: point the recipe at episode stores, e.g. "
            "--set data.sources='[{store: stores/mt10}]' (or data.mixture: recipes/mixtures/...yaml)"
        )
    return list(recipe.data.sources)


def _parents(sources):
    from latbot.artifacts import parent_ref

    return [parent_ref(s.store, "episode_store") for s in sources]


def _stats(sources) -> dict:
    """Normalisation statistics of every source store, saved with the weights that were trained on them."""
    from latbot.data.store import EpisodeStore

    out = {}
    for s in sources:
        with EpisodeStore.open(s.store) as store:
            out[str(s.store)] = store.stats
    return out


def _clips(recipe, sources, world):
    """LAM clips of the recipe's sources and the sampler of this rank."""
    from latbot.data.mixture import build_mixture

    return build_mixture(
        sources,
        recipe.data.num_frames,
        seed=recipe.train.seed,
        rank=world.rank,
        world_size=world.size,
        cameras=recipe.data.cameras,
    )


def run_lam(recipe, resume: Path | None = None, recipe_path: Path | None = None) -> Path:
    """Stage 1: pretrain the latent action model on LAM clips from the recipe's stores."""
    from latbot.models.diagnostics import effective_rank
    from latbot.models.lam import LatentActionModel

    if resume is None:
        _sources(recipe)  # a recipe without data fails before anything is created on disk
    world = distributed.init(recipe.dist.backend)
    try:
        run_dir, recipe = prepare_run(recipe, recipe_path, resume, world)
        sources = _sources(recipe)
        parents = _parents(sources)

        def build_data(w):
            return _clips(recipe, sources, w)

        def diagnostics(model, batch) -> dict[str, float]:
            # latent collapse, watched during training: effective rank of each group over the batch
            with torch.no_grad():
                z_sce, z_mot = model.encode(batch["frames"], list(batch["instruction"]))
            return {"rank_z_sce": effective_rank(z_sce), "rank_z_mot": effective_rank(z_mot)}

        model = train(
            recipe,
            run_dir,
            lambda: LatentActionModel(recipe.model, recipe.data.num_frames),
            build_data,
            world,
            resume is not None,
            on_log=diagnostics if recipe.dist.strategy == "none" else None,
        )
        export(
            run_dir, model, "lam", recipe, parents, world, {"steps": recipe.train.steps, "data_stats": _stats(sources)}
        )
        if world.main:
            print(f"done: {run_dir}")
        return run_dir
    finally:
        distributed.shutdown(world)


def _load_teacher(recipe):
    """The frozen LAM of `model.teacher`, checked against the student and the data."""
    from latbot.artifacts import read_manifest
    from latbot.models.lam import LatentActionModel

    m = recipe.model
    if m.teacher is None:
        raise TrainingError("model.teacher is not set: point it at a LAM run, e.g. --set model.teacher=runs/tiny/lam")
    read_manifest(m.teacher, kind="lam")  # wrong kind / format version → a clear error
    lam = LatentActionModel.from_checkpoint(m.teacher)
    lam.decoder = torch.nn.Identity()  # only the encoder teaches; free the decoder
    enc = lam.config.encoder
    frames = getattr(enc, "num_frames", recipe.data.num_frames)
    if frames != recipe.data.num_frames:
        raise TrainingError(
            f"data.num_frames is {recipe.data.num_frames}, the teacher {m.teacher} reads clips of {frames}; "
            f"set data.num_frames: {frames}"
        )
    s = m.student
    for field in ("num_scene_tokens", "num_motion_tokens"):
        if getattr(s, field) != getattr(enc, field):
            raise TrainingError(
                f"model.student.{field} is {getattr(s, field)}, the teacher has {getattr(enc, field)}; make them equal"
            )
    return lam


def run_distill(recipe, resume: Path | None = None, recipe_path: Path | None = None) -> Path:
    """Stage 2: distil the teacher LAM's latents (and the subtask text) into the student VLM."""
    from latbot.artifacts import parent_ref
    from latbot.data.latent_cache import CachedLatentDataset, build_cache, cache_identity
    from latbot.models.distill import DistillationModel

    lam = None
    if resume is None:  # every check before anything is created on disk; the teacher is loaded once
        _sources(recipe)
        lam = _load_teacher(recipe)
    world = distributed.init(recipe.dist.backend)
    try:
        run_dir, recipe = prepare_run(recipe, recipe_path, resume, world)
        m = recipe.model
        sources = _sources(recipe)
        parents = [parent_ref(m.teacher, "lam"), *_parents(sources)]
        lam = lam or _load_teacher(recipe)  # resuming: the run's saved recipe names the teacher
        width = lam.encoder.width

        def build_data(w):
            clips, sampler = _clips(recipe, sources, w)
            if m.teacher_cache is None:
                return clips, sampler
            identity = cache_identity(m.teacher, sources, recipe.data.num_frames, recipe.data.cameras)
            if not Path(m.teacher_cache).exists() and w.main:
                build_cache(
                    m.teacher_cache,
                    lam,
                    clips,
                    identity,
                    batch_size=recipe.train.micro_batch_size,
                    dtype=m.cache_dtype,
                    device=w.device,
                    progress=recipe.log.progress,
                )
            distributed.barrier(w)
            return CachedLatentDataset(clips, m.teacher_cache, identity), sampler

        def build_model():
            student = registry.build("students", m.student, latent_width=width)
            return DistillationModel(student, lam, m.temperature, m.reasoning_weight)

        model = train(recipe, run_dir, build_model, build_data, world, resume is not None)
        extra = {"latent_width": width, "temperature": model.temperature, "steps": recipe.train.steps}
        export(run_dir, model, "distill", recipe, parents, world, extra)
        if world.main:
            print(f"done: {run_dir}")
        return run_dir
    finally:
        distributed.shutdown(world)


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


def run_finetune(recipe, resume: Path | None = None, recipe_path: Path | None = None) -> Path:
    """Stage 3: train the student VLM (distilled, or plain for the baseline) and the action expert."""
    from latbot.artifacts import parent_ref, read_manifest
    from latbot.data.clips import ChunkDataset, MixtureSampler
    from latbot.models.vla import VisionLanguageAction
    from latbot.recipes.loader import to_dict

    def check_parent():
        m = recipe.model
        if m.student_checkpoint is None:
            return None
        manifest = read_manifest(m.student_checkpoint, kind="distill")
        theirs = manifest.recipe["model"]["student"]
        ours = to_dict(m)["student"]
        free = ("num_frames", "freeze_vision", "attn_implementation")  # fields that do not shape the weights
        diff = sorted(k for k in {*theirs, *ours} if k not in free and theirs.get(k) != ours.get(k))
        if diff:
            raise TrainingError(
                f"model.student differs from the student of {m.student_checkpoint} in {diff}; copy model.student "
                "from that run's recipe.yaml"
            )
        return manifest

    checked = None
    if resume is None:  # every check before anything is created on disk
        checked = _target(_sources(recipe), recipe.data.cameras), check_parent()
    world = distributed.init(recipe.dist.backend)
    try:
        run_dir, recipe = prepare_run(recipe, recipe_path, resume, world)
        m = recipe.model
        sources = _sources(recipe)
        (target, selection), parent = checked or (_target(sources, recipe.data.cameras), check_parent())
        latent_width = parent.extra["latent_width"] if parent else None
        parents = [parent_ref(m.student_checkpoint, "distill")] if parent else []
        parents += _parents(sources)

        def build_model():
            model = VisionLanguageAction(m.student, m.action_expert, m.action_horizon, latent_width)
            if parent is not None:
                from safetensors.torch import load_file

                state = load_file(str(Path(m.student_checkpoint) / "weights" / "model.safetensors"))
                model.student.load_state_dict({k.removeprefix("student."): v for k, v in state.items()})
            return model

        def build_data(w):
            from torch.utils.data import ConcatDataset

            parts = [
                ChunkDataset(s.store, m.action_horizon, episodes=ep, cameras=target["cameras"], stats=target["stats"])
                for s, ep in zip(sources, selection, strict=True)
            ]
            sampler = MixtureSampler(
                [len(p) for p in parts],
                [s.weight for s in sources],
                seed=recipe.train.seed,
                rank=w.rank,
                world_size=w.size,
            )
            return ConcatDataset(parts), sampler

        model = train(recipe, run_dir, build_model, build_data, world, resume is not None)
        export(
            run_dir,
            model,
            "finetune",
            recipe,
            parents,
            world,
            {"target": target, "latent_width": latent_width, "steps": recipe.train.steps},
        )
        if world.main:
            print(f"done: {run_dir}")
        return run_dir
    finally:
        distributed.shutdown(world)
