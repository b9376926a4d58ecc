"""Process groups and FSDP2, applied from outside the model code.

Launch with torchrun for several processes (GPUs, or CPU processes over gloo):

    torchrun --nproc-per-node 8 -m latbot train recipes/lam_internvl.yaml                   # one node
    torchrun --nnodes 4 --node-rank $RANK --master-addr $HOST --master-port 29500 \\
             --nproc-per-node 8 -m latbot train recipes/lam_internvl.yaml                   # four nodes

`dist.strategy: fsdp` shards every block the model names (`repeated_blocks()`) and then the root with
`fully_shard`; `train.precision: bf16` adds FSDP2's MixedPrecisionPolicy (bf16 gather and compute, fp32
gradient reduction, fp32 master weights). `dist.strategy: hsdp` (multi-node) shards within groups of
`dist.shard_size` processes (the GPUs of one node: all-gathers and reduce-scatters stay on NVLink) and
replicates across the groups (one all-reduce of the gradient shards across nodes per step), through a 2-D
DeviceMesh ("replicate", "shard"). During gradient accumulation only the last micro-batch of a step
reduces gradients (`accumulating`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class World:
    rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def init(backend: str = "auto") -> World:
    """Join the process group torchrun describes (WORLD_SIZE > 1), or run as a single process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if size == 1:
        return World(0, 1, device)
    import torch.distributed as dist

    if not dist.is_initialized():
        chosen = ("nccl" if cuda else "gloo") if backend == "auto" else backend
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group(chosen)
    return World(dist.get_rank(), dist.get_world_size(), device)


def barrier(world: World) -> None:
    if world.size > 1:
        import torch.distributed as dist

        dist.barrier()


def shutdown(world: World) -> None:
    if world.size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated transformer blocks the model names (`repeated_blocks()`, part of every model plugin's
    contract, docs/plugins.md): the units of sharding and activation checkpointing. Nothing is guessed."""
    named = getattr(model, "repeated_blocks", None)
    if not callable(named):
        from latbot.errors import LatBotError

        raise LatBotError(
            f"{type(model).__name__} does not name its repeated blocks: give it a method "
            "`repeated_blocks() -> list[nn.Module]` (an empty list when it has none; docs/plugins.md)"
        )
    found = list(named())
    if len({id(b) for b in found}) != len(found):
        raise ValueError(f"{type(model).__name__}.repeated_blocks() lists a module twice")
    return found


def mixed_precision(precision: str):
    """FSDP2's policy for a recipe's `train.precision`: bf16 → parameters all-gathered and computed in bf16,
    gradients reduced in fp32, and the sharded (master) parameters and optimizer states stay fp32; fp32 →
    no policy. Forward inputs are not cast: bf16 autocast (the loop) decides each op's dtype, so the
    residual streams and losses stay fp32 as without FSDP."""
    if precision != "bf16":
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False)


def fp32_master_weights(model: nn.Module) -> nn.Module:
    """The one dtype rule, applied after the model is built and its weights loaded, before sharding: every
    floating parameter and buffer becomes fp32 (integer and bool buffers are left alone), whatever dtype
    the weights were loaded in (`from_pretrained` keeps a checkpoint's bf16; pi0.5 checkpoints keep
    theirs), so LatBot's own fp32 parameters and the loaded ones make one dtype in every FSDP2 unit. bf16
    compute comes from `mixed_precision` under FSDP and from the loop's autocast otherwise; the weights the
    optimizer updates, and its moments, are fp32. Converted in place: tied parameters stay tied."""
    return model.float()


def require_launcher(strategy: str) -> None:
    """A sharded strategy started as one plain process (no WORLD_SIZE: not under torchrun) stops in a line,
    before any run directory exists."""
    if strategy != "none" and "WORLD_SIZE" not in os.environ:
        from latbot.errors import TrainingError

        raise TrainingError(
            f"dist.strategy {strategy} needs processes started by torchrun: run "
            "`torchrun --nproc-per-node N -m latbot train …` (N = GPUs per node; add --nnodes/--rdzv-endpoint for "
            "several nodes, or `latbot train --launcher slurm`), or --set dist.strategy=none for one process"
        )


def mesh_shape(world_size: int, strategy: str = "fsdp", shard_size: int | None = None) -> tuple[int, ...]:
    """The DeviceMesh shape of a strategy: fsdp (world,), hsdp (replicas, shard_size); a one-line recipe error
    when the world size is not a multiple of dist.shard_size."""
    if strategy != "hsdp":
        return (world_size,)
    if not shard_size or world_size % shard_size:
        from latbot.errors import RecipeError

        raise RecipeError(
            f"dist.shard_size ({shard_size}) must divide the number of processes ({world_size}) for "
            "dist.strategy hsdp; set it to the GPUs per node (or --set dist.strategy=fsdp)"
        )
    return (world_size // shard_size, shard_size)


def device_mesh(world: World, strategy: str = "fsdp", shard_size: int | None = None):
    """fsdp: a 1-D mesh over every rank; hsdp: a 2-D mesh ("replicate", "shard") of (replicas, shard_size),
    so that consecutive ranks (one node under torchrun) form a shard group."""
    from torch.distributed.device_mesh import init_device_mesh

    shape = mesh_shape(world.size, strategy, shard_size)
    if len(shape) == 1:
        return init_device_mesh(world.device.type, shape)
    return init_device_mesh(world.device.type, shape, mesh_dim_names=("replicate", "shard"))


def shard(
    model: nn.Module,
    world: World,
    reshard_after_forward: bool = True,
    precision: str = "fp32",
    strategy: str = "fsdp",
    shard_size: int | None = None,
) -> nn.Module:
    """FSDP2: `fully_shard` each named block, then the whole model (the root unit: everything else), over
    all ranks (fsdp) or within shard groups replicated across groups (hsdp: a 2-D mesh), with the
    mixed-precision policy of `precision`."""
    from torch.distributed.fsdp import fully_shard

    mesh = device_mesh(world, strategy, shard_size)
    options = {"mesh": mesh, "reshard_after_forward": reshard_after_forward}
    policy = mixed_precision(precision)
    if policy is not None:
        options["mp_policy"] = policy
    for block in blocks(model):
        fully_shard(block, **options)
    fully_shard(model, **options)
    return model


def accumulating(model: nn.Module, last: bool) -> None:
    """Before each micro-batch's backward under FSDP2: only the last micro-batch of an optimizer step
    reduce-scatters (and, under hsdp, all-reduces) gradients; the others accumulate unsharded gradients
    locally. Parameters stay gathered between those backward passes (no re-all-gather in the next forward)
    and are resharded after the last one. A model that is not sharded is left alone."""
    if not hasattr(model, "set_requires_gradient_sync"):
        return
    model.set_requires_gradient_sync(last)
    model.set_reshard_after_backward(last)


def checkpoint_activations(model: nn.Module) -> int:
    """Recompute each block's activations in the backward pass instead of storing them."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

    targets = {id(b) for b in blocks(model)}
    apply_activation_checkpointing(model, check_fn=lambda m: id(m) in targets)
    return len(targets)


