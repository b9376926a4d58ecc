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

`plan()` turns that into per-GPU memory under FSDP2 for a cluster and a time estimate at a stated MFU, and
for several nodes FSDP (sharded over every GPU) vs HSDP (sharded within a node, replicated across nodes):
memory per GPU and the bytes each GPU sends per optimizer step within its node and across nodes.
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
    largest_tensor_params: int = 0  # the largest single parameter (what a sharded load holds in transit)
    pretrained_params: int = 0  # parameters a pretrained checkpoint provides (dist.meta_init: read per rank)


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
        largest_tensor_params=max((p.numel() for p in model.parameters()), default=0),
        pretrained_params=pretrained_params(recipe, stage, model),
        forward_flops=forward,
        backward_flops=backward,
        block_forward_flops=state["block_flops"],
        saved_bytes=sum(n for n, _ in saved.values()),
        saved_outside_blocks=sum(n for n, i in saved.values() if i is None),
        block_input_bytes=sum(inputs.values()),
        largest_block_saved=max(per_block, default=0),
    )


def pretrained_params(recipe, stage, model) -> int:
    """Parameters that come from a pretrained checkpoint: the backbone parts (`stage.components`: a VLM's
    vision tower / projector / language model, a decoder's transformer / VAE) of every model slot whose config
    names `pretrained`. pi0.5 parts are not counted: they are built whole before their checkpoint is read."""
    try:
        parts = stage.components(model)
    except Exception:  # a plugin stage without components: nothing known to be pretrained
        return 0
    total = 0
    for name, part in parts.items():
        slot, _, piece = name.partition(".")
        config = getattr(recipe.model, slot, None)
        # pi0.5 parts are built (randomly initialised) whole before their checkpoint is read: process 0 holds them
        built_first = type(part).__module__.startswith("latbot.models.pi05")
        if getattr(config, "pretrained", None) and piece != "other" and not built_first:
            params = part.parameters() if hasattr(part, "parameters") else part
            total += sum(p.numel() for p in params)
    return total


# -- the plan --------------------------------------------------------------------------------------------
def memory_per_gpu(recipe, run: DryRun, shard: int, accum: int) -> dict[str, float]:
    """Bytes per GPU when parameters, gradients and AdamW states are sharded over `shard` GPUs (fsdp: the
    world; hsdp: one shard group, e.g. a node), with `accum` micro-batches per step."""
    tc = recipe.train
    low = 2 if tc.precision == "bf16" else 4  # bytes of a gathered parameter (FSDP2 param_dtype)
    act_full = run.saved_bytes
    act_ckpt = run.saved_outside_blocks + run.block_input_bytes + run.largest_block_saved
    memory = {
        "params_sharded": 4 * run.params_total / shard,  # fp32 master weights, frozen ones included
        "grads_sharded": 4 * run.params_trainable / shard,
        "optimizer_sharded": 8 * run.params_trainable / shard,  # AdamW: two fp32 moments
        # the root unit stays gathered through forward and backward; a block is gathered while the next one
        # is prefetched, and its unsharded gradient lives until the reduce-scatter
        "root_unit_gathered": low * run.root_unit_params,
        "largest_block_gathered": low * run.largest_block_params,
        "gathered_peak": low * (run.root_unit_params + 3 * run.largest_block_params),
        "activations_no_checkpointing": act_full,
        "activations_checkpointing": act_ckpt,
    }
    # no-sync micro-batches (latbot.train.distributed.accumulating): between the backward passes of one step
    # every unit keeps its gathered parameters and its unsharded fp32 gradient (reduced at the last one)
    no_sync = accum > 1 and recipe.dist.no_sync_accumulation
    memory["accumulation_unsharded"] = (low * run.params_total + 4 * run.params_trainable) if no_sync else 0
    parts = ("params_sharded", "grads_sharded", "optimizer_sharded", "gathered_peak", "accumulation_unsharded")
    memory["total"] = sum(memory[k] for k in parts)
    memory["total"] += act_ckpt if tc.activation_checkpointing else act_full
    return memory


