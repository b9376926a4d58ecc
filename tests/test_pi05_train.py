"""The tiny pi0.5 recipes train end to end on a MetaWorld store: LAM → distill into the `pi05` student
(from LeRobot's tiny pi0.5 checkpoint) → finetune with the `pi05` expert (its weights from the same
checkpoint) and the tiny pi0.5 baseline; the manifests list the loaded pi0.5 components and the finetuned
policy predicts through `LatBotPolicy` (the serve / eval path)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from latbot import registry
from latbot.recipes import load_recipe
from tests.conftest import REPO

TINY = REPO / "recipes" / "tiny"
CHECKPOINT = REPO / "tests" / "fixtures" / "pi05_tiny"


def run(recipe: str, out, name: str, *sets: str):
    from latbot import stages

    path = TINY / recipe
    r = load_recipe(path, [f"log.out_dir={out}", f"log.run_name={name}", "log.progress=false", *sets])
    return stages.run(r, recipe_path=path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from latbot.sim.generate import generate

    root = tmp_path_factory.mktemp("pi05")
    store = root / "store"
    sim = registry.get("simulators", "metaworld").Config()
    generate(sim, ["reach", "drawer-open"], 2, store, image_size=64, seed=0, progress=False)
    src = f"data.sources=[{{store: {store}}}]"
    few = ("train.steps=3", "train.checkpoint_every=3", "train.global_batch_size=4", "train.micro_batch_size=4")
    lam = run("lam.yaml", root, "lam", src, *few)
    distill = run("distill_pi05.yaml", root, "distill", src, f"model.teacher={lam}",
                  f"model.student.pretrained={CHECKPOINT}", *few)  # fmt: skip
    expert = f"model.action_expert.pretrained={CHECKPOINT}"
    latbot = run("finetune_pi05.yaml", root, "latbot", src, f"model.student_checkpoint={distill}", expert, *few)
    baseline = run("baseline_pi05.yaml", root, "baseline", src, f"model.student.pretrained={CHECKPOINT}", expert, *few)
    return {"store": store, "distill": distill, "latbot": latbot, "baseline": baseline}


def manifest(run_dir):
    return json.loads((run_dir / "latbot.json").read_text())


def test_tiny_pi05_recipes_train_and_record_the_loaded_components(runs):
    d = manifest(runs["distill"])["extra"]["pretrained"]
    assert set(d) == {"student"} and set(d["student"]["components"]) == {"siglip", "projector", "gemma_2b"}
    assert d["student"]["initialised_fresh"] == ["latent_proj.bias", "latent_proj.weight", "motion_queries",
                                                 "scene_queries"]  # fmt: skip
    ft = manifest(runs["latbot"])["extra"]["pretrained"]
    assert set(ft) == {"expert"}  # the student comes from the distilled run
    assert {"expert_layers", "action_in_proj", "time_mlp"} <= set(ft["expert"]["components"])
    base = manifest(runs["baseline"])["extra"]["pretrained"]
    assert set(base) == {"student", "expert"}
    for name in ("distill", "latbot", "baseline"):
        lines = (runs[name] / "metrics.jsonl").read_text().splitlines()
        assert lines and all(np.isfinite(json.loads(x).get("loss", 0.0)) for x in lines)


@pytest.mark.parametrize("name", ["latbot", "baseline"])
def test_pi05_policy_predicts_native_actions(runs, name):
    from latbot.policy import LatBotPolicy

    policy = LatBotPolicy.from_checkpoint(runs[name])
    meta = policy.metadata
    obs = {
        "images": {c: np.zeros((*meta["image_size"], 3), np.uint8) for c in meta["cameras"]},
        "state": np.zeros(meta["state_dim"], np.float32),
        "instruction": "open the drawer",
    }
    actions = policy.predict(obs)
    assert actions.shape == (meta["action_horizon"], meta["action_dim"]) and np.isfinite(actions).all()
    np.testing.assert_array_equal(actions, policy.predict(obs))  # seeded: the same chunk twice
