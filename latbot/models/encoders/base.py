"""The encoder contract (registry kind `encoders`), written down once, and the cheap output checks that every
model kind's callers share.

Everything LatBot calls on an encoder, with the arguments it passes:

    enc = cls(config)                                  # the LAM stage (latbot.models.lam), `latbot plan`
    enc.width                                          # the LAM stage: the decoder's latent_width, the check below;
                                                       # distillation: the student's latent_width
    enc(frames, instructions)  # → forward             # the LAM stage (training, `encode` for distillation's
                                                       # teacher and the teacher cache)
    enc.repeated_blocks()                              # FSDP wrapping, checkpointing
    enc.image_attention(frames, instructions)          # optional (`AttentionMaps`): `latbot analyze grounding`

A plugin need not subclass `Encoder` (it is a `typing.Protocol`: the example plugin's `tiny_conv` does not);
`latbot plugins check` (latbot/testing/contracts/models.py) checks that each member exists and takes the
arguments above, then runs it on dummy inputs. The LAM checks what `forward` returns at every call
(`check_latents`): a wrong shape or dtype stops the first step with one line that names the plugin.
docs/plugins.md, "Encoders", states the same contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn

    from latbot.config import PluginConfig
    from latbot.errors import PluginCallError

# The one spelling of each member, named by `latbot plugins check` when a plugin lacks it or it cannot take
# the arguments LatBot passes.
SIGNATURES = {
    "__init__": "cls(config)",
    "width": "an int property `width` (D, the latents' width)",
    "forward": "forward(frames, instructions) -> (z_sce (B, Ns, D), z_mot (B, Nm, D)) floating",
    "repeated_blocks": "repeated_blocks() -> list[nn.Module]",
    "image_attention": "image_attention(frames, instructions) -> (B, layers, heads, image tokens)",
}


class Encoder(Protocol):
    """A latent-action encoder: a clip and its instruction → scene and motion latent tokens.

    B batch, T = data.num_frames frames of H × W, Ns / Nm the Config's `num_scene_tokens` /
    `num_motion_tokens` (required fields; an optional `num_frames` must equal data.num_frames and an optional
    `latent_groups` must follow `model.decoupled`), D = `width`.
    """

    def __init__(self, config: PluginConfig) -> None:
        """Built from its Config alone."""

    @property
    def width(self) -> int:
        """D, the width of every latent token: the decoder is built with `latent_width=D`, a student's Ẑ is
        projected to it."""
        ...

    def repeated_blocks(self) -> list[nn.Module]:
        """The repeated (transformer) blocks FSDP wraps and activation checkpointing recomputes; [] if none."""
        ...

    def forward(self, frames: torch.Tensor, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (B, T, 3, H, W) uint8 (the data pipeline's; float in [0, 1] also allowed), instructions B
        strings → (z_sce (B, Ns, D), z_mot (B, Nm, D)), a floating dtype (float32, or bfloat16/float16 under
        autocast). Also with `model.decoupled: false` the two groups keep their sizes (the LAM concatenates
        them). Called as `encoder(frames, instructions)`: in training, and frozen (eval mode, no_grad) as the
        distillation teacher."""
        ...