def communication_per_step(recipe, run: DryRun, accum: int, world: int, shard: int, nodes: int) -> dict:
    """Bytes each GPU sends per optimizer step through FSDP2's collectives, within a node and across nodes.

    Per step with no-sync micro-batches (`dist.no_sync_accumulation`, latbot.train.distributed.accumulating):
    the blocks are all-gathered in the forward of the first micro-batch and again in each micro-batch's
    backward (reshard_after_forward; without it once), the root unit once; the fp32 gradients are
    reduce-scattered once, at the last micro-batch. Without no-sync every micro-batch gathers and reduces.
    A ring collective over S GPUs sends (S − 1)/S of the full buffer from each GPU. fsdp: one group of all
    `world` GPUs (across nodes when there are several); hsdp: the shard group (`shard` GPUs, one node)
    gathers and reduce-scatters, then the gradient shards are all-reduced across the world/shard replicas
    (2 (R − 1)/R of the shard), which is all that crosses nodes. `across_nodes_bytes`: what each GPU sends
    in collectives whose group spans nodes (their pace is the inter-node bandwidth); `within_node_bytes`:
    in groups inside one node (NVLink)."""
    low = 2 if recipe.train.precision == "bf16" else 4
    block_params = run.params_total - run.root_unit_params
    no_sync = recipe.dist.no_sync_accumulation
    if recipe.dist.reshard_after_forward:  # every backward gathers; no-sync: only the first forward does
        gathers = 1 + accum if no_sync else 2 * accum
    else:
        gathers = 1 if no_sync else accum
    root = 1 if no_sync else accum
    gathered = low * (root * run.root_unit_params + gathers * block_params)  # full buffers, per step
    reduced = 4 * run.params_trainable * (1 if no_sync else accum)  # fp32 gradients (reduce_dtype)
    ring = (shard - 1) / shard
    in_group = {"all_gather": gathered * ring, "reduce_scatter": reduced * ring}
    replicas = world // shard
    all_reduce = 2 * (replicas - 1) / replicas * reduced / shard if replicas > 1 else 0.0
    group_spans_nodes = shard > world // nodes
    within = 0.0 if group_spans_nodes else sum(in_group.values())
    across = (sum(in_group.values()) if group_spans_nodes else 0.0) + all_reduce
    return {
        "shard_group": shard,
        "replicas": replicas,
        "all_gather_bytes": in_group["all_gather"],
        "reduce_scatter_bytes": in_group["reduce_scatter"],
        "all_reduce_bytes": all_reduce,
        "within_node_bytes": within,
        "across_nodes_bytes": across,
    }


def strategies(recipe, run: DryRun, accum: int, nodes: int, gpus_per_node: int, gpu_memory_gb: float) -> dict:
    """FSDP (sharded over all nodes × GPUs) and HSDP (sharded over one node's GPUs, replicated across nodes)
    side by side: memory per GPU and bytes sent per GPU per optimizer step."""
    world = nodes * gpus_per_node
    out = {}
    for name, shard in (("fsdp", world), ("hsdp", gpus_per_node)):
        memory = memory_per_gpu(recipe, run, shard, accum)
        out[name] = {
            "shard_size": shard,
            "memory_per_gpu_bytes": memory,
            "fits": memory["total"] <= gpu_memory_gb * GiB,
            "communication_per_step": communication_per_step(recipe, run, accum, world, shard, nodes),
        }
    return out


