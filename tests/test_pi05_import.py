"""Any pi0.5-architecture checkpoint loads by its own description, not only the presets: `preset:
checkpoint` reads every size from the checkpoint (config.json + the safetensors headers, checked tensor by
tensor) when a stage starts, the run records them, and the policy runs on pre-tokenised prompts with
per-camera masks (`Pi05Student.prefix_cache_from_tokens`).

Two checkpoints at sizes no preset has are written here in LeRobot's layout (config.json as
`PI05Policy.save_pretrained` writes it, `model.safetensors` with `model.` keys, both LM heads), built from
LatBot's own modules through the inverse of the key table with random values: one fp32, one bf16 with
LeRobot's fp32 islands (vision tower, projector, norms). LeRobot's own tiny checkpoint
(tests/fixtures/pi05_tiny) loads by its config too and still computes what LeRobot computes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from latbot import registry
from latbot.errors import RecipeError
from latbot.models.pi05 import checkpoint, keys
from latbot.models.pi05.student import Pi05Dims, Pi05Student
from latbot.recipes import load_recipe, recipe_from_dict, to_dict
from tests.conftest import REPO
from tests.test_pi05 import CROSSCHECK, FIXTURE, lerobot_prefix

TINY = REPO / "recipes" / "tiny"
# sizes no preset has: (student dims, expert sizes, what the recipe must state, dtype)
SPECS = {
    "wide": (
        dict(vision_width=24, vision_mlp_dim=40, vision_depth=2, vision_heads=3, image_size=40, patch_size=8,
             width=48, mlp_dim=96, depth=3, heads=8, kv_heads=1, head_dim=6, vocab=448),
        dict(width=24, mlp_dim=40, action_dim=24, chunk=6),
        {"vision_heads": 3},  # a resized SigLIP's head count is in no file
        "float32",
    ),
    "narrow": (
        dict(vision_width=32, vision_mlp_dim=48, vision_depth=3, vision_heads=4, image_size=16, patch_size=4,
             width=40, mlp_dim=72, depth=2, heads=4, kv_heads=2, head_dim=10, vocab=430),
        dict(width=20, mlp_dim=36, action_dim=32, chunk=4),
        {"vision_heads": 4, "heads": 4},  # and 4 query heads, not pi0.5's 8 (KV heads and head_dim follow)
        "bfloat16",
    ),
}  # fmt: skip
# LeRobot's PI05PaliGemma keeps these in float32 when the policy is bfloat16 (to_bfloat16_for_selected_params)
LEROBOT_FP32 = ("vision_tower", "multi_modal_projector", "input_layernorm", "post_attention_layernorm", "model.norm")


def write_checkpoint(root, name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A pi0.5 checkpoint of SPECS[name] in LeRobot's layout → its tensors."""
    dims, ex, _, dtype = SPECS[name]
    torch.manual_seed(seed)
    d = Pi05Dims(**dims)
    student = Pi05Student(Pi05Student.Config(preset="custom", dims=d, tokenizer=None, num_scene_tokens=0,
                                             num_motion_tokens=0))  # fmt: skip
    cls = registry.get("action_experts", "pi05")
    cfg = cls.Config(width=ex["width"], mlp_dim=ex["mlp_dim"], heads=d.heads, kv_heads=d.kv_heads,
                     head_dim=d.head_dim, action_dim=ex["action_dim"])  # fmt: skip
    expert = cls(cfg, vlm_width=d.width, vlm_layers=d.depth, horizon=ex["chunk"])
    tensors = {}
    for component, module in (("student", student), ("expert", expert)):
        for n, t in module.state_dict().items():
            if not keys.latbot_only(component, n):  # off the initialisation: adaRMS projections start at zero
                tensors[keys.to_checkpoint(component, n)] = t + torch.randn_like(t) * 0.1
    embed = "model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
    tensors["model.paligemma_with_expert.paligemma.lm_head.weight"] = tensors[embed].clone()  # tied in LeRobot
    tensors["model.paligemma_with_expert.gemma_expert.lm_head.weight"] = torch.randn(d.vocab, ex["width"])
    if dtype == "bfloat16":
        tensors = {k: v if any(s in k for s in LEROBOT_FP32) else v.to(torch.bfloat16) for k, v in tensors.items()}
    root.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(root / "model.safetensors"))
    config = json.loads((FIXTURE / "config.json").read_text())  # LeRobot's PI05Config as save_pretrained writes it
    s = d.image_size
    for feature in config["input_features"].values():
        if feature["type"] == "VISUAL":
            feature["shape"] = [3, s, s]
    config |= {"chunk_size": ex["chunk"], "n_action_steps": ex["chunk"], "max_action_dim": ex["action_dim"],
               "image_resolution": [s, s], "dtype": dtype}  # fmt: skip
    (root / "config.json").write_text(json.dumps(config, indent=4))
    return tensors


