"""The recipe: one YAML file that drives a stage (`lam`, `distill` or `finetune`) from data to logs.

A recipe has the sections `data, model, train, dist, log` and a `stage` that selects the model
section's shape: each stage module (latbot/stages/) declares its recipe class on top of `RecipeBase`.
Plugin slots (`model.encoder`, `model.decoder`, `model.student`, `model.action_expert`) hold
``{type: <registered name>, ...}``; the loader looks the plugin up and validates the rest of the slot
with the plugin's own `Config` (see `latbot.recipes.loader.validate`).

Defaults follow the paper where it gives a number (supp. 6.3: AdamW β=(0.9, 0.95), lr 1e-4 with 2000
warmup steps and cosine decay to 2.5e-6, global batch 512); where it is silent the choice is documented
in docs/recipes.md.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SerializeAsAny, model_validator

from latbot.config import PluginConfig, Section
from latbot.data.sources import DataSource as DataSource
from latbot.data.sources import StoreLocation as StoreLocation


class PluginSlot:
    """Marks a recipe field as a plugin slot of a registry kind (in the field's `Annotated` metadata)."""

    def __init__(self, kind: str):
        self.kind = kind

    def __repr__(self) -> str:
        return f"PluginSlot({self.kind!r})"


class UnresolvedPlugin(PluginConfig):
    """A plugin slot as written, before the registry is asked: `type` plus the plugin's own fields."""

    model_config = ConfigDict(extra="allow")


def _as_unresolved(value: Any) -> Any:
    if isinstance(value, PluginConfig):
        return value
    if isinstance(value, dict):
        return UnresolvedPlugin.model_validate(value)
    return value  # let pydantic report the type error


def _slot(kind: str) -> Any:
    return Annotated[SerializeAsAny[PluginConfig], BeforeValidator(_as_unresolved), PluginSlot(kind)]


EncoderSlot = _slot("encoders")
DecoderSlot = _slot("decoders")
StudentSlot = _slot("students")
ActionExpertSlot = _slot("action_experts")


# -- data ------------------------------------------------------------------------------------------
# An episode store to train on (and the type of a store's location) is data-layer vocabulary: defined in
# `latbot.data.sources`, re-exported here as a section of the recipe.


class DataConfig(Section):
    sources: list[DataSource] = Field(
        default_factory=list, description="Stores to train on; set here or with `--set data.sources=...`."
    )
    mixture: Path | None = Field(None, description="A mixture file (recipes/mixtures/*.yaml) instead of sources.")
    num_frames: int = Field(16, ge=2, le=1024, description="Frames per LAM clip, V_t..V_{t+k} (paper: 16).")
    image_size: int = Field(224, ge=8, le=4096, description="Square training resolution in pixels (8 to 4096).")
    cameras: list[str] | None = Field(None, description="Cameras to read (None = the store's first camera).")
    num_workers: int = Field(2, ge=0, le=256, description="DataLoader worker processes per rank.")

    @model_validator(mode="after")
    def _one_source_kind(self) -> DataConfig:
        if self.sources and self.mixture is not None:
            raise ValueError("give either `sources` or `mixture`, not both")
        return self


# -- training, distribution, logging -----------------------------------------------------
class TrainConfig(Section):
    steps: int = Field(100_000, ge=1, le=10**9, description="Optimizer steps (1 to 1e9).")
    global_batch_size: int = Field(
        512, ge=1, le=10**6, description="Samples per optimizer step over all ranks (paper: 512)."
    )
    micro_batch_size: int = Field(
        8, ge=1, le=10**5, description="Samples per forward pass per rank; the rest is accumulation."
    )
    lr: float = Field(1e-4, gt=0, le=1, description="Peak learning rate, in (0, 1] (paper: 1e-4).")
    min_lr: float = Field(2.5e-6, ge=0, le=1, description="Floor of the cosine decay (paper: 2.5e-6).")
    warmup_steps: int = Field(2000, ge=0, le=10**9, description="Linear warmup steps (paper: 2000).")
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = Field(
        (0.9, 0.95), description="AdamW betas (paper: 0.9, 0.95)."
    )
    eps: float = Field(1e-8, gt=0, le=1)
    weight_decay: float = Field(0.0, ge=0, le=10, description="AdamW weight decay (paper silent; see docs).")
    grad_clip: float | None = Field(1.0, gt=0, le=1e6, description="Max global gradient norm; null disables clipping.")
    precision: Literal["fp32", "bf16"] = Field("bf16", description="bf16 autocast where the device supports it.")
    activation_checkpointing: bool = False
    trainable: list[str] = Field(["*"], description="Glob patterns of parameter names to train.")
    frozen: list[str] = Field(default_factory=list, description="Glob patterns kept frozen (wins over trainable).")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Random seed (numpy needs it below 2**32).")
    checkpoint_every: int = Field(1000, ge=1, le=10**9)
    keep_last: int = Field(3, ge=1, le=10_000, description="Checkpoints kept on disk (older ones are deleted).")

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(
                f"global_batch_size ({self.global_batch_size}) must be a multiple of "
                f"micro_batch_size ({self.micro_batch_size})"
            )
        return self


class DistConfig(Section):
    strategy: Literal["none", "fsdp", "hsdp"] = Field(
        "none",
        description="fsdp = torch FSDP2 (`fully_shard`) over all processes; hsdp = sharded within groups of "
        "`shard_size` processes (e.g. the GPUs of one node) and replicated across the groups (multi-node).",
    )
    backend: Literal["auto", "nccl", "gloo"] = Field("auto", description="auto: nccl on CUDA, gloo on CPU.")
    reshard_after_forward: bool = True
    no_sync_accumulation: bool = Field(
        True,
        description="With gradient accumulation under fsdp/hsdp, reduce gradients only at the last micro-batch "
        "of a step (the others keep unsharded gradients and gathered parameters: memory for communication, "
        "see `latbot plan`); false: reduce-scatter after every micro-batch.",
    )
    shard_size: int | None = Field(
        None,
        ge=1,
        description="hsdp: processes per shard group (the GPUs of one node); the world size must be a multiple "
        "of it. Required by hsdp, unused otherwise.",
    )
    meta_init: bool = Field(
        False,
        description="fsdp/hsdp: every process builds the model on the meta device, shards it, and materialises "
        "only its own shards. Pretrained checkpoints (transformers, SANA, pi0.5 safetensors) are read by every "
        "process, its own rows of each tensor only; the rest (random initialisation, a parent run) is built once, "
        "on CPU, by process 0 and broadcast shard by shard (docs/real-size.md). false: every process builds the "
        "whole model.",
    )

    @model_validator(mode="after")
    def _hsdp_needs_shard_size(self):
        if self.strategy == "hsdp" and self.shard_size is None:
            raise ValueError("dist.strategy hsdp needs dist.shard_size (processes per shard group, e.g. 8 per node)")
        return self

    @model_validator(mode="after")
    def _meta_init_needs_sharding(self):
        if self.meta_init and self.strategy == "none":
            raise ValueError("dist.meta_init needs dist.strategy fsdp or hsdp (a single process builds the model)")
        return self


MAX_RUN_NAME = 128  # characters; a folder name (most file systems allow 255 bytes)


def _plain_run_name(name: str | None) -> str | None:
    """`log.run_name` is one folder directly inside `log.out_dir`, so a recipe or a `--set` can never make a
    run write elsewhere (`../x`, `/abs/path`, `a/b`); `log.out_dir` is the field that says where."""
    if name is None:
        return name
    if not name or len(name) > MAX_RUN_NAME:
        problem = f"must be 1 to {MAX_RUN_NAME} characters"
    elif "/" in name or "\\" in name:
        problem = "must be a plain folder name, without '/' or a backslash"
    elif name.startswith("."):
        problem = "must not start with '.' (no '..', no hidden folder)"
    elif not name.isprintable():
        problem = "must not hold control characters"
    else:
        return name
    raise ValueError(f"{problem}; give a name like 'lam_mt10' (log.out_dir says where runs go)")


class WandbConfig(Section):
    """Weights & Biases tracking: the same metrics as metrics.jsonl / TensorBoard, and the resolved recipe as
    the run's config. Never required: install the `wandb` extra to use it."""

    project: str = Field(description="W&B project.")
    entity: str | None = Field(None, description="W&B entity (user or team); null: the account's default.")
    mode: Literal["offline", "online", "disabled"] = Field(
        "offline", description="offline: run files under the run directory (`wandb sync` them later); online: live."
    )
    tags: list[str] = Field(default_factory=list, description="Tags of the W&B run.")


class LogConfig(Section):
    out_dir: Path = Field(Path("runs"), description="Runs are written to out_dir/run_name.")
    run_name: Annotated[str | None, AfterValidator(_plain_run_name)] = Field(
        None, description="Default: the recipe file's stem and a timestamp."
    )
    every_steps: int = Field(10, ge=1, le=10**9)
    tensorboard: bool = True
    progress: bool = True
    wandb: WandbConfig | None = Field(None, description="Also log to Weights & Biases (null: off).")


class RecipeBase(Section):
    """The sections every stage's recipe has; a stage's recipe adds ``stage: Literal[name]`` and `model`
    (see latbot/stages/)."""

    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    dist: DistConfig = Field(default_factory=DistConfig)
    log: LogConfig = Field(default_factory=LogConfig)


def iter_slots(cls: type[BaseModel], loc: tuple[str, ...] = ()):
    """Yield ``(loc, owner class, field name, kind, optional)`` for every plugin slot reachable from `cls`
    through nested sections (slots are never inside lists, so locations are static)."""
    for name, info in cls.model_fields.items():
        slot = next((m for m in info.metadata if isinstance(m, PluginSlot)), None)
        if slot is not None:
            yield (*loc, name), cls, name, slot.kind, not info.is_required() and info.default is None
            continue
        inner = info.annotation
        if isinstance(inner, type) and issubclass(inner, Section) and not issubclass(inner, PluginConfig):
            yield from iter_slots(inner, (*loc, name))


RecipeModel = RecipeBase  # a validated recipe of any stage


def recipe_classes() -> dict[str, type[RecipeBase]]:
    """Every registered stage's recipe model, by stage name."""
    from latbot import registry

    return {name: registry.get("stages", name).Config for name in registry.stage_names()}


def recipe_union() -> Any:
    """The discriminated union of every stage's recipe (for JSON Schema)."""
    classes = tuple(recipe_classes().values())
    union = classes[0] if len(classes) == 1 else typing.Union[classes]  # noqa: UP007
    return Annotated[union, Field(discriminator="stage")]