def shard_teacher(
    teacher: nn.Module, world, precision: str = "fp32", strategy: str = "fsdp", shard_size: int | None = None
) -> nn.Module:
    """FSDP2 for the frozen teacher, apart from the student: `fully_shard` each encoder block, then the
    teacher (its root unit), over all ranks, with `reshard_after_forward=True` everywhere, the root
    included (an explicit True is honoured for the root, unlike the default), so a block's weights are
    gathered only while it runs and nothing stays gathered between steps. Frozen parameters have no
    gradient, so no reduce-scatter and no optimizer state: per GPU it costs its parameters / world size
    (fp32, as loaded) plus the gathered block (bf16 under `precision: bf16`). The mesh is the student's:
    all ranks (fsdp), or shard groups of `shard_size` replicated across groups (hsdp: the teacher's
    all-gathers stay within a node). Every rank must call the teacher the same number of times (it does:
    one forward per micro-batch)."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    from latbot.models.distill import teacher_blocks

    options = {"mesh": device_mesh(world, strategy, shard_size), "reshard_after_forward": True}
    policy = mixed_precision(precision)
    if policy is not None:
        options["mp_policy"] = policy
    for block in teacher_blocks(teacher):
        fully_shard(block, **options)
    fully_shard(teacher, **options)
    if hasattr(teacher, "encode"):  # the distillation step calls `encode`, not `forward`: gather around it too
        register_fsdp_forward_method(teacher, "encode")
    teacher.eval().requires_grad_(False)
    return teacher


# -- dist.meta_init: build on the meta device, shard, materialise only this rank's shards --------------------
#
# Every rank builds `stage.architecture()` under torch.device("meta") (no memory), applies the same dtype rule,
# trainable selection, activation checkpointing and `fully_shard` as the ordinary path, then `to_empty`
# allocates only its own shards. The initial weights come from two places:
# - pretrained checkpoint files (transformers models, SANA, pi0.5): process 0's build does not read them
#   (`latbot.models.deferred`: those modules are built with meta parameters and record where each tensor
#   lives); every rank reads only its own rows of each tensor from the safetensors files (`get_slice`), so
#   no process holds a full copy of them;
# - everything else (LatBot's own randomly initialised parameters, a parent run's weights): ONE ordinary
#   build on process 0, on CPU, sent tensor by tensor with `set_model_state_dict(..., broadcast_from_rank0=
#   True)`: each rank keeps only its shard of each tensor. Buffers (not sharded by FSDP2; non-persistent
#   ones are in no state dict) are broadcast from process 0 too.
# Every rank therefore starts from exactly process 0's ordinary build (the ordinary fsdp path keeps, in each
# rank's shard, that rank's own initialisation).


def initial_model(build_model, world: World) -> tuple[nn.Module, dict[str, Any]] | None:
    """Process 0: (the ordinary build on CPU in fp32 with pretrained files deferred, {parameter name:
    `Located`} of the deferred tensors); other processes: None (they read no weight file here). A build
    that leaves a tensor on the meta device that no file provides (a plugin that used a deferred weight
    while building) is redone the ordinary way, every file read by process 0."""
    if not world.main:
        return None
    from latbot.models import deferred

    rng = torch.get_rng_state()
    with deferred.deferring() as records:
        model = fp32_master_weights(build_model())
    located = deferred.owned_modules(model, records)
    tensors = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    if any(t.is_meta and name not in located for name, t in tensors):
        print("dist.meta_init: a weight file was used while building; process 0 reads every file", flush=True)
        torch.set_rng_state(rng)
        return fp32_master_weights(build_model()), {}
    with torch.no_grad():  # persistent buffers stored in the files (small): read whole, broadcast below
        for name, buf in model.named_buffers(remove_duplicate=False):
            if name in located:
                buf.copy_(deferred.read_rows(located[name], tuple(buf.shape), (0,) * buf.dim()).to(buf.dtype))
    return model, located


def meta_model(architecture) -> nn.Module:
    """The stage's architecture on the meta device (shapes, no memory, no file read)."""
    if architecture is None:
        from latbot.errors import TrainingError

        raise TrainingError("dist.meta_init needs the stage's `architecture` (pass it to latbot.train.loop.train)")
    with torch.device("meta"):
        return architecture()