def recipe(path, stated=None, expert=None, **model):
    """recipes/tiny/baseline_pi05.yaml with both pi05 parts sized and loaded from the checkpoint `path`."""
    data = to_dict(load_recipe(TINY / "baseline_pi05.yaml"))
    data["model"]["student"] = {"type": "pi05", "preset": "checkpoint", "pretrained": str(path), "tokenizer": None,
                                "num_scene_tokens": 0, "num_motion_tokens": 0, "dims": stated}  # fmt: skip
    data["model"]["action_expert"] = {"type": "pi05", "preset": "checkpoint", "pretrained": str(path)} | (expert or {})
    data["model"] |= model
    return recipe_from_dict(data)


def stage_model(r):
    """What a run does before training: validate (reads no file), resolve the sizes (prepare), build + load."""
    stage = registry.get("stages", r.stage)(r)
    stage.validate()
    stage.resolve_sizes()
    return stage, stage.build_model()


@pytest.mark.parametrize("name", list(SPECS))
def test_a_checkpoint_of_other_sizes_loads_by_its_config(tmp_path, name):
    dims, ex, stated, dtype = SPECS[name]
    saved = write_checkpoint(tmp_path / name, name)
    r = recipe(tmp_path / name, stated, {"state": "discrete"})
    stage, model = stage_model(r)
    # the sizes were read from the checkpoint and written into the recipe (what the run records)
    student, expert = r.model.student, r.model.action_expert
    assert student.preset == "custom" and student.dims.model_dump() == dims
    assert expert.preset == "custom" and (expert.width, expert.mlp_dim, expert.action_dim) == (
        ex["width"], ex["mlp_dim"], ex["action_dim"])  # fmt: skip
    assert (expert.heads, expert.kv_heads, expert.head_dim) == (dims["heads"], dims["kv_heads"], dims["head_dim"])
    assert model.student.num_layers == len(model.expert.layers) == dims["depth"]
    # every tensor as saved, dtype included
    mapped, dropped, unknown = keys.map_keys(saved)
    assert not unknown and len(dropped) == 2
    params = {"student": model.student.state_dict(), "expert": model.expert.state_dict()}
    for key, (component, n) in mapped.items():
        got = params[component][n]
        assert got.dtype == saved[key].dtype and torch.equal(got, saved[key]), key
    dtypes = {str(t.dtype).removeprefix("torch.") for t in params["expert"].values()}
    assert dtypes == ({"float32"} if dtype == "float32" else {"bfloat16", "float32"})
    report = stage.pretrained
    assert report["student"]["sizes"] == dims and report["expert"]["sizes"]["action_dim"] == ex["action_dim"]
    assert "config.json's paligemma_variant gemma_2b" in " ".join(report["student"]["notes"])
    # a forward (the training loss) and a sampled chunk run at these sizes, in these dtypes
    batch = stage.example_batch(2, "cpu")
    batch["action_mask"][:, 7:] = False  # a 7-D arm: fits every packed width
    with torch.no_grad():
        loss = stage.train_step(model.eval(), batch)["loss"]
        actions, _ = model.sample(
            batch["frames"], batch["instruction"], batch["state"], batch["state_mask"], batch["action_mask"],
            torch.Generator().manual_seed(0),
        )  # fmt: skip
    assert torch.isfinite(loss) and actions.shape == (2, 4, 44) and torch.isfinite(actions.float()).all()
    # the recorded (custom) recipe builds the same architecture without the checkpoint: `plan` reads it
    rebuilt = recipe_from_dict(to_dict(r))
    with torch.device("meta"):
        meta = registry.get("stages", "finetune")(rebuilt).architecture()
    assert {n: p.shape for n, p in meta.named_parameters()} == {n: p.shape for n, p in model.named_parameters()}


