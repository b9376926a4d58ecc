"""Process groups and FSDP2, applied from outside the model code.

Launch with torchrun for several processes (GPUs, or CPU processes over gloo):

    torchrun --nproc-per-node 8 -m latbot train recipes/lam_internvl.yaml                   # one node
    torchrun --nnodes 4 --node-rank $RANK --master-addr $HOST --master-port 29500 \\
             --nproc-per-node 8 -m latbot train recipes/lam_internvl.yaml                   # four nodes

`dist.strategy: fsdp` shards every block the model names (`repeated_blocks()`) and then the root with
`fully_shard`; `train.precision: bf16` adds FSDP2's MixedPrecisionPolicy (bf16 gather and compute, fp32
gradient reduction, fp32 master weights).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

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


def shard(model: nn.Module, world: World, reshard_after_forward: bool = True, precision: str = "fp32") -> nn.Module:
    """FSDP2: `fully_shard` each named block, then the whole model (the root unit: everything else), over
    all ranks, with the mixed-precision policy of `precision`."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(world.device.type, (world.size,))
    options = {"mesh": mesh, "reshard_after_forward": reshard_after_forward}
    policy = mixed_precision(precision)
    if policy is not None:
        options["mp_policy"] = policy
    for block in blocks(model):
        fully_shard(block, **options)
    fully_shard(model, **options)
    return model


def checkpoint_activations(model: nn.Module) -> int:
    """Recompute each block's activations in the backward pass instead of storing them."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

    targets = {id(b) for b in blocks(model)}
    apply_activation_checkpointing(model, check_fn=lambda m: id(m) in targets)
    return len(targets)
