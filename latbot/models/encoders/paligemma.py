"""`paligemma`: PaliGemma (transformers' PaliGemmaModel) as the LAM encoder; PaliGemma-3B (pi0.5's VLM).

Each frame is 256 image tokens (SigLIP So400m/14 at 224²), frames back to back, then `<bos>` and the
text, as PaliGemma's processor lays out images; pixels are resized (bicubic) and scaled to [−1, 1].
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from latbot.models.encoders.vlm import IMAGE_SLOT, VLMEncoderConfig, VLMLatentEncoder


class PaliGemmaEncoder(VLMLatentEncoder):
    class Config(VLMEncoderConfig):
        type: Literal["paligemma"] = "paligemma"
        preset: Literal["paligemma_3b", "tiny"] = Field("paligemma_3b", description="Architecture without weights.")

    prefix_lm = True  # bidirectional over images + prompt, causal over the answer (PaliGemma, pi0.5)
    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.5, 0.5, 0.5)

    def __init__(self, config: Config):
        super().__init__()
        from transformers import PaliGemmaModel

        self._build(config, PaliGemmaModel, "paligemma", presets)

    def vision_blocks(self) -> list:
        return list(self.vlm.vision_tower.encoder.layers)  # SigLIP So400m: 27 layers at real size

    def _tokens_per_frame(self) -> int:
        vision = self.vlm.config.vision_config
        return (vision.image_size // vision.patch_size) ** 2

    def frame_tokens(self, index: int) -> list[int]:
        return [IMAGE_SLOT] * self.tokens_per_frame

    def prompt_tokens(self, instruction: str, num_frames: int) -> list[int]:
        """PaliGemma's prefix: the image tokens, <bos>, the text prompt."""
        frames = [i for t in range(num_frames) for i in self.frame_tokens(t)]
        return [*frames, self.tokenizer.bos_token_id, *self._text(self.question_template.format(sent=instruction))]

    def answer_start_tokens(self) -> list[int]:
        return self._text("\n")  # PaliGemma separates its prefix from the answer (suffix) by a newline


def presets(name: str):
    from transformers import GemmaConfig, PaliGemmaConfig, SiglipVisionConfig

    if name == "tiny":
        from latbot.models.tokenizer import build_tiny_tokenizer

        tok = build_tiny_tokenizer()
        vision = SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
        text = GemmaConfig(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=16,
        )
        return PaliGemmaConfig(
            vision_config=vision,
            text_config=text,
            image_token_id=tok.convert_tokens_to_ids("<image>"),
            projection_dim=64,
        ), tok
    # PaliGemma-3B as in pi0 / pi0.5: SigLIP So400m/14 @224 + Gemma-2B (reference §5b).
    vision = SiglipVisionConfig(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
    )
    text = GemmaConfig(
        vocab_size=257152,
        hidden_size=2048,
        intermediate_size=16384,
        num_hidden_layers=18,
        num_attention_heads=8,
        num_key_value_heads=1,
        head_dim=256,
    )
    return PaliGemmaConfig(vision_config=vision, text_config=text, image_token_id=257152, projection_dim=2048), None