def test_a_corrupted_or_inconsistent_checkpoint_is_one_line_naming_the_tensor(tmp_path):
    root = tmp_path / "bad"
    saved = write_checkpoint(root, "wide")
    key = "model.paligemma_with_expert.paligemma.model.language_model.layers.1.mlp.gate_proj.weight"
    save_file({**saved, key: torch.zeros(97, 48)}, str(root / "model.safetensors"))
    stated = SPECS["wide"][2]

    def error(r) -> str:
        with pytest.raises(checkpoint.PretrainedError) as e:
            stage_model(r)
        assert "\n" not in str(e.value)
        return str(e.value)

    msg = error(recipe(root, stated))
    assert f"{key}: checkpoint (97, 48) vs expected (96, 48)" in msg, msg  # outvoted by the other layers
    save_file(saved, str(root / "model.safetensors"))
    # a size the recipe states is checked like the rest
    msg = error(recipe(root, stated | {"width": 64}))
    assert "language_model.embed_tokens.weight: checkpoint (448, 48) vs expected (448, 64)" in msg, msg
    msg = error(recipe(root, stated, {"action_dim": 32}))
    assert "model.action_in_proj.weight: checkpoint (24, 24) vs expected (24, 32)" in msg, msg
    # config.json's numbers against the tensors that carry them
    config = json.loads((root / "config.json").read_text())
    (root / "config.json").write_text(json.dumps(config | {"max_action_dim": 16}))
    msg = error(recipe(root, stated))
    assert (
        "model.action_in_proj.weight: checkpoint (24, 24) vs expected (24, 16) (config.json max_action_dim 16)" in msg
    )
    (root / "config.json").write_text(json.dumps(config | {"image_resolution": [48, 48]}))
    msg = error(recipe(root, stated))
    assert "position_embedding.weight: checkpoint (25, 24) vs expected (36, 24)" in msg, msg
    (root / "config.json").write_text(json.dumps(config))
    # what no file holds must be stated
    msg = error(recipe(root, None))
    assert "state it as model.student.dims.vision_heads" in msg, msg


