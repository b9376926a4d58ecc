"""`internvl`: InternVL (transformers' InternVLModel) as the LAM encoder; InternVL3.5-2B by default.

Each frame is one 448² tile written as `<img>` + `<IMG_CONTEXT>` × 256 + `</img>` (the InternVL video
convention, one tile per frame; (448/14)² patches, pixel-shuffled by 0.5 → 256 tokens), normalised with
ImageNet mean/std after a bicubic resize, as InternVL's own image processor does.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from latbot.config import PluginConfig
from latbot.models.encoders.vlm import IMAGE_SLOT, VLMLatentEncoder
from latbot.models.loading import load_pretrained, lora


class InternVLEncoder(VLMLatentEncoder):
    class Config(PluginConfig):
        type: Literal["internvl"] = "internvl"
        pretrained: str | None = Field(None, description="Hub id or local directory (from_pretrained); None: preset.")
        preset: Literal["internvl3_5_2b", "tiny"] = Field("internvl3_5_2b", description="Architecture without weights.")
        num_frames: int = Field(16, ge=1, description="T, frames per clip (paper: 16).")
        num_scene_tokens: int = Field(64, ge=1)
        num_motion_tokens: int = Field(64, ge=1)
        freeze_vision: bool = True
        lora_rank: int = Field(0, ge=0, description="LoRA rank on the language model's attention (0: off).")
        attn_implementation: Literal["sdpa", "eager"] = "sdpa"

    @classmethod
    def tiny_config(cls) -> Config:
        """A CPU-sized configuration of the same architecture, for contract tests."""
        return cls.Config(preset="tiny", num_frames=2, num_scene_tokens=4, num_motion_tokens=4)

    image_mean = (0.485, 0.456, 0.406)
    image_std = (0.229, 0.224, 0.225)

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        from transformers import InternVLModel

        self.vlm, self.tokenizer = load_pretrained(
            config.pretrained, InternVLModel, "internvl", lambda: presets(config.preset), config.attn_implementation
        )
        vision = self.vlm.config.vision_config
        patches = (vision.image_size[0] // vision.patch_size[0]) ** 2
        self.tokens_per_frame = int(patches * self.vlm.config.downsample_ratio**2)
        self._init_latents()
        if config.lora_rank:
            lora(self.vlm.language_model, config.lora_rank)
        self._check_length(config.num_frames)

    def _check_length(self, frames: int) -> None:
        limit = getattr(self.vlm.config.text_config, "max_position_embeddings", None)
        need = frames * (self.tokens_per_frame + 8) + 200 + self.config.num_scene_tokens + self.config.num_motion_tokens
        if limit is not None and need > limit:
            raise ValueError(
                f"{frames} frames need ~{need} positions, the language model has {limit}; use fewer frames"
            )

    def prefix_tokens(self) -> list[int]:
        return self._text("<|im_start|>user\n")

    def frame_tokens(self, index: int) -> list[int]:
        t = self.tokenizer
        start, end = t.convert_tokens_to_ids("<img>"), t.convert_tokens_to_ids("</img>")
        return self._text(f"Frame{index + 1}:") + [start] + [IMAGE_SLOT] * self.tokens_per_frame + [end]


def presets(name: str):
    """(InternVLConfig, tokenizer or None) of a named architecture, built from explicit sub-configs."""
    from transformers import InternVLConfig, Qwen3Config
    from transformers.models.internvl.configuration_internvl import InternVLVisionConfig

    if name == "tiny":
        from latbot.models.tokenizer import build_tiny_tokenizer

        tok = build_tiny_tokenizer()
        vision = InternVLVisionConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=[32, 32],
            patch_size=[8, 8],
        )
        text = Qwen3Config(
            vocab_size=len(tok),
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            intermediate_size=128,
            max_position_embeddings=4096,
            tie_word_embeddings=True,
        )
        image_token = tok.convert_tokens_to_ids("<IMG_CONTEXT>")
        return InternVLConfig(
            vision_config=vision, text_config=text, image_token_id=image_token, image_seq_length=4, downsample_ratio=0.5
        ), tok
    # InternVL3.5-2B: InternViT-300M-448px + Qwen3-1.7B (see reference/formats-and-models.md §5a).
    vision = InternVLVisionConfig(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        image_size=[448, 448],
        patch_size=[14, 14],
        layer_scale_init_value=0.1,
    )
    text = Qwen3Config(
        vocab_size=151936,
        hidden_size=2048,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=6144,
        max_position_embeddings=40960,
        rope_theta=1e6,
        tie_word_embeddings=True,
    )
    return InternVLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=151671,
        image_seq_length=256,
        downsample_ratio=0.5,
        tie_word_embeddings=True,
    ), None