def plan(
    recipe,
    gpus: int,
    gpu_memory_gb: float,
    gpu: str = "A100",
    mfu: float = 0.4,
    run: DryRun | None = None,
    nodes: int = 1,
    teacher_recipe=None,
    codec: str = "lz4",
    frames: dict[str, int] | None = None,
    codec_table: dict | None = None,
):
    """Per-GPU memory under FSDP2 (sharded over `gpus`, or over `dist.shard_size` for an hsdp recipe),
    FLOPs, step time and total days at `mfu`; on several `nodes` (`gpus` in all, an equal number per node)
    also FSDP vs HSDP side by side (`strategies`); the disk of the data sources' episode stores with
    `codec` (`disk_plan`)."""
    if gpu not in GPUS:
        raise TrainingError(f"--gpu {gpu}: unknown GPU (known: {', '.join(GPUS)})")
    if gpus % nodes:
        raise TrainingError(f"{gpus} GPUs do not split evenly over {nodes} nodes")
    accum = check_batch(recipe, gpus)
    disk = disk_plan(recipe, codec, frames, codec_table)  # its one-line errors before the dry run
    run = run or dry_run(recipe)
    tc = recipe.train
    checkpointing = tc.activation_checkpointing
    shard = recipe.dist.shard_size if recipe.dist.strategy == "hsdp" else gpus
    if gpus % shard:
        from latbot.train.distributed import mesh_shape

        mesh_shape(gpus, "hsdp", shard)  # the recipe error of a launch
    memory = memory_per_gpu(recipe, run, shard, accum)
    peak, source = GPUS[gpu]
    model_flops = (run.forward_flops + run.backward_flops) / run.micro_batch
    hardware_flops = model_flops + (run.block_forward_flops / run.micro_batch if checkpointing else 0)
    frozen = _frozen_cost(recipe, shard, run.micro_batch, teacher_recipe)
    if frozen is not None:  # e.g. the online distillation teacher: forward only, its own sharded weights
        memory["frozen_models"] = frozen["memory_per_gpu_bytes"]["total"]
        memory["total"] += memory["frozen_models"]
        model_flops += frozen["forward_flops_per_sample"]
        hardware_flops += frozen["forward_flops_per_sample"]
    step_s = model_flops * tc.global_batch_size / (gpus * peak * mfu)
    return {
        "recipe_stage": recipe.stage,
        "cluster": {
            "gpus": gpus,
            "nodes": nodes,
            "gpus_per_node": gpus // nodes,
            "shard_size": shard,
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
        "host_memory_per_rank_bytes": host_memory(recipe, run),
        "frozen": frozen,
        "strategies": _with_frozen(
            strategies(recipe, run, accum, nodes, gpus // nodes, gpu_memory_gb),
            recipe,
            run,
            teacher_recipe,
            frozen,
            gpu_memory_gb,
        ),
        "disk": disk,
        "dry_run": asdict(run),
    }


def host_memory(recipe, run: DryRun) -> dict[str, float]:
    """Host (CPU) memory per rank while the model is built and loaded, before its shards move to the GPU:
    the ordinary path builds the whole fp32 model on every rank. `dist.meta_init` builds on process 0 only
    what no pretrained checkpoint provides (LatBot's own parameters, a parent run's weights), and every rank
    reads its own rows of the pretrained tensors from their files, one tensor at a time; so process 0 holds
    that part plus one tensor in transit, the other ranks one tensor in transit (their shards go straight
    to their GPU)."""
    full = 4 * run.params_total
    transit = 4 * run.largest_tensor_params
    return {
        "ordinary_every_rank": full,
        "meta_init_process_0": 4 * (run.params_total - run.pretrained_params) + transit,
        "meta_init_other_ranks": transit,
        "pretrained_params": run.pretrained_params,
        "used": "meta_init" if getattr(recipe.dist, "meta_init", False) else "ordinary",
    }


def _with_frozen(
    strategies: dict, recipe, run: DryRun, teacher_recipe, frozen: dict | None, gpu_memory_gb: float
) -> dict:
    """FSDP vs HSDP with the frozen models' memory too (the teacher sharded like the student: over every GPU,
    or over a node's shard group)."""
    if frozen is None or "not_counted" in frozen:
        return strategies
    for s in strategies.values():
        if not isinstance(s, dict) or "memory_per_gpu_bytes" not in s:
            continue
        cost = frozen if s.get("shard_size") == frozen.get("sharded_over") else None
        cost = cost or _frozen_cost(recipe, s["shard_size"], run.micro_batch, teacher_recipe)
        s["memory_per_gpu_bytes"]["frozen_models"] = cost["memory_per_gpu_bytes"]["total"]
        s["memory_per_gpu_bytes"]["total"] += cost["memory_per_gpu_bytes"]["total"]
        s["fits"] = s["memory_per_gpu_bytes"]["total"] <= gpu_memory_gb * GiB
    return strategies


def _frozen_cost(recipe, gpus: int, micro_batch: int, teacher_recipe=None) -> dict | None:
    """What the recipe's stage runs frozen besides the trained model (`Stage.frozen_cost`), or None; a
    distillation recipe whose teacher run does not exist yet needs `teacher_recipe` (its LAM recipe)."""
    stage = stage_of(recipe)
    if teacher_recipe is not None:
        stage.teacher_recipe = teacher_recipe
    try:
        return stage.frozen_cost(gpus, micro_batch)
    except TrainingError as e:
        return {"not_counted": str(e), "forward_flops_per_sample": 0, "memory_per_gpu_bytes": {"total": 0}}


# -- the online teacher's cost (distillation) -------------------------------------------------------------
# `teacher_cost(recipe, gpus)` gives what the frozen teacher adds to each distillation step when it runs
# online (the default, no `teacher_cache`); `DistillStage.frozen_cost` calls it for `plan()`.
def _lam_recipe_of(recipe, lam_recipe=None):
    """The teacher's LAM recipe: `lam_recipe` (a recipe or a path) when given, else the teacher run's."""
    from pathlib import Path

    if lam_recipe is not None:
        if isinstance(lam_recipe, (str, Path)):
            from latbot.recipes import load_recipe

            return load_recipe(Path(lam_recipe))
        return lam_recipe
    teacher = getattr(recipe.model, "teacher", None)
    if teacher is None or not Path(teacher).is_dir():
        raise TrainingError("the teacher's cost needs model.teacher (a LAM run) or its LAM recipe (lam_recipe=)")
    from latbot import runs

    return runs.open_run(teacher, "lam").recipe


class _LiveBytes:
    """Peak bytes of live tensors produced by ops (a TorchDispatchMode; each storage once)."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in torch.utils._pytree.tree_leaves(out):
                    if isinstance(t, torch.Tensor):
                        tracker.add(t)
                return out

        self.mode = Mode()
        self.refs: dict[int, list] = {}
        self.current = self.peak = 0

    def add(self, t: torch.Tensor) -> None:
        import weakref

        key, n = _storage(t)
        if key not in self.refs:
            self.refs[key] = [0, n]
            self.current += n
            self.peak = max(self.peak, self.current)
        self.refs[key][0] += 1
        weakref.finalize(t, self.drop, key)

    def drop(self, key: int) -> None:
        entry = self.refs.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self.refs[key]


def teacher_cost(recipe, gpus: int = 1, micro_batch: int | None = None, lam_recipe=None) -> dict:
    """The online teacher of a distillation `recipe`: its forward FLOPs and its memory per GPU, measured on
    the meta device (no weights, no data) from the teacher run's recipe (or `lam_recipe` when no run exists)
    on the distillation recipe's clips (micro-batch × data.num_frames × image_size²).

    Memory per GPU: its parameters fp32 sharded over `gpus` (frozen: no gradients, no optimizer state),
    the gathered root unit and two blocks (the running one and the prefetched one; bf16 under
    `train.precision: bf16`), and the peak of live activations of one no-grad forward (as traced: fp32;
    nothing is kept for a backward pass). `per_step_forward_flops` is per global batch."""
    from torch.utils.flop_counter import FlopCounterMode

    from latbot.data.clips import K_FRAMES, K_INSTRUCTION
    from latbot.models.distill import teacher_blocks

    lam = _lam_recipe_of(recipe, lam_recipe)
    b = micro_batch or recipe.train.micro_batch_size
    with torch.device("meta"):
        teacher = stage_of(lam).architecture()
    teacher.decoder = nn.Identity()  # only the encoder teaches
    _give_tokenizers(teacher)
    teacher.eval().requires_grad_(False)
    blocks = teacher_blocks(teacher)
    in_blocks = {id(p) for blk in blocks for p in blk.parameters()}
    params = sum(p.numel() for p in teacher.parameters())
    root = sum(p.numel() for p in teacher.parameters() if id(p) not in in_blocks)
    largest = max((sum(p.numel() for p in blk.parameters()) for blk in blocks), default=0)
    s, t = recipe.data.image_size, recipe.data.num_frames
    clips = lam.model_copy(update={"data": lam.data.model_copy(update={"num_frames": t, "image_size": s})})
    example = stage_of(clips).example_batch(b, device="meta")  # the LAM stage's clips, at the recipe's size
    batch = {K_FRAMES: example[K_FRAMES], K_INSTRUCTION: example[K_INSTRUCTION]}
    counter, live = FlopCounterMode(display=False), _LiveBytes()
    with _meta_is_traced(), torch.no_grad(), counter, live.mode:
        z_sce, z_mot = teacher.encode(batch[K_FRAMES], batch[K_INSTRUCTION])
    forward = counter.get_total_flops()
    low = 2 if recipe.train.precision == "bf16" else 4
    memory = {
        "params_sharded": 4 * params / gpus,
        "gathered_peak": low * (root + 2 * largest),
        "activations_peak": live.peak,  # one micro-batch, no grad (as traced: fp32)
    }
    memory["total"] = sum(memory.values())
    return {
        "teacher_encoder": type(teacher.encoder).__name__,
        "params": params,
        "blocks": len(blocks),
        "micro_batch": b,
        "clip": [t, 3, s, s],
        "latents": [int(z_sce.shape[1] + z_mot.shape[1]), int(z_sce.shape[2])],
        "forward_flops_per_sample": forward / b,
        "per_step_forward_flops": forward / b * recipe.train.global_batch_size,
        "memory_per_gpu_bytes": memory,
        "sharded_over": gpus,
    }


# -- disk: the episode stores of the recipe's data mixture ------------------------------------------------
# Bytes one camera image takes in an episode store, per store codec, measured at `image_size`² on synthetic
# camera-like frames (smooth scene + sensor noise: lossless compression ratios of real cameras, ≈1–1.5×).
# The one table `disk_plan` reads: replace it (or pass another with `latbot plan --codec-table FILE.json`,
# the same keys) when a codec benchmark measures more codecs.
CODEC_TABLE: dict = {  # tools/bench/results/bench_codecs_table.json, as tools/bench/bench_codecs.py measured it
    "image_size": 224,
    "bytes_per_frame": {
        "none": 150_550.2,
        "lz4": 150_566.0,
        "zstd": 139_132.9,
        "png": 100_607.0,
        "qoi": 116_604.9,
        "webp-lossless": 82_268.0,
        "jpegxl-lossless": 80_146.3,
        "jpeg95": 30_521.8,
        "jpeg90": 20_759.2,
    },
    "source": "tools/bench/bench_codecs.py: frames/ bytes / 512 frames of 224² natural-looking frames (sensor noise "
    "σ=2), chunk_frames 1 (tools/bench/results/bench_codecs_table.json)",
}

# Frames of the Table 6 sources where a public record of the copy the preset reads gives them (episodes,
# frames, the copy's own bytes); every other source's frames come from its store when it exists, or from
# `latbot plan --frames NAME=N`.
SOURCE_SIZES: dict[str, dict] = {
    "fractal": {
        "episodes": 87_212,
        "frames": 3_786_400,
        "from": "huggingface.co/datasets/IPEC-COMMUNITY/fractal20220817_data_lerobot meta/info.json",
    },
    "language_table": {
        "episodes": 442_226,
        "frames": 7_045_476,
        "from": "huggingface.co/datasets/IPEC-COMMUNITY/language_table_lerobot meta/info.json",
    },
    "egodex": {
        "episodes": 338_000,
        "frames": 90_000_000,
        "bytes": 2.0e12,
        "from": "EgoDex (arXiv 2505.11709, apple/ml-egodex): 829 h, 338k episodes, 90M frames, ~2.0 TB",
    },
}


def load_codec_table(path) -> dict:
    """A codec table from a JSON file: {"image_size": S, "bytes_per_frame": {codec: bytes}, "source": "..."}."""
    import json
    from pathlib import Path

    try:
        table = json.loads(Path(path).read_text(encoding="utf-8"))
        size, per = int(table["image_size"]), {str(k): float(v) for k, v in table["bytes_per_frame"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise TrainingError(
            f'--codec-table {path}: expected JSON {{"image_size": S, "bytes_per_frame": {{codec: bytes}}, '
            f'"source": ...}} ({type(e).__name__}: {e})'
        ) from None
    return {"image_size": size, "bytes_per_frame": per, "source": str(table.get("source", path))}


def bytes_per_frame(codec: str, image_size: int, table: dict | None = None) -> float:
    """Bytes of one stored camera image at `image_size`² with `codec`: the table's measured bytes at its own
    size, scaled by the pixel count (lossless codecs on camera frames scale with the pixels)."""
    table = table or CODEC_TABLE
    per = table["bytes_per_frame"]
    if codec not in per:
        raise TrainingError(f"--codec {codec}: the codec table has no measurement for it (it has {', '.join(per)})")
    return per[codec] * (image_size / table["image_size"]) ** 2


def _store_frames(store) -> tuple[int, int] | None:
    """(frames, cameras) of a source's existing store (or shard set), None when it is not there."""
    from latbot.data.mixture import resolve_stores
    from latbot.data.store import EpisodeStore

    try:
        stores = [EpisodeStore.open(s) for s in resolve_stores(store)]
    except Exception:  # not converted yet (or unreadable): the plan falls back to the known sizes
        return None
    if not stores:
        return None
    return sum(s.num_frames for s in stores), len(stores[0].cameras)


def _preset_cameras(name: str | None) -> int | None:
    from latbot.data.presets import load_preset, preset_names

    if name is None or name not in preset_names():
        return None
    keys = load_preset(name).adapter.get("camera_keys")
    return len(keys) if keys else 1


def disk_plan(recipe, codec: str = "lz4", frames: dict[str, int] | None = None, table: dict | None = None) -> dict:
    """Disk of the episode stores of `recipe`'s data sources before converting: per source frames × cameras ×
    `bytes_per_frame(codec, data.image_size)`, next to the source copy's own bytes where known.

    Frames per source: `frames[name]` when given, else its store's when the store exists, else
    `SOURCE_SIZES`; cameras: the store's, else the preset's camera keys, else `data.cameras`, else 1."""
    from pathlib import Path

    frames = frames or {}
    table = table or CODEC_TABLE
    size = recipe.data.image_size
    per_frame = bytes_per_frame(codec, size, table)
    names = [s.name or Path(str(s.store)).name for s in recipe.data.sources]
    unknown_given = sorted(set(frames) - set(names))
    if unknown_given:
        raise TrainingError(f"--frames {unknown_given[0]}=...: no such source in the recipe (sources: {names})")
    rows = []
    for name, source in zip(names, recipe.data.sources, strict=True):
        known = SOURCE_SIZES.get(name, {})
        found = None if name in frames else _store_frames(source.store)
        cams = (found[1] if found else None) or _preset_cameras(source.name)
        cams = cams or (len(recipe.data.cameras) if recipe.data.cameras else 1)
        if name in frames:
            n, where = int(frames[name]), "--frames"
        elif found is not None:
            n, where = found[0], f"store {source.store}"
        elif "frames" in known:
            n, where = known["frames"], known["from"]
        else:
            n, where = None, None
        rows.append({
            "name": name,
            "store": str(source.store),
            "cameras": cams,
            "frames": n,
            "frames_from": where,
            "store_bytes": None if n is None else n * cams * per_frame,
            "source_bytes": known.get("bytes"),
            "source_bytes_from": known["from"] if "bytes" in known else None,
        })  # fmt: skip
    counted = [r for r in rows if r["frames"] is not None]
    return {
        "codec": codec,
        "image_size": size,
        "bytes_per_frame": per_frame,
        "bytes_per_frame_source": f"{table['bytes_per_frame'][codec]:,.0f} B at {table['image_size']}² "
        f"× ({size}/{table['image_size']})²; {table['source']}",
        "sources": rows,
        "total": {
            "frames": sum(r["frames"] for r in counted),
            "images": sum(r["frames"] * r["cameras"] for r in counted),  # frames × cameras
            "store_bytes": sum(r["store_bytes"] for r in counted),
            "source_bytes": sum(r["source_bytes"] for r in counted if r["source_bytes"] is not None),
            "sources_counted": len(counted),
            "sources_unknown": [r["name"] for r in rows if r["frames"] is None],
        },
    }
