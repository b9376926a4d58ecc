"""The decoder contract (registry kind `decoders`), written down once.

Everything LatBot calls on a decoder, with the arguments it passes:

    dec = cls(config, latent_width=D)                                   # the LAM stage (latbot.models.lam)
    dec(z_sce, z_mot, frame_t, frame_future, actions, action_mask)     # the LAM stage: training losses
    dec.sample(z_sce, z_mot, frame_t, with_actions=..., generator=...)  # `latbot viz episode --checkpoint`,
                                                                        # latbot.analysis.diagnostics, the
                                                                        # quickstart and study reports
    dec.repeated_blocks()                                               # FSDP wrapping, checkpointing

A plugin need not subclass `Decoder` (it is a `typing.Protocol`: the example plugin's `tiny_mlp` does not);
`latbot plugins check` (latbot/testing/contracts/models.py) calls each member exactly as above and checks
what comes back. docs/plugins.md, "Decoders", states the same contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn

    from latbot.config import PluginConfig

# The one spelling of `sample`'s signature: the contract check names it when a plugin's `sample` is missing
# or cannot take the arguments viz and the diagnostics pass.
SAMPLE_SIGNATURE = (
    "sample(z_sce, z_mot, frame_t, with_actions: bool = True, generator: torch.Generator | None = None) "
    "-> (frame (B, 3, h, w) in [0, 1], actions (B, K, 44) or None)"
)


class Decoder(Protocol):
    """A unified decoder: latents → future frame V_{t+k} and the action sequence A_{t:t+k}.

    B batch, Ns' / Nm' the tokens of each stream, D the encoder's width, H × W input frames, h × w the
    decoder's own output resolution, K = data.num_frames − 1 actions per clip, 44 the unified action width.
    What the LAM passes for Table 5's variants (latbot.models.lam.LatentActionModel.latents):
    full: z_sce, z_mot, actions; DLA only: z_sce, z_mot, no actions (Z_mot keeps its own pathway, e.g. a
    motion stream without action tokens); UAD only: the one group of Ns + Nm tokens as both z_sce and z_mot,
    actions; UniVLA-style: the one group as z_sce, z_mot None, no actions.
    """

    config: PluginConfig

    def __init__(self, config: PluginConfig, latent_width: int) -> None:
        """Built with the encoder's width D as `latent_width`."""

    def repeated_blocks(self) -> list[nn.Module]:
        """The repeated (transformer) blocks FSDP wraps and activation checkpointing recomputes; [] if none."""
        ...

    def forward(
        self,
        z_sce: torch.Tensor,
        z_mot: torch.Tensor | None,
        frame_t: torch.Tensor,
        frame_future: torch.Tensor,
        actions: torch.Tensor | None = None,
        action_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training losses. z_sce (B, Ns', D), z_mot (B, Nm', D) or None (no motion pathway); frame_t = V_t
        and frame_future = V_{t+k}, (B, 3, H, W) uint8 or float in [0, 1]; actions (B, K, 44) and
        action_mask (B, 44), or both None (the image-only ablations). → {"image": scalar, "action": scalar},
        only "image" when actions is None; the action loss averages over the dims action_mask marks valid
        (an all-zero mask gives 0)."""
        ...

    def sample(
        self,
        z_sce: torch.Tensor,
        z_mot: torch.Tensor | None,
        frame_t: torch.Tensor,
        with_actions: bool = True,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Generate V_{t+k} (and the actions) from the latents, as `latbot viz` and the diagnostics do.

        z_sce (B, Ns', D), z_mot (B, Nm', D); frame_t = V_t (B, 3, H, W) uint8 or float in [0, 1].
        `with_actions`: also generate the actions (False for a LAM trained with `unified_decoder: false`,
        and for image-only reports). `generator`: the source of all sampling noise, so one seed gives one
        result (a deterministic decoder ignores it). Called under `torch.no_grad()`.

        → (frame (B, 3, h, w) float in [0, 1] at the decoder's resolution, actions (B, K, 44) in the
        normalised units the decoder was trained on, or None when `with_actions` is False)."""
        ...