def test_the_lerobot_fixture_loads_by_its_config_and_matches_lerobot():
    """LeRobot's tiny checkpoint names gemma_2b / gemma_300m in its config.json (make_fixture.py patched
    LeRobot's builders): its tensors give the sizes, and the one number no file holds (SigLIP's 2 heads) is
    stated. Loaded through the documented API and run on LeRobot's token ids and camera masks."""
    vla, report = checkpoint.load_vla(FIXTURE, student={"tokenizer": None, "dims": {"vision_heads": 2}},
                                      expert={"state": "none"})  # fmt: skip
    assert vla.student.config.dims == Pi05Dims.of("tiny") and vla.horizon == 4  # config.json's chunk_size
    assert vla.expert.config.preset == "custom" and (vla.expert.config.width, vla.expert.config.action_dim) == (16, 32)
    assert any("gemma_2b has width 2048" in n for n in report["student"]["notes"])
    x = load_file(str(CROSSCHECK))
    with torch.no_grad():
        cache, valid = vla.student.prefix_cache_from_tokens(
            list(x["images"]), x["tokens"], x["token_mask"], list(x["img_masks"])
        )  # LeRobot's lists: one (B, 3, S, S) image and one (B,) mask per camera
        internal, _ = lerobot_prefix(vla.student, x)  # tests/test_pi05.py's literal LeRobot layout
        t = x["time"]
        x_t = t[:, None, None] * x["noise"] + (1 - t[:, None, None]) * x["actions"]
        v = vla.expert.velocity(x_t, t, cache, valid)
        sampled = vla.expert.denoise(x["sample_noise"], cache, valid)
    for a, b in zip(cache.keys + cache.values, internal.keys + internal.values, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    assert float((v - x["velocity"]).abs().max()) < 1e-4
    assert float((sampled - x["sampled"]).abs().max()) < 1e-4


def test_a_masked_camera_is_as_if_it_were_not_there():
    vla, _ = checkpoint.load_vla(FIXTURE, student={"tokenizer": None, "dims": {"vision_heads": 2},
                                                   "num_scene_tokens": 2, "num_motion_tokens": 2})  # fmt: skip
    x = load_file(str(CROSSCHECK))
    pixels = x["images"].transpose(0, 1)  # (B, C, 3, S, S)
    masks = torch.tensor([[True, False], [True, True]])
    noise = x["sample_noise"]
    with torch.no_grad():
        masked = vla.expert.denoise(noise, *vla.student.prefix_cache_from_tokens(pixels, x["tokens"], x["token_mask"],
                                                                                masks))  # fmt: skip
        alone = vla.expert.denoise(noise[:1], *vla.student.prefix_cache_from_tokens(
            pixels[:1, :1], x["tokens"][:1], x["token_mask"][:1]))  # fmt: skip
        both = vla.expert.denoise(noise, *vla.student.prefix_cache_from_tokens(pixels, x["tokens"], x["token_mask"]))
        # the same through the text path: frames + instructions
        frames = torch.randint(0, 256, (2, 2, 3, 32, 32), dtype=torch.uint8)
        texts = ["open the drawer", "push the puck"]
        with_mask = vla.expert.denoise(noise, *vla.student.prefix_cache(frames, texts, image_masks=masks))
        first_only = vla.expert.denoise(noise[:1], *vla.student.prefix_cache(frames[:1, :1], texts[:1]))
    torch.testing.assert_close(masked[:1], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(masked[1:], both[1:], atol=1e-5, rtol=1e-5)
    assert (masked[:1] - both[:1]).abs().max() > 1e-3  # the camera mattered before it was masked
    torch.testing.assert_close(with_mask[:1], first_only, atol=1e-5, rtol=1e-5)


def test_architecture_reads_no_file_and_says_how_to_plan_a_checkpoint_preset(tmp_path):
    r = recipe(FIXTURE, {"vision_heads": 2})
    stage = registry.get("stages", "finetune")(r)
    stage.validate()  # skips the build: the sizes come in `prepare`
    with pytest.raises(RecipeError, match=r"python -m latbot\.models\.pi05\.checkpoint DIR"):
        stage.architecture()
    slots = checkpoint.sizes(FIXTURE, vision_heads=2)  # what that command prints
    assert slots["student"] == {"type": "pi05", "preset": "custom", "dims": Pi05Dims.of("tiny").model_dump()}
    assert slots["action_expert"]["width"] == 16 and slots["action_expert"]["num_steps"] == 10
    # a finetuning child of a distillation run takes that run's sizes (its student's weights come from it)
    recorded = {"type": "pi05", "preset": "custom", "dims": Pi05Dims.of("mini").model_dump()}
    adopted = checkpoint.sizes_of_parent(r.model.student.model_copy(update={"dims": None}), recorded)
    assert adopted.preset == "custom" and adopted.dims == Pi05Dims.of("mini")
    conflicting = r.model.student.model_copy(update={"dims": Pi05Dims(width=48)})
    assert checkpoint.sizes_of_parent(conflicting, recorded) is conflicting  # the stage then names the difference


def test_a_run_records_the_sizes_and_its_policy_needs_no_checkpoint(tmp_path):
    from latbot import stages
    from latbot.policy import LatBotPolicy
    from latbot.sim.generate import generate

    store = tmp_path / "store"
    generate(registry.get("simulators", "metaworld").Config(), ["reach"], 2, store, image_size=32, seed=0,
             progress=False)  # fmt: skip
    ckpt = tmp_path / "ckpt"
    write_checkpoint(ckpt, "wide")
    r = recipe(ckpt, SPECS["wide"][2], {"state": "discrete"}, action_horizon=3)
    data = to_dict(r)
    data["data"] |= {"sources": [{"store": str(store)}], "image_size": 32, "num_workers": 0}
    data["train"] |= {"steps": 2, "checkpoint_every": 2, "global_batch_size": 2, "micro_batch_size": 2}
    data["log"] |= {"out_dir": str(tmp_path / "runs"), "run_name": "wide", "progress": False}
    run = stages.run(recipe_from_dict(data))
    manifest = json.loads((run / "latbot.json").read_text())
    assert manifest["recipe"]["model"]["student"]["preset"] == "custom"
    assert manifest["recipe"]["model"]["student"]["dims"] == SPECS["wide"][0]
    assert manifest["recipe"]["model"]["action_expert"]["action_dim"] == 24
    assert manifest["extra"]["pretrained"]["expert"]["sizes"]["width"] == 24
    shutil.rmtree(ckpt)  # serving rebuilds from the recorded sizes alone
    policy = LatBotPolicy.from_checkpoint(run)
    meta = policy.metadata
    obs = {
        "images": {c: np.zeros((*meta["image_size"], 3), np.uint8) for c in meta["cameras"]},
        "state": np.zeros(meta["state_dim"], np.float32),
        "instruction": "reach the goal",
    }
    actions = policy.predict(obs)
    assert actions.shape == (3, meta["action_dim"]) and np.isfinite(actions).all()


def test_distillation_sizes_its_student_from_the_checkpoint(tmp_path):
    saved = write_checkpoint(tmp_path / "narrow", "narrow")
    data = to_dict(load_recipe(TINY / "distill_pi05.yaml"))
    data["model"]["student"] = {"type": "pi05", "preset": "checkpoint", "pretrained": str(tmp_path / "narrow"),
                                "tokenizer": None, "num_scene_tokens": 8, "num_motion_tokens": 8,
                                "dims": SPECS["narrow"][2]}  # fmt: skip
    stage, model = stage_model(recipe_from_dict(data))
    assert stage.recipe.model.student.dims.model_dump() == SPECS["narrow"][0]
    params = model.student.state_dict()
    for key, (component, n) in keys.map_keys(saved)[0].items():
        if component == "student":
            assert torch.equal(params[n], saved[key]), key
    assert set(stage.pretrained) == {"student"} and stage.pretrained["student"]["sizes"]["heads"] == 4
    assert stage.pretrained["student"]["initialised_fresh"] == ["motion_queries", "scene_queries"]
    with torch.no_grad():
        latents = model.student(torch.zeros(2, 1, 3, 24, 24, dtype=torch.uint8), ["reach", "push"])["latents"]
    assert latents.shape == (2, 16, 40) and torch.isfinite(latents.float()).all()
