"""Real size without weights: every real-size recipe's model is built on the meta device with every
transformer layer of every component an FSDP2 unit, runs one forward + backward of its real shapes, and
`latbot plan` turns that into memory per GPU, FLOPs and days; batch arithmetic is checked before launch."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from latbot.recipes import load_recipe
from latbot.train.plan import check_batch, dry_run, meta_model, plan
from tests.conftest import REPO

REAL = ["lam_internvl", "lam_paligemma", "distill_pi05", "finetune_libero"]


def expected_layers(model) -> dict[str, list]:
    """The transformer layers of each component, found from the architecture configs, not from the model's
    own `repeated_blocks()` (so the two can disagree)."""
    parts = {}
    vlms = [("encoder", model.encoder)] if hasattr(model, "encoder") else [("student", model.student)]
    for label, enc in vlms:
        if hasattr(enc.vlm, "config"):  # a transformers model: depths from its configs
            vcfg, tcfg = enc.vlm.config.vision_config, enc.vlm.config.text_config
            tower = enc.vlm.vision_tower.encoder
            parts[f"{label}.vision"] = (list(getattr(tower, "layer", None) or tower.layers), vcfg.num_hidden_layers)
            parts[f"{label}.language"] = (list(enc.vlm.language_model.layers), tcfg.num_hidden_layers)
        else:  # the pi05 student's own PaliGemma: depths from its architecture table
            from latbot.models.pi05.student import PRESETS

            vision, text = PRESETS[enc.config.preset]
            parts[f"{label}.vision"] = (list(enc.vlm.vision_tower.vision_model.encoder.layers), vision[2])
            parts[f"{label}.language"] = (list(enc.vlm.language_model.layers), text[2])
    if hasattr(model, "decoder"):
        n = model.decoder.transformer.config.num_layers
        parts["decoder.sana_blocks"] = (list(model.decoder.transformer.transformer_blocks), n)
        parts["decoder.joint_layers"] = (list(model.decoder.joint), n)
    if hasattr(model, "expert"):
        if hasattr(model.expert, "blocks"):  # the cross-attention flow expert
            parts["action_expert"] = (list(model.expert.blocks), model.expert.config.depth)
        else:  # pi0.5's expert: one layer per VLM layer (shared attention)
            parts["action_expert"] = (list(model.expert.layers), len(model.student.vlm.language_model.layers))
    return parts


@pytest.fixture(scope="module")
def one_process_group(tmp_path_factory):
    import torch.distributed as dist

    init = tmp_path_factory.mktemp("pg") / "init"
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("name", REAL)
def test_every_transformer_layer_of_every_component_is_an_fsdp_unit(name, one_process_group):
    from torch.distributed.fsdp import FSDPModule

    from latbot.train import distributed

    model = meta_model(load_recipe(REPO / f"recipes/{name}.yaml"))
    parts = expected_layers(model)
    distributed.shard(model, distributed.World(0, 1, torch.device("cpu")), precision="bf16")
    counts = {}
    for part, (layers, n) in parts.items():
        assert len(layers) == n, f"{part}: {len(layers)} layers, the config says {n}"
        assert all(isinstance(m, FSDPModule) for m in layers), f"{part}: not every layer is an FSDP unit"
        counts[part] = n
    units = sum(isinstance(m, FSDPModule) for m in model.modules())
    assert units == sum(counts.values()) + 1  # and the root
    print(name, counts)


@pytest.mark.parametrize("name", REAL)
def test_real_size_dry_run_and_plan(name):
    recipe = load_recipe(REPO / f"recipes/{name}.yaml")
    report = plan(recipe, gpus=16, gpu_memory_gb=80, gpu="A100", mfu=0.4)
    mem, flops = report["memory_per_gpu_bytes"], report["flops"]
    assert report["fits"], mem
    assert flops["per_sample_with_recompute"] >= flops["per_sample_model"] > flops["forward_per_sample"] > 1e12
    assert mem["activations_no_checkpointing"] > mem["activations_checkpointing"] > 0
    assert 0 < report["time"]["days"] < 100
    json.dumps(report)


def test_the_dry_run_on_meta_counts_what_a_real_run_computes():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from latbot.models.lam import LatentActionModel

    recipe = load_recipe(REPO / "recipes/tiny/lam.yaml", ["train.micro_batch_size=2", "train.global_batch_size=2"])
    run = dry_run(recipe)
    torch.manual_seed(0)
    model = LatentActionModel(recipe.model, recipe.data.num_frames)
    from latbot.stages.lam import EXAMPLE_INSTRUCTION as INSTRUCTION

    s = recipe.data.image_size
    batch = {
        "frames": torch.randint(0, 255, (2, 4, 3, s, s), dtype=torch.uint8),
        "instruction": [INSTRUCTION] * 2,
        "actions": torch.randn(2, 3, 44),
        "action_mask": torch.ones(2, 44, dtype=torch.bool),
    }
    counter = FlopCounterMode(display=False)
    # the math kernel: the flop counter has no formula for SDPA's CPU flash kernel (it counts CUDA's, and
    # on meta tensors SDPA decomposes into the counted matmuls)
    with counter, sdpa_kernel(SDPBackend.MATH):
        loss = model(batch)["loss"]
    assert counter.get_total_flops() == run.forward_flops
    with counter, sdpa_kernel(SDPBackend.MATH):
        loss.backward()
    assert counter.get_total_flops() == run.backward_flops


def test_batch_arithmetic_is_checked_in_one_line():
    from latbot.errors import TrainingError

    recipe = load_recipe(REPO / "recipes/finetune_libero.yaml")
    assert check_batch(recipe, 16) == 1
    bad = load_recipe(REPO / "recipes/finetune_libero.yaml", ["train.micro_batch_size=8"])
    with pytest.raises(TrainingError, match=r"^train.global_batch_size \(64\) is not a multiple of .*8 × 16 = 128"):
        check_batch(bad, 16)
    from latbot.cli import app

    out = CliRunner().invoke(
        app, ["plan", str(REPO / "recipes/finetune_libero.yaml"), "--set", "train.micro_batch_size=8"]
    )
    assert out.exit_code == 2 and len(out.output.strip().splitlines()) == 1


def test_plan_command_prints_a_table_and_json():
    from latbot.cli import app

    path = str(REPO / "recipes/distill_pi05.yaml")
    out = CliRunner().invoke(app, ["plan", path, "--gpus", "16", "--gpu-memory", "80", "--gpu", "h100", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["cluster"]["gpu"] == "H100" and report["batch"]["accumulation"] == 2
    table = CliRunner().invoke(app, ["plan", path, "--gpus", "8"])
    assert table.exit_code == 0 and "TOTAL per GPU" in table.output and "days" in table.output


@pytest.mark.parametrize("path", sorted((REPO / "recipes/tiny").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_tiny_recipe_dry_runs_through_its_stage(path):
    """Every stage and plugin combination the tiny recipes use builds on meta and steps on its example batch
    (pi0.5's discrete state prompt included: on meta every state dimension is written)."""
    run = dry_run(load_recipe(path))
    assert run.params_total > 0 and run.forward_flops > 0 and run.backward_flops > 0
