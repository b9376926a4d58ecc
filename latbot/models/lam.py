"""The latent action model (paper §3.1–3.2): a VLM encoder + a unified decoder.

    Z_sce, Z_mot = encoder(V_t..V_{t+k}, ℓ)
    L = L_action + w_img · L_image      (flow matching on A_{t:t+k} and on V_{t+k} given V_t)

Ablations of paper Table 5 (`latents` says exactly how each variant's tokens reach the decoder):
`decoupled: false` makes one group of Ns + Nm tokens that feeds both streams alike; `unified_decoder:
false` drops the action tokens, head and loss (image reconstruction only) but keeps Z_mot's own motion
stream when the latents are decoupled; both off = "UniVLA-style" (one group, image stream only).
`encode()` is the teacher API of the distillation stage. What the encoder and the decoder return is checked
at every call (shapes and dtypes only: free, and fine on meta tensors), so a plugin that breaks its contract
(latbot.models.encoders.base, latbot.models.decoders.base) stops the first step with one line naming it,
instead of training a LAM that fails later in distillation.
"""

from __future__ import annotations

import torch
from torch import nn

from latbot import registry
from latbot.data.clips import K_ACTION_MASK, K_ACTIONS, K_FRAMES, K_INSTRUCTION
from latbot.errors import LatBotError
from latbot.models.encoders.base import OutputCheck, check_latents
from latbot.models.flow import masked_mse


