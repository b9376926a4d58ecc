"""`sana`: the unified decoder on diffusers' SANA transformer blocks, in DC-AE latent space.

    image stream:  SANA blocks (linear self-attention, cross-attention to Z_sce through a width adapter,
                   Mix-FFN) over the DC-AE latent of the noisy V_{t+k}, plus the latent of V_t added through
                   a zero-initialised patch embedding                                  → velocity of the latent
    action stream: small joint blocks over noisy A_{t:t+k} (K, 44) + Z_mot              → velocity of A

At every layer the two streams exchange information by one joint attention over both token sets (separate
projections per stream; the image side's output projection starts at zero, so a pretrained SANA behaves
exactly as loaded at initialisation). `pretrained` loads a SANA diffusers checkpoint (subfolders
`transformer/` and `vae/`); the VAE stays frozen. Flow matching as in `latbot.models.flow` (SANA itself
is a rectified-flow model with the same velocity convention).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field
from torch import nn

from latbot.config import PluginConfig
from latbot.models import flow
from latbot.models.decoders.dit import StreamBlock, motion_stream, timestep_embedding
from latbot.models.loading import ModelBuildError


class SanaDecoder(nn.Module):
    class Config(PluginConfig):
        type: Literal["sana"] = "sana"
        pretrained: str | None = Field(
            None, description="SANA diffusers checkpoint (hub id or directory); None: preset."
        )
        preset: Literal["sana_1600m", "tiny"] = "sana_1600m"
        image_size: int = Field(
            256,
            ge=8,
            description="Frames are resized to this (a multiple of the VAE's factor; 256² = 8×8 DC-AE latents).",
        )
        action_dim: int = Field(44, ge=1)
        horizon: int = Field(15, ge=1, description="K actions per clip (frames − 1).")
        action_width: int = Field(512, ge=8, description="Width of the action stream and of the joint attention.")
        joint_heads: int = Field(8, ge=1)
        sample_steps: int = Field(10, ge=1)

    @classmethod
    def tiny_config(cls) -> Config:
        return cls.Config(preset="tiny", image_size=16, horizon=1, action_width=16, joint_heads=2)

    def __init__(self, config: Config, latent_width: int):
        super().__init__()
        c = self.config = config
        self.transformer, self.vae = _build(c)
        self.vae.requires_grad_(False)
        factor = self.vae.spatial_compression_ratio
        if c.image_size % factor:
            raise ModelBuildError(
                f"model.decoder.image_size ({c.image_size}) must be a multiple of the VAE factor {factor}"
            )
        if c.action_width % c.joint_heads:
            raise ModelBuildError(f"action_width ({c.action_width}) must be divisible by joint_heads ({c.joint_heads})")
        tc = self.transformer.config
        inner = tc.num_attention_heads * tc.attention_head_dim
        self.patch = tc.patch_size
        # the width adapter: VLM hidden size → SANA's caption width (2304 for SANA-1.6B, whatever the VLM)
        self.scene_adapter = nn.Linear(latent_width, tc.caption_channels)
        self.context_embed = nn.Conv2d(tc.in_channels, inner, kernel_size=self.patch, stride=self.patch)
        nn.init.zeros_(self.context_embed.weight)
        nn.init.zeros_(self.context_embed.bias)
        aw, layers = c.action_width, tc.num_layers
        # created kind by kind (all q/k/v, all outputs, all action blocks) and then grouped per layer, so the
        # random initialisation is drawn in the same order as before the grouping
        image_qkv = [nn.Linear(inner, 3 * aw) for _ in range(layers)]
        image_out = [nn.Linear(aw, inner) for _ in range(layers)]
        action = [StreamBlock(aw, c.joint_heads) for _ in range(layers)]
        parts = zip(image_qkv, image_out, action, strict=True)
        self.joint = nn.ModuleList(JointLayer(qkv, out, block, c.joint_heads) for qkv, out, block in parts)
        self.action_in = nn.Linear(c.action_dim, aw)
        self.action_pos = nn.Parameter(torch.randn(1, c.horizon, aw) * 0.02)
        self.motion_proj = nn.Linear(latent_width, aw)
        self.action_time = nn.Sequential(nn.Linear(aw, aw), nn.SiLU(), nn.Linear(aw, aw))
        self.action_norm = nn.LayerNorm(aw, eps=1e-6)
        self.action_out = nn.Linear(aw, c.action_dim)
        nn.init.zeros_(self.action_out.weight)
        nn.init.zeros_(self.action_out.bias)

    def repeated_blocks(self) -> list[nn.Module]:
        """The SANA transformer blocks and the joint layers between them (two units per layer)."""
        return [*self.transformer.transformer_blocks, *self.joint]

    # -- latents ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def to_latent(self, frame: torch.Tensor) -> torch.Tensor:
        x = frame.float() / 255.0 if frame.dtype == torch.uint8 else frame.float()
        s = self.config.image_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return self.vae.encode(x * 2 - 1).latent * self.vae.config.scaling_factor

    @torch.no_grad()
    def to_image(self, latent: torch.Tensor) -> torch.Tensor:
        return ((self.vae.decode(latent / self.vae.config.scaling_factor).sample + 1) / 2).clamp(0, 1)

    # -- one denoising evaluation ---------------------------------------------------------------------------
    def velocity(self, x_lat, context, x_act, z_sce, z_mot, t):
        tr, b = self.transformer, x_lat.shape[0]
        h, w = x_lat.shape[-2] // self.patch, x_lat.shape[-1] // self.patch
        img = tr.patch_embed(x_lat) + self.context_embed(context).flatten(2).transpose(1, 2)  # (B, h·w, C)
        timestep, embedded = tr.time_embed(t * 1000.0, batch_size=b, hidden_dtype=img.dtype)
        caption = tr.caption_norm(tr.caption_projection(self.scene_adapter(z_sce)))  # (B, Ns, C)
        act = motion_stream(self, x_act, z_mot)
        if act is not None:
            cond = self.action_time(timestep_embedding(t, self.config.action_width))
        for block, joint in zip(tr.transformer_blocks, self.joint, strict=True):
            img = block(img, None, caption, None, timestep, h, w)
            if act is not None:
                img, act = joint(img, act, cond)
        img = tr.proj_out(tr.norm_out(img, embedded, tr.scale_shift_table))
        img = img.reshape(b, h, w, self.patch, self.patch, -1).permute(0, 5, 1, 3, 2, 4)
        v_lat = img.reshape(b, -1, h * self.patch, w * self.patch)
        v_act = self.action_out(self.action_norm(act[:, : x_act.shape[1]])) if x_act is not None else None
        return v_lat, v_act

    def forward(self, z_sce, z_mot, frame_t, frame_future, actions=None, action_mask=None) -> dict[str, torch.Tensor]:
        """Flow-matching losses (latent of V_{t+k}, actions); shapes as in `DiTDecoder.forward`."""
        target, context = self.to_latent(frame_future), self.to_latent(frame_t)
        return flow.two_stream_losses(
            lambda x, a, t: self.velocity(x, context, a, z_sce, z_mot, t), target, actions, action_mask
        )

    @torch.no_grad()
    def sample(self, z_sce, z_mot, frame_t, with_actions: bool = True, generator: torch.Generator | None = None):
        """Generate V_{t+k} (B, 3, S, S) in [0, 1] and actions (B, K, A) or None, as `DiTDecoder.sample`."""
        c = self.config
        context = self.to_latent(frame_t)
        shape = (context.shape[0], c.horizon, c.action_dim) if with_actions else None
        lat, act = flow.two_stream_sample(
            lambda x, a, t: self.velocity(x, context, a, z_sce, z_mot, t), context, shape, c.sample_steps, generator
        )
        return self.to_image(lat), act


class JointLayer(nn.Module):
    """The exchange between the streams after one SANA block: the image tokens' q/k/v and output projection
    (zero-initialised) and the action stream's block, around one joint attention over both token sets.
    One module per layer, so that FSDP gathers and activation checkpointing recomputes it as a unit."""

    def __init__(self, image_qkv: nn.Linear, image_out: nn.Linear, action: StreamBlock, heads: int):
        super().__init__()
        self.heads = heads
        self.image_norm = nn.LayerNorm(image_qkv.in_features, elementwise_affine=False, eps=1e-6)
        self.image_qkv, self.image_out, self.action = image_qkv, image_out, action
        nn.init.zeros_(self.image_out.weight)
        nn.init.zeros_(self.image_out.bias)

    def forward(self, img: torch.Tensor, act: torch.Tensor, cond: torch.Tensor):
        """img (B, Ni, C), act (B, Na, W), cond (B, W) → (img, act)."""
        qi, ki, vi = rearrange(
            self.image_qkv(self.image_norm(img)), "b n (three h d) -> three b h n d", three=3, h=self.heads
        )
        (qa, ka, va), mods = self.action.pre(act, cond)
        q, k, v = (torch.cat(pair, dim=2) for pair in ((qi, qa), (ki, ka), (vi, va)))  # (B, H, Ni+Na, d)
        out = F.scaled_dot_product_attention(q, k, v)
        n = img.shape[1]
        img = img + self.image_out(rearrange(out[:, :, :n], "b h n d -> b n (h d)"))
        return img, self.action.post(act, out[:, :, n:], mods)


def _build(c: SanaDecoder.Config):
    from diffusers import AutoencoderDC, SanaTransformer2DModel

    if c.pretrained is not None:
        from latbot.models import deferred

        if deferred.active() and Path(c.pretrained).expanduser().is_dir():  # dist.meta_init: per-rank reads later
            root = Path(c.pretrained).expanduser()
            where = "model.decoder.pretrained"
            try:
                parts = [
                    deferred.build_recorded(
                        lambda k=kind, s=sub: k.from_config(k.load_config(root, subfolder=s)),
                        root / sub,
                        where,
                        ModelBuildError,
                    )
                    for kind, sub in ((SanaTransformer2DModel, "transformer"), (AutoencoderDC, "vae"))
                ]
            except (OSError, ValueError) as e:
                raise ModelBuildError(
                    f"{where}: cannot read a SANA config (transformer/ and vae/) from '{c.pretrained}': "
                    f"{str(e).splitlines()[0]}"
                ) from e
            if all(p is not None for p in parts):
                return parts[0], parts[1]
        try:  # drawing no random number, whether diffusers builds on meta (with accelerate) or not
            with torch.random.fork_rng(devices=[]):
                transformer = SanaTransformer2DModel.from_pretrained(c.pretrained, subfolder="transformer")
                vae = AutoencoderDC.from_pretrained(c.pretrained, subfolder="vae")
        except (OSError, ValueError) as e:
            raise ModelBuildError(
                f"model.decoder.pretrained: cannot load a SANA checkpoint (transformer/ and vae/) from "
                f"'{c.pretrained}': {str(e).splitlines()[0]}"
            ) from e
        return transformer, vae
    if c.preset == "tiny":
        vae = AutoencoderDC(
            in_channels=3,
            latent_channels=4,
            attention_head_dim=8,
            encoder_block_types=("ResBlock", "ResBlock"),
            decoder_block_types=("ResBlock", "ResBlock"),
            encoder_block_out_channels=(8, 16),
            decoder_block_out_channels=(8, 16),
            encoder_layers_per_block=(1, 1),
            decoder_layers_per_block=(1, 1),
            encoder_qkv_multiscales=((), ()),
            decoder_qkv_multiscales=((), ()),
            upsample_block_type="interpolate",
            downsample_block_type="Conv",
            scaling_factor=0.4,
        )
        transformer = SanaTransformer2DModel(
            in_channels=4,
            out_channels=4,
            num_attention_heads=2,
            attention_head_dim=8,
            num_layers=2,
            num_cross_attention_heads=2,
            cross_attention_head_dim=8,
            cross_attention_dim=16,
            caption_channels=24,
            sample_size=8,
            patch_size=1,
        )
        return transformer, vae
    # SANA-1.6B (diffusers defaults) and DC-AE f32c32 (reference §5c)
    vae = AutoencoderDC(
        encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
        decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
        upsample_block_type="interpolate",
        downsample_block_type="Conv",
        scaling_factor=0.41407,
    )
    return SanaTransformer2DModel(), vae
