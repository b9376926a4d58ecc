"""FSDP2 contract over the registry: every registered encoder, decoder, student and action expert, at its
tiny configuration, and every registered stage's whole model (its `architecture()` on its `example_batch`),
trains (forward + backward + AdamW step) under 2-process FSDP2 over gloo, with
activation checkpointing off and on, and gives the losses of one unsharded process. One launch runs
them all (a new plugin is covered without touching this file). Also: bf16 mixed precision as FSDP2 means
it (bf16 gather/compute, fp32 reduction, fp32 master weights) gives the fp32 losses within tolerance."""

from __future__ import annotations

import json
import os
import tempfile

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from latbot import registry
from latbot.train import distributed

KINDS = ("encoders", "decoders", "students", "action_experts")
STEPS = 3  # losses of three consecutive steps: the 2nd and 3rd see the sharded optimizer's updates
LATENT = 24  # the stand-in latent width the decoders and students are built for


def plugins() -> list[tuple[str, str]]:
    return [(kind, name) for kind in KINDS for name in registry.names(kind)]


def _tiny(kind: str, name: str):
    cls = registry.get(kind, name)
    return getattr(cls, "tiny_config", cls.Config)()


class Harness(nn.Module):
    """One plugin and a scalar loss over fixed inputs; its blocks are the plugin's."""

    def __init__(self, kind: str, name: str):
        super().__init__()
        self.kind, cfg = kind, _tiny(kind, name)
        extra = {
            "decoders": {"latent_width": LATENT},
            "students": {"latent_width": LATENT},
            "action_experts": {"vlm_width": 16, "vlm_layers": 2, "horizon": 3},
        }.get(kind, {})
        self.m = registry.build(kind, cfg, **extra)
        self.horizon = getattr(cfg, "horizon", 3)
        self.frames = getattr(cfg, "num_frames", 2)
        with torch.no_grad():  # off the zero initialisation (adaLN-zero, zero output layers) so every block learns
            for p in self.m.parameters():
                p.add_(torch.randn_like(p) * 0.02)

    def repeated_blocks(self) -> list[nn.Module]:
        return self.m.repeated_blocks()

    def forward(self, inputs: dict) -> torch.Tensor:
        x = inputs
        if self.kind == "encoders":
            z_sce, z_mot = self.m(x["frames"][:, : self.frames], x["text"])
            return z_sce.square().mean() + z_mot.square().mean()
        if self.kind == "decoders":
            f = x["frames"]
            out = self.m(x["z"], x["z"], f[:, 0], f[:, 1], x["actions"][:, : self.horizon], x["mask"])
            return sum(out.values())
        if self.kind == "students":
            out = self.m(x["frames"][:, :1], x["text"], subtasks=["grasp the puck", "pull the drawer"])
            return out["latents"].square().mean() + out["lm_loss"]
        layers = tuple(x["layers"])
        out = self.m.loss(
            x["actions"][:, :3], x["gripper"], x["mask"].bool(), x["pad"], x["state"], layers, x["ctx_mask"]
        )
        return out["loss"]


def _inputs() -> dict:
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(2, 44)
    mask[:, 7:14] = 1
    return {
        "frames": torch.randint(0, 256, (2, 2, 3, 24, 24), dtype=torch.uint8, generator=g),
        "text": ["pick up the puck", "open the drawer"],
        "z": torch.randn(2, 4, LATENT, generator=g),
        "actions": torch.randn(2, 16, 44, generator=g),  # sliced to each model's horizon
        "mask": mask,
        "gripper": torch.rand(2, 3, 2, generator=g),
        "pad": torch.tensor([[False, False, False], [False, False, True]]),
        "state": torch.randn(2, 46, generator=g),
        "layers": [torch.randn(2, 5, 16, generator=g) for _ in range(3)],
        "ctx_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
    }


class StageHarness(nn.Module):
    """A stage's own model and loss: `architecture()` trained on its `example_batch` through `train_step`."""

    def __init__(self, stage):
        super().__init__()
        self.stage, self.m = stage, stage.architecture()

    def repeated_blocks(self) -> list[nn.Module]:
        return distributed.blocks(self.m)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.stage.train_step(self.m, batch)["loss"]


def stage_objects() -> list:
    """Every registered stage that gives a tiny recipe, as a stage object."""
    found = []
    for name in registry.names("stages"):
        cls = registry.get("stages", name)
        if callable(getattr(cls, "tiny_recipe", None)):
            found.append(cls(cls.Config.model_validate(cls.tiny_recipe())))
    return found


def _train(
    make, world, fsdp: bool, checkpointing: bool, precision: str = "fp32", inputs: dict | None = None
) -> tuple[list[float], dict]:
    torch.manual_seed(0)
    model = make()
    if checkpointing:
        distributed.checkpoint_activations(model)
    if fsdp:
        distributed.shard(model, world, precision=precision)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.95))
    inputs, losses = inputs if inputs is not None else _inputs(), []
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    for step in range(STEPS):
        torch.manual_seed(100 + step)  # the same flow times and noises in every process
        with autocast:
            loss = model(inputs)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    dtypes = {
        "params": sorted({str(p.dtype) for p in params}),
        "optimizer": sorted({str(v.dtype) for s in opt.state.values() for v in s.values() if v.dim() > 0}),
    }
    return losses, dtypes