class LatentActionModel(nn.Module):
    def __init__(self, config, num_frames: int):
        """`config` is a recipe's `model` section (LamModel); `num_frames` the clip length T."""
        super().__init__()
        self.config = config
        self.num_frames = num_frames
        self.encoder = registry.build("encoders", config.encoder)
        self._encoder_check = OutputCheck("encoders", self.encoder, config.encoder.type)
        self._width = self._encoder_check.int_property("width", self.encoder.width, "D, the latents' width")
        self.decoder = registry.build("decoders", config.decoder, latent_width=self._width)
        self._decoder_check = OutputCheck("decoders", self.decoder, config.decoder.type)
        horizon = getattr(config.decoder, "horizon", num_frames - 1)
        if horizon != num_frames - 1:
            raise LatBotError(
                f"model.decoder.horizon is {horizon}, but clips of {num_frames} frames carry {num_frames - 1} "
                "actions; set model.decoder.horizon to data.num_frames − 1"
            )
        groups = getattr(config.encoder, "latent_groups", None)
        if groups is not None and groups != (2 if config.decoupled else 1):
            raise LatBotError(
                f"model.decoupled is {config.decoupled} but model.encoder.latent_groups is {groups}; "
                f"set latent_groups: {2 if config.decoupled else 1} (decoupled scene/motion groups need 2)"
            )
        self.motion_head = None
        if getattr(config, "motion_head_weight", 0.0) > 0:  # a linear read-out of the actions from Z_mot
            if not (config.decoupled and config.unified_decoder):
                raise LatBotError(
                    "model.motion_head_weight needs decoupled: true and unified_decoder: true (it reads the actions "
                    "from Z_mot); set it to 0 for this variant"
                )
            tokens = getattr(config.encoder, "num_motion_tokens", None)
            if tokens is None:
                raise LatBotError(f"model.motion_head_weight: encoder {config.encoder.type} has no num_motion_tokens")
            self.motion_head = nn.Linear(self._width * tokens, horizon * getattr(config.decoder, "action_dim", 44))
        enc_frames = getattr(config.encoder, "num_frames", num_frames)
        if enc_frames != num_frames:
            raise LatBotError(
                f"model.encoder.num_frames is {enc_frames}, data.num_frames is {num_frames}; make them equal"
            )

    def repeated_blocks(self) -> list[nn.Module]:
        """The encoder's blocks (vision tower, language model) and the decoder's: FSDP / checkpointing units."""
        return [*self.encoder.repeated_blocks(), *self.decoder.repeated_blocks()]

    def encode(self, frames: torch.Tensor, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (B, T, 3, H, W), instructions (B) → Z_sce (B, Ns, D), Z_mot (B, Nm, D), as the encoder's
        contract says (a `PluginCallError` naming the encoder otherwise)."""
        enc = self.config.encoder
        return check_latents(
            self._encoder_check,
            self.encoder(frames, instructions),
            frames.shape[0],
            getattr(enc, "num_scene_tokens", None),
            getattr(enc, "num_motion_tokens", None),
            self._width,
        )

    def latents(self, frames, instructions):
        """The tokens of each decoder pathway: (image-stream conditioning, motion-stream tokens or None).

        Table 5's four variants differ exactly in DLA (decoupled latents) and UAD (the unified decoder's
        action stream):
        - full (DLA + UAD): Z_sce conditions the image stream; Z_mot enters the motion / action stream
          beside the noisy actions (paper Fig. 2); image and action losses.
        - DLA only ("Ours-v1"): the same two pathways — Z_sce into the image stream, Z_mot into a motion
          stream of its own, which reaches the frame only through the layer-wise joint attention — but no
          action tokens, head or loss.
        - UAD only ("Ours-v2"): one latent group (Ns + Nm tokens after one description) feeds both streams
          alike; image and action losses.
        - UniVLA-style: one group conditions the image stream; no motion stream, no action loss."""
        return self.pathways(*self.encode(frames, instructions))

    def pathways(self, z_sce: torch.Tensor, z_mot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`latents` from the encoder's output (`encode`): what each decoder pathway receives."""
        if self.config.decoupled:
            return z_sce, z_mot
        z = torch.cat([z_sce, z_mot], dim=1)  # (B, Ns + Nm, D): the one group
        return z, (z if self.config.unified_decoder else None)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """A LAM clip batch (latbot.data.clips) → {"loss", "image", "action"}."""
        frames = batch[K_FRAMES]  # (B, T, 3, H, W)
        shift = getattr(self.config, "shift_augment", 0)
        if self.training and shift > 0:
            frames = shift_clips(frames, shift)
        z_sce, z_mot = self.latents(frames, self._instructions(list(batch[K_INSTRUCTION])))
        unified = self.config.unified_decoder
        inputs = [
            z_sce,
            z_mot,
            frames[:, 0],
            frames[:, -1],
            batch[K_ACTIONS] if unified else None,
            batch[K_ACTION_MASK] if unified else None,
        ]
        draws = getattr(self.config, "flow_draws", 1)
        if self.training and draws > 1:  # each clip decoded at `draws` (t, noise) pairs; encoded once
            inputs = [None if x is None else x.repeat_interleave(draws, dim=0) for x in inputs]
        losses = self.decoder(*inputs)
        self._check_losses(losses, unified)
        action = losses.get("action", torch.zeros((), device=losses["image"].device))
        out = {
            "loss": action + self.config.image_loss_weight * losses["image"],
            "image": losses["image"],
            "action": action,
        }
        if self.motion_head is not None:
            actions = batch[K_ACTIONS]
            read = self.motion_head(z_mot.flatten(1)).view_as(actions)
            out["motion_head"] = masked_mse(read, actions, batch[K_ACTION_MASK])
            out["loss"] = out["loss"] + self.config.motion_head_weight * out["motion_head"]
        return out

    def _instructions(self, words: list[str]) -> list[str]:
        """The batch's instructions, each replaced by "" with probability `instruction_dropout` in training
        (drawn from torch's generator, so a seeded run repeats)."""
        p = getattr(self.config, "instruction_dropout", 0.0)
        if not (self.training and p > 0):
            return words
        drop = (torch.rand(len(words)) < p).tolist()
        return ["" if d else w for w, d in zip(words, drop, strict=True)]

    def _check_losses(self, losses, unified: bool) -> None:
        """The decoder's losses: {"image", "action"} floating scalars ({"image"} without actions)."""
        keys = ("image", "action") if unified else ("image",)
        self._decoder_check.mapping("forward", losses, keys)
        for key in keys:
            self._decoder_check.tensor("forward", f'"{key}"', losses[key], ())


def shift_clips(frames: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random-shift augmentation of clips (B, T, 3, H, W): each clip padded by `pad` pixels (edges repeated) and
    cropped back to H × W at a random offset, the same for all of its frames, so the motion between them is
    kept and only where the scene sits in the image changes. Same dtype as `frames` (uint8 stays exact)."""
    b, t, c, h, w = frames.shape
    padded = torch.nn.functional.pad(frames.flatten(1, 2).float(), (pad, pad, pad, pad), mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator).tolist()
    crops = [padded[i, :, y : y + h, x : x + w] for i, (y, x) in enumerate(offsets)]
    return torch.stack(crops).unflatten(1, (t, c)).to(frames.dtype)
