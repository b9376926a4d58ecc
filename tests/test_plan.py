"""Real size without weights: every real-size recipe's model is built on the meta device with every
transformer layer of every component an FSDP2 unit, runs one forward + backward of its real shapes, and
`latbot plan` turns that into memory per GPU, FLOPs and days; batch arithmetic is checked before launch."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from latbot.errors import TrainingError
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


def test_fsdp_vs_hsdp_on_several_nodes_memory_and_communication():
    """`--nodes N --gpus-per-node G`: FSDP shards over N·G GPUs and all its collectives span the nodes; HSDP
    shards over the G GPUs of a node (more memory per GPU) and only all-reduces gradient shards across nodes."""
    from latbot.train.plan import DryRun

    recipe = load_recipe(REPO / "recipes/lam_internvl.yaml")  # bf16, reshard_after_forward, no-sync accumulation
    p, t, root = 1_600_000_000, 1_200_000_000, 100_000_000
    run = DryRun(4, p, t, 10, root, 10_000_000, 1, 1, 0, 8, 4, 2, 1)
    report = plan(recipe, gpus=16, gpu_memory_gb=80, run=run, nodes=2)
    c = report["cluster"]
    assert (c["nodes"], c["gpus_per_node"], c["shard_size"]) == (2, 8, 16)
    accum = report["batch"]["accumulation"]
    assert accum == 8
    fsdp, hsdp = report["strategies"]["fsdp"], report["strategies"]["hsdp"]
    assert fsdp["shard_size"] == 16 and hsdp["shard_size"] == 8
    mf, mh = fsdp["memory_per_gpu_bytes"], hsdp["memory_per_gpu_bytes"]
    assert mf["optimizer_sharded"] == 8 * t / 16 and mh["optimizer_sharded"] == 8 * t / 8
    assert mh["total"] - mf["total"] == pytest.approx((4 * p + 12 * t) * (1 / 8 - 1 / 16))
    assert mf["accumulation_unsharded"] == 2 * p + 4 * t  # gathered bf16 parameters + fp32 gradients
    assert report["memory_per_gpu_bytes"] == mf  # a fsdp recipe: the main table is FSDP's
    cf, ch = fsdp["communication_per_step"], hsdp["communication_per_step"]
    gathered = 2 * (root + (1 + accum) * (p - root))  # first forward + every backward; root once
    assert cf["all_gather_bytes"] == pytest.approx(gathered * 15 / 16)
    assert ch["all_gather_bytes"] == pytest.approx(gathered * 7 / 8)
    assert cf["reduce_scatter_bytes"] == pytest.approx(4 * t * 15 / 16)  # once per step, not per micro-batch
    assert cf["within_node_bytes"] == 0 and cf["across_nodes_bytes"] == pytest.approx(
        cf["all_gather_bytes"] + cf["reduce_scatter_bytes"]
    )
    assert ch["all_reduce_bytes"] == pytest.approx(2 * (1 / 2) * 4 * t / 8)  # the gradient shard, 2 replicas
    assert ch["across_nodes_bytes"] == ch["all_reduce_bytes"] < cf["across_nodes_bytes"] / 20
    # without no-sync accumulation: every micro-batch gathers and reduces, and nothing stays unsharded
    synced = plan(load_recipe(REPO / "recipes/lam_internvl.yaml", ["dist.no_sync_accumulation=false"]), 16, 80, run=run)
    s = synced["strategies"]["fsdp"]
    assert s["communication_per_step"]["reduce_scatter_bytes"] == pytest.approx(accum * cf["reduce_scatter_bytes"])
    assert s["memory_per_gpu_bytes"]["accumulation_unsharded"] == 0
    # an hsdp recipe: its own shard size in the main table; one that does not divide the GPUs: a recipe error
    h = plan(
        load_recipe(REPO / "recipes/lam_internvl.yaml", ["dist.strategy=hsdp", "dist.shard_size=8"]), 16, 80, run=run
    )
    assert h["cluster"]["shard_size"] == 8 and h["memory_per_gpu_bytes"] == mh
    from latbot.errors import RecipeError

    bad = load_recipe(REPO / "recipes/lam_internvl.yaml", ["dist.strategy=hsdp", "dist.shard_size=3"])
    with pytest.raises(RecipeError, match=r"dist.shard_size \(3\) must divide the number of processes \(16\)"):
        plan(bad, 16, 80, run=run)


def test_plan_command_compares_fsdp_and_hsdp_per_node():
    from latbot.cli import app

    path = str(REPO / "recipes/tiny/lam.yaml")
    args = ["plan", path, "--nodes", "2", "--gpus-per-node", "2", "--set", "train.micro_batch_size=2"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "2 node(s) × 2 = 4" in out.output and "FSDP" in out.output and "sent across nodes, per step" in out.output
    report = json.loads(CliRunner().invoke(app, [*args, "--json"]).output)
    assert report["cluster"]["gpus"] == 4 and set(report["strategies"]) == {"fsdp", "hsdp"}
    half = CliRunner().invoke(app, ["plan", path, "--nodes", "2"])
    assert half.exit_code == 2 and "--gpus-per-node" in half.output


def test_the_plan_counts_the_online_teacher_of_a_distillation():
    """Without a teacher cache the frozen teacher runs in every step: its forward FLOPs and its memory are in
    the plan (from the teacher's LAM recipe when the run does not exist yet), and a cached run has none."""
    recipe = load_recipe(REPO / "recipes/tiny/distill.yaml", ["train.micro_batch_size=2", "train.global_batch_size=4"])
    alone = plan(recipe, 2, 80.0)
    assert "not_counted" in alone["frozen"] and alone["memory_per_gpu_bytes"].get("frozen_models", 0) == 0
    online = plan(recipe, 2, 80.0, teacher_recipe=REPO / "recipes/tiny/lam.yaml")
    teacher = online["frozen"]
    assert teacher["forward_flops_per_sample"] > 0 and teacher["params"] > 0
    assert (
        online["flops"]["per_sample_model"] == alone["flops"]["per_sample_model"] + teacher["forward_flops_per_sample"]
    )
    m = online["memory_per_gpu_bytes"]
    assert m["frozen_models"] == teacher["memory_per_gpu_bytes"]["total"] > 0
    assert m["total"] == alone["memory_per_gpu_bytes"]["total"] + m["frozen_models"]
    two_nodes = plan(recipe, 2, 80.0, nodes=2, teacher_recipe=REPO / "recipes/tiny/lam.yaml")["strategies"]
    assert all(s["memory_per_gpu_bytes"]["frozen_models"] > 0 for s in two_nodes.values())  # FSDP and HSDP
    cached = load_recipe(REPO / "recipes/tiny/distill.yaml", ["train.micro_batch_size=2", "train.global_batch_size=4",
                                                               "model.teacher_cache=caches/x"])  # fmt: skip
    assert plan(cached, 2, 80.0, teacher_recipe=REPO / "recipes/tiny/lam.yaml")["frozen"] is None


def test_the_plan_states_host_memory_per_rank_for_both_builds():
    """Start-up host memory: the whole fp32 model on every rank, or (dist.meta_init) on process 0 only what no
    pretrained checkpoint provides — each rank reads its own rows of those — plus one tensor in transit."""
    recipe = load_recipe(REPO / "recipes/tiny/lam.yaml")
    report = plan(recipe, 1, 80.0)
    host, run = report["host_memory_per_rank_bytes"], report["dry_run"]
    transit = 4 * run["largest_tensor_params"]
    assert host["pretrained_params"] == 0  # random initialisation only: process 0 builds everything
    assert host["ordinary_every_rank"] == 4 * run["params_total"] == host["meta_init_process_0"] - transit
    assert 0 < host["meta_init_other_ranks"] == transit < host["ordinary_every_rank"]
    assert host["used"] == "ordinary"
    # a pretrained InternVL (the encoder's vision tower, projector and language model): read per rank
    pretrained = load_recipe(REPO / "recipes/tiny/lam.yaml", ["model.encoder.pretrained=OpenGVLab/any"])
    h = plan(pretrained, 1, 80.0)["host_memory_per_rank_bytes"]
    from latbot.models.lam import LatentActionModel

    vlm = sum(p.numel() for p in LatentActionModel(recipe.model, recipe.data.num_frames).encoder.vlm.parameters())
    assert h["pretrained_params"] == vlm > 0
    assert h["meta_init_process_0"] == 4 * (run["params_total"] - vlm) + transit
    meta = load_recipe(REPO / "recipes/tiny/lam.yaml", ["dist.strategy=fsdp", "dist.meta_init=true"])
    assert plan(meta, 1, 80.0)["host_memory_per_rank_bytes"]["used"] == "meta_init"


def _sources(tmp_path, *entries) -> list[str]:
    """`--set` of data.sources: (name, store) pairs; a store under tmp_path that is not made does not exist."""
    items = ", ".join(f"{{name: {n}, store: {tmp_path / s}}}" for n, s in entries)
    return [f"data.sources=[{items}]"]


def test_the_disk_plan_is_frames_times_cameras_times_the_codecs_bytes_per_frame(tmp_path):
    """Per source: frames (given, from its store when it exists, or Table 6's known sizes) × cameras × the
    measured bytes per frame of the codec at the recipe's image size; a codec or a size changes the total in
    the table's ratio; sources of unknown size are named, not counted."""
    from latbot.train.plan import CODEC_TABLE, SOURCE_SIZES, disk_plan
    from tests.test_clips import make_store

    make_store(tmp_path / "made")  # 4 episodes × 20 steps, one camera
    sets = _sources(tmp_path, ("fractal", "fractal"), ("mine", "mine"), ("made", "made"), ("kuka", "kuka"))
    recipe = load_recipe(REPO / "recipes/tiny/lam.yaml", [*sets, "data.image_size=224"])
    disk = disk_plan(recipe, "lz4", frames={"mine": 1000})
    per = CODEC_TABLE["bytes_per_frame"]["lz4"]
    assert CODEC_TABLE["image_size"] == 224 and disk["bytes_per_frame"] == per
    rows = {r["name"]: r for r in disk["sources"]}
    assert rows["fractal"]["frames"] == SOURCE_SIZES["fractal"]["frames"] == 3_786_400
    assert rows["mine"]["frames"] == 1000 and rows["mine"]["frames_from"] == "--frames"
    assert rows["made"]["frames"] == 80 and rows["made"]["frames_from"].startswith("store ")
    assert rows["kuka"]["frames"] is None and rows["kuka"]["store_bytes"] is None
    assert all(r["cameras"] == 1 for r in rows.values())
    total = disk["total"]
    assert total["frames"] == 3_786_400 + 1000 + 80
    assert total["store_bytes"] == (3_786_400 + 1000 + 80) * per
    assert total["sources_counted"] == 3 and total["sources_unknown"] == ["kuka"]
    # another codec: the same frames at its own measured bytes
    zstd = disk_plan(recipe, "zstd", frames={"mine": 1000})["total"]["store_bytes"]
    assert zstd / total["store_bytes"] == pytest.approx(CODEC_TABLE["bytes_per_frame"]["zstd"] / per, rel=1e-12)
    assert zstd < total["store_bytes"]
    # twice the side: four times the pixels
    big = load_recipe(REPO / "recipes/tiny/lam.yaml", [*sets, "data.image_size=448"])
    assert disk_plan(big, "lz4", frames={"mine": 1000})["total"]["store_bytes"] == pytest.approx(
        4 * total["store_bytes"], rel=1e-12
    )
    # a swapped table is used as is; its source is stated
    table = {"image_size": 224, "bytes_per_frame": {"lz4": 100.0}, "source": "my bench"}
    swapped = disk_plan(recipe, "lz4", frames={"mine": 1000}, table=table)
    assert swapped["total"]["store_bytes"] == (3_786_400 + 1000 + 80) * 100.0
    assert "my bench" in swapped["bytes_per_frame_source"]
    # EgoDex: the source copy's own size is known and reported next to the store's
    ego = disk_plan(load_recipe(REPO / "recipes/tiny/lam.yaml", _sources(tmp_path, ("egodex", "egodex"))))
    assert ego["sources"][0]["source_bytes"] == SOURCE_SIZES["egodex"]["bytes"] == ego["total"]["source_bytes"]
    with pytest.raises(TrainingError, match="--codec webp"):
        disk_plan(recipe, "webp")
    with pytest.raises(TrainingError, match="--frames nope"):
        disk_plan(recipe, "lz4", frames={"nope": 5})


def test_the_real_size_lam_recipe_plans_its_disk_from_the_table6_mixture():
    """lam_internvl: all 29 Table 6 sources; the known ones (fractal, language_table, EgoDex) at 448² lz4."""
    from latbot.train.plan import CODEC_TABLE, SOURCE_SIZES, disk_plan

    disk = disk_plan(load_recipe(REPO / "recipes/lam_internvl.yaml"))
    assert len(disk["sources"]) == 29 and disk["image_size"] == 448
    known = sum(SOURCE_SIZES[n]["frames"] for n in ("fractal", "language_table", "egodex"))
    assert disk["total"]["frames"] == known and disk["total"]["sources_counted"] == 3
    assert disk["total"]["store_bytes"] == pytest.approx(known * CODEC_TABLE["bytes_per_frame"]["lz4"] * 4, rel=1e-12)


def test_plan_command_prints_and_returns_the_disk(tmp_path):
    from latbot.cli import app

    path = str(REPO / "recipes/tiny/lam.yaml")
    sets = ["--set", _sources(tmp_path, ("fractal", "fractal"), ("mine", "mine"))[0]]
    args = ["plan", path, *sets, "--gpus", "1", "--codec", "zstd", "--frames", "mine=500"]
    out = CliRunner().invoke(app, [*args, "--json"])
    assert out.exit_code == 0, out.output
    disk = json.loads(out.output)["disk"]
    assert disk["codec"] == "zstd" and disk["total"]["frames"] == 3_786_400 + 500
    assert disk["total"]["store_bytes"] == pytest.approx((3_786_400 + 500) * disk["bytes_per_frame"], rel=1e-12)
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "disk: episode stores at 64² with codec zstd" in table.output and "bench_codecs" in table.output
    assert "TOTAL (2 of 2 sources)" in table.output
    bad = CliRunner().invoke(app, ["plan", path, *sets, "--gpus", "1", "--frames", "mine"])
    assert bad.exit_code == 2 and "--frames mine: expected NAME=N" in bad.output
    own = tmp_path / "codecs.json"
    own.write_text(json.dumps({"image_size": 64, "bytes_per_frame": {"zstd": 10}, "source": "my_codecs.json"}))
    swapped = json.loads(CliRunner().invoke(app, [*args, "--codec-table", str(own), "--json"]).output)["disk"]
    assert (
        swapped["total"]["store_bytes"] == (3_786_400 + 500) * 10
        and "my_codecs.json" in swapped["bytes_per_frame_source"]
    )
