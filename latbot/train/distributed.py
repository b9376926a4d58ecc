"""Process groups and FSDP2, applied from outside the model code.

Launch with torchrun for several processes (GPUs, or CPU processes over gloo):

    torchrun --nproc-per-node 8 -m latbot train recipes/lam_internvl.yaml                   # one node
    torchrun --nnodes 4 --node-rank $RANK --master-addr $HOST --master-port 29500 \\
             --nproc-per-node 8 -m latbot train recipes/lam_internvl.yaml                   # four nodes

`dist.strategy: fsdp` shards every transformer block (and then the root) with `fully_shard`.
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
    """The repeated transformer blocks of a model: the units of sharding and activation checkpointing."""
    found = []
    for module in model.modules():
        for name in ("layers", "blocks", "transformer_blocks", "action_blocks"):
            child = getattr(module, name, None)
            if isinstance(child, nn.ModuleList):
                found.extend(child)
    return found


def shard(model: nn.Module, world: World, reshard_after_forward: bool = True) -> nn.Module:
    """FSDP2: `fully_shard` each block, then the whole model, over all ranks."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(world.device.type, (world.size,))
    for block in blocks(model):
        fully_shard(block, mesh=mesh, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward)
    return model


def checkpoint_activations(model: nn.Module) -> int:
    """Recompute each block's activations in the backward pass instead of storing them."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

    targets = {id(b) for b in blocks(model)}
    apply_activation_checkpointing(model, check_fn=lambda m: id(m) in targets)
    return len(targets)


def broadcast_path(path, world: World):
    """The main process's `path` on every rank (e.g. a run directory named with a timestamp)."""
    if world.size == 1:
        return path
    import torch.distributed as dist

    box = [str(path) if path is not None else None]
    dist.broadcast_object_list(box, src=0)  # ranks of one job trust each other
    from pathlib import Path

    return Path(box[0])