def _worker(rank: int, size: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    world = distributed.World(rank, size, torch.device("cpu"))
    results: dict = {"plugins": {}, "wrapped": {}}
    for kind, name in plugins():
        for ac in (False, True):
            make = lambda kind=kind, name=name: Harness(kind, name)  # noqa: E731
            got, _ = _train(make, world, fsdp=True, checkpointing=ac)
            ref, _ = _train(make, world, fsdp=False, checkpointing=ac) if rank == 0 else (None, None)
            results["plugins"][f"{kind}/{name}/ac={ac}"] = {"fsdp": got, "single": ref}
        results["wrapped"][f"{kind}/{name}"] = len(Harness(kind, name).repeated_blocks())
    results["stages"] = {}
    for stage in stage_objects():  # each stage's whole model, as `latbot train` builds it, under FSDP2
        torch.manual_seed(0)
        batch = stage.example_batch(2, device="cpu")  # the same values in both processes
        for ac in (False, True):
            make = lambda stage=stage: StageHarness(stage)  # noqa: E731
            got, _ = _train(make, world, fsdp=True, checkpointing=ac, inputs=batch)
            ref, _ = _train(make, world, fsdp=False, checkpointing=ac, inputs=batch) if rank == 0 else (None, None)
            results["stages"][f"{stage.recipe.stage}/ac={ac}"] = {"fsdp": got, "single": ref}
    # mixed precision on the tiny LAM recipe's model: the bf16 policy against fp32, both sharded
    from latbot.models.lam import LatentActionModel
    from latbot.recipes import load_recipe
    from tests.conftest import REPO

    recipe = load_recipe(REPO / "recipes/tiny/lam.yaml")

    class Lam(LatentActionModel):
        def forward(self, x):
            batch = {"frames": x["frames"].repeat(1, 2, 1, 1, 1), "instruction": x["text"]}
            return super().forward(batch | {"actions": x["actions"][:, :3], "action_mask": x["mask"]})["loss"]

    make = lambda: Lam(recipe.model, 4)  # noqa: E731
    results["precision"] = {
        p: _train(make, world, fsdp=True, checkpointing=True, precision=p) for p in ("fp32", "bf16")
    }
    if rank == 0:
        with open(out, "w") as f:
            json.dump(results, f)
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def fsdp_results():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "results.json")
        mp.spawn(_worker, args=(2, os.path.join(tmp, "init"), out), nprocs=2, join=True)
        with open(out) as f:
            return json.load(f)


def test_every_plugin_trains_under_fsdp2_like_one_process(fsdp_results):
    ran = sorted(fsdp_results["plugins"])
    expected = sorted(f"{k}/{n}/ac={ac}" for k, n in plugins() for ac in (False, True))
    assert ran == expected
    print("FSDP2 × 2 (gloo) ran:", ", ".join(ran))
    for key, r in fsdp_results["plugins"].items():
        assert all(map(torch.isfinite, torch.tensor(r["fsdp"]))), key
        torch.testing.assert_close(r["fsdp"], r["single"], rtol=1e-5, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")
        assert r["fsdp"][0] != r["fsdp"][-1], f"{key}: the optimizer steps changed nothing"


def test_every_stage_trains_under_fsdp2_like_one_process(fsdp_results):
    """The FSDP contract of the stage object: its architecture on its example batch, through train_step."""
    ran = sorted(fsdp_results["stages"])
    expected = sorted(f"{s.recipe.stage}/ac={ac}" for s in stage_objects() for ac in (False, True))
    assert ran == expected and {"lam/ac=True", "distill/ac=True", "finetune/ac=True", "curve_fit/ac=True"} <= set(ran)
    for key, r in fsdp_results["stages"].items():
        assert all(map(torch.isfinite, torch.tensor(r["fsdp"]))), key
        torch.testing.assert_close(r["fsdp"], r["single"], rtol=1e-5, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")
        assert r["fsdp"][0] != r["fsdp"][-1], f"{key}: the optimizer steps changed nothing"


def test_transformer_plugins_name_their_blocks(fsdp_results):
    for key, n in fsdp_results["wrapped"].items():
        if not key.endswith(("tiny_conv", "tiny_mlp", "mlp_head")):  # example plugins without repeated blocks
            assert n >= 1, f"{key} names no blocks"


def test_bf16_mixed_precision_keeps_fp32_master_weights_and_fp32_losses(fsdp_results):
    (fp32, dt32), (bf16, dt16) = fsdp_results["precision"]["fp32"], fsdp_results["precision"]["bf16"]
    assert dt16 == dt32 == {"params": ["torch.float32"], "optimizer": ["torch.float32"]}
    torch.testing.assert_close(bf16, fp32, rtol=2e-2, atol=0)
    assert bf16 != fp32  # bf16 really ran (identical floats would mean the policy was not applied)
