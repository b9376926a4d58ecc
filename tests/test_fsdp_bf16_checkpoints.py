"""Real pretrained weights train under FSDP2: every registered encoder, decoder, student and action expert
with a `pretrained` config field is built at its tiny configuration, its backbone saved in bf16 in the layout
it is published in (transformers `save_pretrained` for InternVL / PaliGemma, diffusers `transformer/` +
`vae/` for SANA, LeRobot's `pi05` layout — config.json + model.safetensors, with LeRobot's own fp32
selection — for the pi0.5 student and expert), then built again with `pretrained: <that directory>` (the
real loading path: `from_pretrained` with dtype "auto", or `checkpoint.apply`'s `assign=True`), so the
loaded weights are bf16 beside LatBot's fp32 parameters (latent queries, projections, heads).

With the loop's dtype rule (`distributed.fp32_master_weights`, applied after the model is built and its
weights loaded, before sharding) each trains three steps under 2-process FSDP2 over gloo with the losses
of one unsharded process, in fp32 and with the bf16 MixedPrecisionPolicy (fp32 master weights and AdamW
moments). Without it (the rule replaced by the identity) FSDP2 stops at the first step with
"FSDP expects uniform original parameter dtype" — the failure real checkpoints gave before the rule.
One `mp.spawn` launch runs everything; plugins without a `pretrained` field are listed as not applicable."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from latbot import registry
from latbot.train import distributed
from tests.test_fsdp_contract import KINDS, LATENT, Harness, _tiny, _train

# the kwargs Harness builds each kind with (tests/test_fsdp_contract.py)
EXTRA = {
    "decoders": {"latent_width": LATENT},
    "students": {"latent_width": LATENT},
    "action_experts": {"vlm_width": 16, "vlm_layers": 2, "horizon": 3},
}
# LeRobot's PI05PaliGemma keeps these in float32 when the policy is bfloat16 (as tests/test_pi05_import.py)
LEROBOT_FP32 = ("vision_tower", "multi_modal_projector", "input_layernorm", "post_attention_layernorm", "model.norm")


def applicable() -> tuple[list[tuple[str, str]], list[str]]:
    """(plugins whose tiny Config has a `pretrained` field, the others as "kind/name")."""
    found, not_applicable = [], []
    for kind in KINDS:
        for name in registry.names(kind):
            if "pretrained" in type(_tiny(kind, name)).model_fields:
                found.append((kind, name))
            else:
                not_applicable.append(f"{kind}/{name}")
    return found, not_applicable


def layout(module: nn.Module) -> str:
    from latbot.models.decoders.sana import SanaDecoder
    from latbot.models.encoders.vlm import VLMLatentEncoder

    if isinstance(module, VLMLatentEncoder):
        return "transformers"
    if isinstance(module, SanaDecoder):
        return "diffusers"
    if type(module).__module__.startswith("latbot.models.pi05"):
        return "lerobot_pi05"
    raise AssertionError(
        f"{type(module).__name__} has a `pretrained` field but this test does not know its published layout: "
        "add it to tests/test_fsdp_bf16_checkpoints.py"
    )


def save_published(kind: str, name: str, root: Path) -> str:
    """The tiny plugin (off its zero initialisation, as the contract's Harness) saved in bf16 in its published
    layout → the directory to give as `pretrained`."""
    torch.manual_seed(1)
    m = Harness(kind, name).m
    root.mkdir(parents=True)
    how = layout(m)
    if how == "transformers":
        m.vlm.to(torch.bfloat16).save_pretrained(root)
        m.tokenizer.save_pretrained(root)
    elif how == "diffusers":
        m.transformer.to(torch.bfloat16).save_pretrained(root / "transformer")
        m.vae.to(torch.bfloat16).save_pretrained(root / "vae")
    else:
        from safetensors.torch import save_file

        from latbot.models.pi05 import keys
        from tests.conftest import REPO

        component = "student" if kind == "students" else "expert"
        tensors = {
            keys.to_checkpoint(component, n): t for n, t in m.state_dict().items() if not keys.latbot_only(component, n)
        }
        tensors = {k: (v if any(s in k for s in LEROBOT_FP32) else v.to(torch.bfloat16)) for k, v in tensors.items()}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(root / "model.safetensors"))
        config = json.loads((REPO / "tests/fixtures/pi05_tiny/config.json").read_text())
        (root / "config.json").write_text(json.dumps(config | {"dtype": "bfloat16"}, indent=4))
    return str(root)


class Loaded(Harness):
    """Harness (same inputs and loss) over the plugin built with `pretrained` naming the saved directory, its
    weights loaded as the stages load them."""

    def __init__(self, kind: str, name: str, pretrained: str):
        nn.Module.__init__(self)
        cfg = _tiny(kind, name).model_copy(update={"pretrained": pretrained})
        self.kind = kind
        self.m = registry.build(kind, cfg, **EXTRA.get(kind, {}))
        if layout(self.m) == "lerobot_pi05":  # the stages' initialise: checkpoint.apply right after building
            from latbot.models.pi05 import checkpoint

            checkpoint.apply(**{"student" if kind == "students" else "expert": self.m})
        self.horizon = getattr(cfg, "horizon", 3)
        self.frames = getattr(cfg, "num_frames", 2)


def _dtypes(module: nn.Module) -> list[str]:
    return sorted({str(p.dtype).removeprefix("torch.") for p in module.parameters() if p.requires_grad})


def _worker(rank: int, size: int, init_file: str, out: str, dirs: dict[str, str]) -> None:
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    world = distributed.World(rank, size, torch.device("cpu"))
    results: dict = {"loaded": {}, "fixed": {}, "bf16": {}, "unfixed": {}}
    for key, path in dirs.items():
        kind, name = key.split("/")
        loaded = lambda kind=kind, name=name, path=path: Loaded(kind, name, path)  # noqa: E731
        fixed = lambda loaded=loaded: distributed.fp32_master_weights(loaded())  # noqa: E731  the loop's order
        results["loaded"][key] = _dtypes(loaded())
        got, dtypes = _train(fixed, world, fsdp=True, checkpointing=True)
        ref, _ = _train(fixed, world, fsdp=False, checkpointing=True) if rank == 0 else (None, None)
        results["fixed"][key] = {"fsdp": got, "single": ref, "dtypes": dtypes}
        losses, dtypes = _train(fixed, world, fsdp=True, checkpointing=True, precision="bf16")
        results["bf16"][key] = {"fsdp": losses, "dtypes": dtypes}
        try:  # the rule off: what real checkpoints did before it (both ranks fail alike, before any collective)
            losses, _ = _train(loaded, world, fsdp=True, checkpointing=True)
            results["unfixed"][key] = {"losses": losses}
        except Exception as e:  # recorded, and asserted on by the tests
            results["unfixed"][key] = {"error": f"{type(e).__name__}: {e}"}
    if rank == 0:
        with open(out, "w") as f:
            json.dump(results, f)
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def results():
    found, _ = applicable()
    selected = sorted(f"{k}/{n}" for k, n in found)
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {key: save_published(*key.split("/"), Path(tmp) / key.replace("/", "-")) for key in selected}
        out = os.path.join(tmp, "results.json")
        mp.spawn(_worker, args=(2, os.path.join(tmp, "init"), out, dirs), nprocs=2, join=True)
        with open(out) as f:
            return json.load(f) | {"ran": selected}


def test_applicable_plugins_are_the_ones_with_a_pretrained_field(results):
    found, not_applicable = applicable()
    print("bf16 checkpoints: applicable:", ", ".join(results["ran"]))
    print("bf16 checkpoints: not applicable (no `pretrained` field):", ", ".join(not_applicable))
    assert results["ran"] == sorted(f"{k}/{n}" for k, n in found)
    assert set(results["ran"]) >= {
        "encoders/internvl", "encoders/paligemma", "decoders/sana", "students/internvl", "students/paligemma",
        "students/pi05", "action_experts/pi05",
    }  # fmt: skip
    assert {"decoders/dit", "action_experts/flow"} <= set(not_applicable)


def test_bf16_checkpoints_train_under_fsdp2_like_one_process(results):
    """With the rule: fp32 master weights and AdamW moments, the losses of one process (fp32), and finite
    losses with the bf16 MixedPrecisionPolicy."""
    assert sorted(results["fixed"]) == results["ran"]
    for key in results["ran"]:
        r = results["fixed"][key]
        print(f"{key}: loaded as {results['loaded'][key]}; FSDP2 losses {r['fsdp']}")
        assert all(map(torch.isfinite, torch.tensor(r["fsdp"]))), key
        torch.testing.assert_close(r["fsdp"], r["single"], rtol=1e-5, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")
        assert r["fsdp"][0] != r["fsdp"][-1], f"{key}: the optimizer steps changed nothing"
        assert r["dtypes"] == {"params": ["torch.float32"], "optimizer": ["torch.float32"]}, key
        b = results["bf16"][key]
        assert all(map(torch.isfinite, torch.tensor(b["fsdp"]))), key
        assert b["dtypes"] == {"params": ["torch.float32"], "optimizer": ["torch.float32"]}, key


def test_without_the_fp32_rule_fsdp2_fails_on_bf16_checkpoints(results):
    """The rule off (identity): every plugin whose weights load in bf16 beside LatBot's fp32 parameters fails
    at step 1 as before the rule. All but SANA always do; diffusers keeps the checkpoint's bf16 only with
    `accelerate` installed (low_cpu_mem_usage), else it copies the weights into an fp32 model."""
    mixed = [key for key in results["ran"] if len(results["loaded"][key]) > 1]
    for key in results["ran"]:
        print(f"{key}: loaded as {results['loaded'][key]}; without the rule: {results['unfixed'][key]}")
    assert set(mixed) >= set(results["ran"]) - {"decoders/sana"}, results["loaded"]
    for key in mixed:
        error = results["unfixed"][key].get("error", "")
        assert error.startswith("AssertionError: FSDP expects uniform original parameter dtype"), f"{key}: {error}"


@pytest.mark.parametrize("rule", [True, False])
def test_the_loop_applies_the_rule_before_training(tmp_path, monkeypatch, rule):
    """`latbot train` itself (latbot/train/loop.py) casts a model loaded in bf16 to fp32 master weights right
    after building it: floating parameters and buffers, not integer or bool buffers; bf16 compute is the
    precision's (autocast here). With the rule replaced by the identity the loaded bf16 stays (the loop
    goes through `distributed.fp32_master_weights`, nothing else casts)."""
    if not rule:
        monkeypatch.setattr(distributed, "fp32_master_weights", lambda model: model)
    from latbot.data.clips import MixtureSampler
    from latbot.recipes import load_recipe
    from latbot.train.loop import train
    from tests.conftest import REPO

    class LoadedInBf16(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Linear(3, 4).to(torch.bfloat16)  # as from_pretrained leaves a published bf16 model
            self.head = nn.Linear(4, 1)  # LatBot's own, fp32
            self.register_buffer("scale", torch.tensor(2.0, dtype=torch.bfloat16), persistent=False)
            self.register_buffer("mask", torch.ones(4, dtype=torch.bool), persistent=False)
            self.register_buffer("ids", torch.arange(4), persistent=False)

        def forward(self, batch):
            return {"loss": self.head(self.backbone(batch["x"]) * self.scale).pow(2).mean()}

    overrides = ["train.steps=2", "data.num_workers=0", "log.tensorboard=false", "log.progress=false"]
    overrides += ["train.micro_batch_size=2", "train.global_batch_size=2", "train.precision=bf16", "dist.strategy=none"]
    recipe = load_recipe(REPO / "recipes/tiny/lam.yaml", overrides)
    data = [{"x": torch.ones(3)} for _ in range(4)]
    step = lambda model, batch: model(batch)  # noqa: E731
    model = train(
        recipe,
        tmp_path,
        LoadedInBf16,
        lambda w: (data, MixtureSampler([4], [1.0])),
        step,
        distributed.World(),
        resume=False,
    )
    floating = torch.float32 if rule else torch.bfloat16
    assert (model.backbone.weight.dtype, model.head.weight.dtype) == (floating, torch.float32)
    assert (model.scale.dtype, model.mask.dtype, model.ids.dtype) == (floating, torch.bool, torch.int64)
