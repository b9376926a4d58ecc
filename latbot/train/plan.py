"""`latbot plan`: a real-size dry run and the resources a recipe needs, before anything is launched.

The dry run builds the recipe's model at real size on the meta device (no memory, no weights, no data),
marks what trains as the loop does, and runs one forward + backward of one micro-batch of the recipe's real
shapes on meta tensors: a shape error at real size shows up here, in seconds, instead of after a job
has queued for a cluster. On the way it counts

- FLOPs with `torch.utils.flop_counter.FlopCounterMode` (forward, backward, and the forward FLOPs inside
  the repeated blocks, which activation checkpointing recomputes);
- the bytes autograd saves for the backward pass (`saved_tensors_hooks`, each storage once, parameters
  excluded), in total and per repeated block, with the bytes each block receives as input (what
  checkpointing keeps instead).

`plan()` turns that into per-GPU memory under FSDP2 for a cluster and a time estimate at a stated MFU.
Real-size presets carry no tokenizer (it comes with `pretrained` weights), so the dry run writes the
text with the local word-level tokenizer of the tiny presets: the token *values* do not matter on meta
tensors and the instruction lengths are a few tokens either way; the image tokens, which dominate every
sequence, are exact.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn

from latbot.errors import TrainingError

# Peak dense bf16 tensor-core throughput (no structured sparsity), FLOP/s, from NVIDIA's data sheets.
GPUS: dict[str, tuple[float, str]] = {
    "A100": (312e12, "NVIDIA A100 Tensor Core GPU data sheet: BF16 Tensor Core 312 TFLOPS (624 with sparsity)"),
    "H100": (989e12, "NVIDIA H100 Tensor Core GPU data sheet, SXM5: BF16 Tensor Core 989 TFLOPS (1,979 sparse)"),
    "H200": (989e12, "NVIDIA H200 Tensor Core GPU data sheet, SXM: BF16 Tensor Core 989 TFLOPS (1,979 sparse)"),
}
GiB = 1024**3


def check_batch(recipe, gpus: int) -> int:
    """Gradient-accumulation steps of the recipe on `gpus` processes; a one-line error when the global
    batch is not a multiple of micro-batch × processes."""
    tc = recipe.train
    per_step = tc.micro_batch_size * gpus
    if tc.global_batch_size % per_step:
        raise TrainingError(
            f"train.global_batch_size ({tc.global_batch_size}) is not a multiple of train.micro_batch_size × GPUs "
            f"({tc.micro_batch_size} × {gpus} = {per_step}); change micro_batch_size or the number of GPUs"
        )
    return tc.global_batch_size // per_step


# -- the model and a batch at real size, on the meta device ---------------------------------------------
def _give_tokenizers(model: nn.Module) -> None:
    from latbot.models.encoders.vlm import VLMLatentEncoder
    from latbot.models.pi05.student import Pi05Student
    from latbot.models.tokenizer import build_tiny_tokenizer

    for m in model.modules():
        if isinstance(m, VLMLatentEncoder) and m.tokenizer is None:
            m.tokenizer = build_tiny_tokenizer()
        elif isinstance(m, Pi05Student) and m._tokenizer is None:  # it would read PaliGemma's from the hub
            m._tokenizer = build_tiny_tokenizer(["task", "state", "action", *map(str, range(256))])


def stage_of(recipe, latent_width: int | None = None):
    """The stage object of `recipe` (any registered stage), with the latent width its student answers in
    when the parent run that fixes it is not at hand."""
    from latbot import registry

    stage = registry.get("stages", recipe.stage)(recipe)
    if latent_width is not None:
        stage.latent_width = latent_width
    return stage


def meta_model(recipe, latent_width: int | None = None) -> nn.Module:
    """The recipe's trained model at real size on the meta device: its stage's `architecture()` (no weights).
    Distillation: the student alone (the teacher's latents come in the batch, as with a latent cache)."""
    with torch.device("meta"):
        model = stage_of(recipe, latent_width).architecture()
    _give_tokenizers(model)
    return model


def meta_batch(recipe, b: int, latent_width: int | None = None) -> dict:
    """One micro-batch of `b` samples with the recipe's real shapes (meta tensors): its stage's
    `example_batch`."""
    return stage_of(recipe, latent_width).example_batch(b, device="meta")


# -- the dry run ---------------------------------------------------------------------------------------
@dataclass
class DryRun:
    micro_batch: int
    params_total: int
    params_trainable: int
    blocks: int
    root_unit_params: int  # everything outside the named blocks: FSDP's root unit
    largest_block_params: int
    forward_flops: int  # one micro-batch
    backward_flops: int
    block_forward_flops: int  # forward FLOPs inside the blocks: what checkpointing computes twice
    saved_bytes: int  # activations kept for backward without checkpointing (as traced: fp32)
    saved_outside_blocks: int
    block_input_bytes: int  # what checkpointing keeps per block instead (the inputs), summed
    largest_block_saved: int  # one block's activations, rebuilt at a time in the backward pass


@contextmanager
def _meta_is_traced():
    """transformers skips its data-dependent shortcuts (packed-sequence and all-ones mask checks) when it is
    being traced; meta tensors hold no data, so for the dry run they count as traced."""
    import sys

    from transformers.utils import import_utils

    original = import_utils.is_tracing

    def is_tracing(tensor=None) -> bool:
        return original(tensor) or (isinstance(tensor, torch.Tensor) and tensor.is_meta)

    modules = [m for name, m in list(sys.modules.items()) if name.startswith("transformers") and m is not None]
    patched = [m for m in modules if getattr(m, "is_tracing", None) is original]
    for m in patched:
        m.is_tracing = is_tracing
    try:
        yield
    finally:
        for m in patched:
            m.is_tracing = original


def _storage(t: torch.Tensor) -> tuple[int, int]:
    s = t.untyped_storage()
    return s._cdata, s.nbytes()


def dry_run(recipe, micro_batch: int | None = None, latent_width: int | None = None) -> DryRun:
    """Forward + backward of one micro-batch at real size on meta tensors, measured (see the module doc)."""
    from torch.utils.flop_counter import FlopCounterMode

    from latbot.train import distributed
    from latbot.train.loop import select_trainable

    b = micro_batch or recipe.train.micro_batch_size
    stage = stage_of(recipe, latent_width)
    model = meta_model(recipe, latent_width)
    select_trainable(model, recipe.train.trainable, recipe.train.frozen)
    blocks = distributed.blocks(model)
    in_blocks = {id(p) for blk in blocks for p in blk.parameters()}
    params = {_storage(p)[0] for p in model.parameters()}
    counter = FlopCounterMode(display=False)
    state = {"depth": 0, "current": None, "flops_at_entry": 0, "block_flops": 0, "inputs": {}}
    saved: dict[int, tuple[int, int | None]] = {}  # storage → (bytes, block index or None)
    inputs: dict[int, int] = {}

    def pre(i):
        def hook(module, args, kwargs):
            if state["depth"] == 0:
                state["current"], state["flops_at_entry"] = i, counter.get_total_flops()
                tensors = [*args, *kwargs.values()]
                state["inputs"] = dict(_storage(t) for t in tensors if torch.is_tensor(t) and t.is_floating_point())
            state["depth"] += 1

        return hook

    def post(module, args, kwargs, out):
        state["depth"] -= 1
        if state["depth"] == 0:
            outs = out if isinstance(out, tuple) else (out,)
            if any(isinstance(t, torch.Tensor) and t.requires_grad for t in outs):
                # in the autograd graph: checkpointing keeps the inputs and runs the forward again
                state["block_flops"] += counter.get_total_flops() - state["flops_at_entry"]
                inputs.update(state["inputs"])
            state["current"] = None

    def pack(t: torch.Tensor):
        key, n = _storage(t)
        if key not in params and key not in saved:
            saved[key] = (n, state["current"])
        return t

    handles = []
    for i, blk in enumerate(blocks):
        handles.append(blk.register_forward_pre_hook(pre(i), with_kwargs=True))
        handles.append(blk.register_forward_hook(post, with_kwargs=True))
    batch = meta_batch(recipe, b, latent_width)
    model.train()
    try:
        with _meta_is_traced(), counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = stage.train_step(model, batch)["loss"]
        forward = counter.get_total_flops()
        with counter:
            loss.backward()
        backward = counter.get_total_flops()
    finally:
        for h in handles:
            h.remove()
    per_block = [0] * len(blocks)
    for n, i in saved.values():
        if i is not None:
            per_block[i] += n
    block_sizes = [sum(p.numel() for p in blk.parameters()) for blk in blocks]
    return DryRun(
        micro_batch=b,
        params_total=sum(p.numel() for p in model.parameters()),
        params_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        blocks=len(blocks),
        root_unit_params=sum(p.numel() for p in model.parameters() if id(p) not in in_blocks),
        largest_block_params=max(block_sizes, default=0),
        forward_flops=forward,
        backward_flops=backward,
        block_forward_flops=state["block_flops"],
        saved_bytes=sum(n for n, _ in saved.values()),
        saved_outside_blocks=sum(n for n, i in saved.values() if i is None),
        block_input_bytes=sum(inputs.values()),
        largest_block_saved=max(per_block, default=0),
    )


# -- the plan --------------------------------------------------------------------------------------------
def plan(recipe, gpus: int, gpu_memory_gb: float, gpu: str = "A100", mfu: float = 0.4, run: DryRun | None = None):
    """Per-GPU memory under FSDP2 (fully sharded over `gpus`), FLOPs, step time and total days at `mfu`."""
    if gpu not in GPUS:
        raise TrainingError(f"--gpu {gpu}: unknown GPU (known: {', '.join(GPUS)})")
    accum = check_batch(recipe, gpus)
    run = run or dry_run(recipe)
    tc = recipe.train
    low = 2 if tc.precision == "bf16" else 4  # bytes of a gathered parameter (FSDP2 param_dtype)
    checkpointing = tc.activation_checkpointing
    act_full = run.saved_bytes
    act_ckpt = run.saved_outside_blocks + run.block_input_bytes + run.largest_block_saved
    memory = {
        "params_sharded": 4 * run.params_total / gpus,  # fp32 master weights, frozen ones included
        "grads_sharded": 4 * run.params_trainable / gpus,
        "optimizer_sharded": 8 * run.params_trainable / gpus,  # AdamW: two fp32 moments
        # the root unit stays gathered through forward and backward; a block is gathered while the next one
        # is prefetched, and its unsharded gradient lives until the reduce-scatter
        "root_unit_gathered": low * run.root_unit_params,
        "largest_block_gathered": low * run.largest_block_params,
        "gathered_peak": low * (run.root_unit_params + 3 * run.largest_block_params),
        "activations_no_checkpointing": act_full,
        "activations_checkpointing": act_ckpt,
    }
    memory["total"] = sum(memory[k] for k in ("params_sharded", "grads_sharded", "optimizer_sharded", "gathered_peak"))
    memory["total"] += act_ckpt if checkpointing else act_full
    peak, source = GPUS[gpu]
    model_flops = (run.forward_flops + run.backward_flops) / run.micro_batch
    hardware_flops = model_flops + (run.block_forward_flops / run.micro_batch if checkpointing else 0)
    step_s = model_flops * tc.global_batch_size / (gpus * peak * mfu)
    return {
        "recipe_stage": recipe.stage,
        "cluster": {
            "gpus": gpus,
            "gpu": gpu,
            "gpu_memory_gib": gpu_memory_gb,
            "peak_bf16_flops": peak,
        },
        "peak_source": source,
        "batch": {
            "global": tc.global_batch_size,
            "micro": tc.micro_batch_size,
            "accumulation": accum,
            "check": f"{tc.global_batch_size} = {tc.micro_batch_size} × {gpus} × {accum}",
        },
        "params": {"total": run.params_total, "trainable": run.params_trainable, "blocks": run.blocks},
        "memory_per_gpu_bytes": memory,
        "activation_checkpointing": checkpointing,
        "fits": memory["total"] <= gpu_memory_gb * GiB,
        "flops": {
            "per_sample_model": model_flops,
            "per_sample_with_recompute": hardware_flops,
            "forward_per_sample": run.forward_flops / run.micro_batch,
        },
        "time": {
            "mfu": mfu,
            "step_s": step_s,
            "steps": tc.steps,
            "days": step_s * tc.steps / 86400,
            "samples": tc.steps * tc.global_batch_size,
        },
        "dry_run": asdict(run),
    }