class AttentionMaps(Protocol):
    """Optional for encoders and students: what `latbot analyze grounding` reads when a model has it (the
    built-in VLMs do); a model without it is reported as not analysable."""

    def image_attention(self, frames: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        """frames (B, 3, H, W), instructions B strings → (B, layers, heads, n image tokens): how the last
        prompt token attends to the image tokens, per layer and head. Called under no_grad."""
        ...


# -- checking what a plugin returns (shared by the LAM, distillation and the VLA) ---------------------------
FLOATING = "a floating dtype (float32/bfloat16/float16)"


class OutputCheck:
    """Cheap checks of what one built plugin returns — shape and dtype comparisons only: no device sync,
    no reduction, so they cost nothing per step and run on meta tensors (`latbot plan`). A failure raises
    `PluginCallError` naming the plugin, the expected and the actual value, e.g.

        encoders plugin 'tiny_conv' (latbot_example_plugin.tiny_conv:TinyConvEncoder): forward returned z_mot
        of shape (2, 5, 16); expected (B=2, num_motion_tokens=4, width=16)

    `name` is the registered name (a recipe slot's `type`); without it the registration is found by class.
    The registry is asked only when an error is worded."""

    def __init__(self, kind: str, module: Any, name: str | None = None):
        self.kind, self.cls = kind, type(module)
        self.name = name if name is not None else getattr(getattr(module, "config", None), "type", None)

    def label(self) -> str:
        """`<kind> plugin '<name>' (<module>:<Class>)`, from the registry when the plugin is registered."""
        from latbot import registry
        from latbot.errors import RegistryError

        entry = None
        if isinstance(self.name, str):
            try:
                entry = registry.entry(self.kind, self.name)
            except RegistryError:
                entry = None
        if entry is None:  # registered under another name (or the name is gone): find it by class
            loaded = [
                (len(cls.__mro__), name)
                for (kind, name), cls in registry.REGISTRY._loaded.items()
                if kind == self.kind and isinstance(cls, type) and issubclass(self.cls, cls)
            ]
            if loaded:
                try:
                    entry = registry.entry(self.kind, max(loaded)[1])
                except RegistryError:
                    entry = None
        if entry is None:
            return f"{self.kind} plugin {self.cls.__module__}:{self.cls.__qualname__}"
        return f"{self.kind} plugin '{entry.name}' ({entry.target})"

    def error(self, message: str) -> PluginCallError:
        from latbot.errors import PluginCallError

        return PluginCallError(f"{self.label()}: {message}")

    def tensor(
        self, member: str, what: str, x: Any, dims: Sequence[tuple[str, int | None]], floating: bool = True
    ) -> torch.Tensor:
        """`x` must be a tensor of the named `dims` ((name, size) pairs, size None = any) and, with `floating`,
        of a floating dtype. `member` says what returned it ("forward"), `what` which output ("z_mot")."""
        import torch

        if not isinstance(x, torch.Tensor):
            raise self.error(f"{member} returned {what} as {_kind_of(x)}; expected a tensor {dims_text(dims)}")
        if x.ndim != len(dims) or any(
            want is not None and got != want for got, (_, want) in zip(x.shape, dims, strict=True)
        ):
            raise self.error(f"{member} returned {what} of shape {tuple(x.shape)}; expected {dims_text(dims)}")
        if floating and not x.is_floating_point():
            raise self.error(f"{member} returned {what} with dtype {x.dtype}; expected {FLOATING}")
        return x

    def int_property(self, name: str, value: Any, why: str) -> int:
        """A property that must be a positive int (a width, a layer count)."""
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise self.error(f"{name} is {value!r}; expected a positive int ({why})")
        return value

    def mapping(self, member: str, out: Any, keys: Sequence[str]) -> dict:
        """`out` must be a dict holding `keys`."""
        wanted = ", ".join(f'"{k}"' for k in keys)
        if not isinstance(out, dict):
            raise self.error(f"{member} returned {_kind_of(out)}; expected a dict with the keys {wanted}")
        missing = [k for k in keys if k not in out]
        if missing:
            raise self.error(f"{member} returned the keys {sorted(map(str, out))}; expected the keys {wanted}")
        return out

    def pair(self, member: str, out: Any, expected: str) -> tuple[Any, Any]:
        """`out` must be a tuple or list of two items."""
        if not isinstance(out, tuple | list) or len(out) != 2:
            raise self.error(f"{member} returned {_kind_of(out)}; expected a pair {expected}")
        return out[0], out[1]


def dims_text(dims: Sequence[tuple[str, int | None]]) -> str:
    """(("B", 2), ("N", None), ("width", 16)) → "(B=2, N, width=16)"; () → "a scalar ()"."""
    if not dims:
        return "a scalar ()"
    return "(" + ", ".join(name if size is None else f"{name}={size}" for name, size in dims) + ")"


def _kind_of(x: Any) -> str:
    if isinstance(x, tuple | list):
        return f"a {type(x).__name__} of {len(x)} items"
    return f"a {type(x).__name__}"


def check_latents(
    check: OutputCheck, out: Any, batch: int, num_scene: int | None, num_motion: int | None, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """What `Encoder.forward` returned: (z_sce (B, Ns, D), z_mot (B, Nm, D)), floating."""
    sce = (("B", batch), ("num_scene_tokens", num_scene), ("width", width))
    mot = (("B", batch), ("num_motion_tokens", num_motion), ("width", width))
    z_sce, z_mot = check.pair("forward", out, f"(z_sce {dims_text(sce)}, z_mot {dims_text(mot)})")
    return check.tensor("forward", "z_sce", z_sce, sce), check.tensor("forward", "z_mot", z_mot, mot)
