"""Stage runners behind `latbot train`: each builds its model and data, then hands them to the loop."""

from __future__ import annotations

from pathlib import Path

import torch

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


def run_lam(recipe, resume: Path | None = None, recipe_path: Path | None = None) -> Path:
    """Stage 1: pretrain the latent action model on LAM clips from the recipe's stores."""
    from latbot.data.mixture import build_mixture
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
            return build_mixture(
                sources,
                recipe.data.num_frames,
                seed=recipe.train.seed,
                rank=w.rank,
                world_size=w.size,
                cameras=recipe.data.cameras,
            )

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
