"""`internvl`: InternVL (transformers' InternVLModel) as the LAM encoder; InternVL3.5-2B by default.

Each frame is one 448² tile written as `<img>` + `<IMG_CONTEXT>` × 256 + `</img>` (the InternVL video
convention, one tile per frame; (448/14)² patches, pixel-shuffled by 0.5 → 256 tokens), normalised with
ImageNet mean/std after a bicubic resize, as InternVL's own image processor does.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from latbot.models.encoders.vlm import IMAGE_SLOT, VLMEncoderConfig, VLMLatentEncoder


class InternVLEncoder(VLMLatentEncoder):
    class Config(VLMEncoderConfig):
        type: Literal["internvl"] = "internvl"
        preset: Literal["internvl3_5_2b", "tiny", "tiny64"] = Field(
            "internvl3_5_2b",
            description="Architecture without weights (tiny64: the tiny one seeing 64² frames, 4 × 4 tokens each).",
        )

    image_mean = (0.485, 0.456, 0.406)
    image_std = (0.229, 0.224, 0.225)

    def __init__(self, config: Config):
        super().__init__()
        from transformers import InternVLModel

        self._build(config, InternVLModel, "internvl", presets)
        self._check_length(config.num_frames)

    def vision_blocks(self) -> list:
        return list(self.vlm.vision_tower.encoder.layer)  # InternViT: 24 layers at real size

    def _tokens_per_frame(self) -> int:
        vision = self.vlm.config.vision_config
        patches = (vision.image_size[0] // vision.patch_size[0]) ** 2
        return int(patches * self.vlm.config.downsample_ratio**2)

    def _check_length(self, frames: int) -> None:
        limit = getattr(self.vlm.config.text_config, "max_position_embeddings", None)
        need = frames * (self.tokens_per_frame + 8) + 200 + self.config.num_scene_tokens + self.config.num_motion_tokens
        if limit is not None and need > limit:
            raise ValueError(
                f"{frames} frames need ~{need} positions, the language model has {limit}; use fewer frames"
            )

    def prefix_tokens(self) -> list[int]:
        return self._text("<|im_start|>user\n")

    def answer_start_tokens(self) -> list[int]:
        """The chat template's end of the user turn and start of the assistant's: the answer is the reply."""
        return self._text("<|im_end|>\n<|im_start|>assistant\n")

    def frame_tokens(self, index: int) -> list[int]:
        t = self.tokenizer
        start, end = t.convert_tokens_to_ids("<img>"), t.convert_tokens_to_ids("</img>")
        return self._text(f"Frame{index + 1}:") + [start] + [IMAGE_SLOT] * self.tokens_per_frame + [end]


def presets(name: str):
    """(InternVLConfig, tokenizer or None) of a named architecture, built from explicit sub-configs."""
    from transformers import InternVLConfig, Qwen3Config
    from transformers.models.internvl.configuration_internvl import InternVLVisionConfig

    if name in ("tiny", "tiny64"):
        from latbot.models.tokenizer import build_tiny_tokenizer

        tok = build_tiny_tokenizer()
        side = 64 if name == "tiny64" else 32  # 8² patches, pixel-shuffled by 0.5: 2 × 2 or 4 × 4 tokens a frame
        vision = InternVLVisionConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=[side, side],
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
            vision_config=vision,
            text_config=text,
            image_token_id=image_token,
            image_seq_length=(side // 16) ** 2,
            downsample_ratio=0.5,
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