def _plain_name(name: str) -> str:
    """A parameter / buffer name without the activation-checkpoint wrapper's prefix (the built model has none)."""
    return name.replace("_checkpoint_wrapped_module.", "")


def load_initial(model: nn.Module, initial: tuple[nn.Module, dict[str, Any]] | None, world: World) -> nn.Module:
    """After `shard` on the meta device: allocate this rank's shards on `world.device`, fill the deferred
    pretrained tensors from their files (this rank's rows only), the rest from process 0's build (`initial`,
    None on the other ranks), then the buffers. `initial` is released by the caller afterwards."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    from latbot.models.deferred import Located

    model.to_empty(device=world.device)
    built, located = initial if initial is not None else (None, {})
    if world.size > 1:
        box = [{name: (loc.file, loc.key) for name, loc in located.items()}]
        dist.broadcast_object_list(box, src=0)
        located = {name: Located(*where) for name, where in box[0].items()}
    full = {k: v for k, v in built.state_dict().items() if k not in located} if built is not None else {}
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=not located)
    set_model_state_dict(model, full, options=options)
    del full
    if located:
        read_shards(model, located, world)
    source = dict(built.named_buffers()) if built is not None else {}
    with torch.no_grad():
        for name, buf in model.named_buffers():
            box = buf.to(torch.uint8) if buf.dtype == torch.bool else buf  # gloo broadcasts no bool
            if world.main:
                box.copy_(source[_plain_name(name)].to(box.dtype))
            if world.size > 1:
                dist.broadcast(box, src=0)
            if box is not buf:
                buf.copy_(box.to(torch.bool))
    return model


def read_shards(model: nn.Module, located: dict[str, Any], world: World) -> dict[str, int]:
    """Fill each sharded parameter named in `located` with this rank's rows of its tensor, read from its
    safetensors file and nothing more; → {"read": bytes this rank read, "stored": bytes of those tensors}."""
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    from latbot.errors import TrainingError
    from latbot.models.deferred import read_rows

    read = stored = count = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            loc = located.get(_plain_name(name))
            if loc is None:
                continue
            if isinstance(p, DTensor):
                shape, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
                local = p.to_local()
            else:
                shape, offset, local = tuple(p.shape), (0,) * p.dim(), p
            if tuple(local.shape) != tuple(shape):
                raise TrainingError(f"dist.meta_init: {name}: shard {list(local.shape)} ≠ expected {list(shape)}")
            count += 1
            block = read_rows(loc, tuple(shape), tuple(offset))  # no rows on a rank past a short tensor's end
            local.copy_(block.to(local.dtype))
            read += block.numel() * block.element_size()
            stored += p.numel() * block.element_size()
    print(
        f"dist.meta_init: rank {world.rank} read {read} bytes of {count} pretrained tensors ({stored} bytes in "
        "their files) from safetensors: its own shards only",
        flush=True,
    )
    return {"read": read, "stored": stored}
