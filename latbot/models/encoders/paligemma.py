"""`paligemma`: PaliGemma (transformers' PaliGemmaModel) as the LAM encoder; PaliGemma-3B (pi0.5's VLM).

Each frame is 256 image tokens (SigLIP So400m/14 at 224²), frames back to back, then `<bos>` and the
text, as PaliGemma's processor lays out images; pixels are resized (bicubic) and scaled to [−1, 1].
"""

from __future__ import annotations

from typing import Literal

import torch
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

    # -- inference without gradients: transformers' own modules, called without the model-level wrappers ------
    # (output capturing hooks, mask and position preparation, the vision tower's pooling head, whose output
    # PaliGemma discards); the same operations in the same order, so the same bits (tests/test_predict_speed.py)
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return super().image_features(pixels)
        tower = self.vlm.vision_tower
        tower = getattr(tower, "vision_model", tower)
        h = tower.embeddings(pixels)
        for layer in tower.encoder.layers:
            h = layer(h, None)
        return self.vlm.multi_modal_projector(tower.post_layernorm(h))

    def language_model(self, inputs: dict, hidden_states: bool = False) -> tuple[torch.Tensor, tuple | None]:
        if torch.is_grad_enabled():
            return super().language_model(inputs, hidden_states)
        lm = self.vlm.language_model
        h = inputs["inputs_embeds"]
        mask = inputs["attention_mask"] if inputs["padded"] else None
        if mask is not None and mask.dim() != 4:  # transformers' own mask preparation
            return super().language_model(inputs, hidden_states)
        key = (h.shape[1], h.dtype, h.device)
        rotary = self.__dict__.setdefault("_rotary", {})  # per sequence length: positions 0..N-1, cos and sin
        if key not in rotary:
            with torch.inference_mode(False):  # kept: normal tensors, whatever the caller's mode
                positions = torch.arange(h.shape[1], device=h.device)[None]
                rotary.clear()
                rotary[key] = (positions, lm.rotary_emb(h, position_ids=positions))
        positions, cos_sin = rotary[key]
        layers = lm.layers[: lm.config.num_hidden_layers]
        lean = h.dtype == torch.float32 and _plain_gemma(lm)
        if lean:  # the rotation in one multiply-add: rotate_half(x) · sin = roll(x, d/2) · (−sin₁, sin₂)
            cos, sin = cos_sin
            half = sin.shape[-1] // 2
            cos_sin = (cos[:, None], torch.cat([-sin[..., :half], sin[..., half:]], -1)[:, None])
        states = [h]
        for layer in layers:
            if lean:
                h = _gemma_layer(layer, h, mask, *cos_sin)
            else:
                h = layer(h, attention_mask=mask, position_ids=positions, position_embeddings=cos_sin)
            states.append(h)
        states[-1] = h = lm.norm(h)  # as transformers: the last hidden state is the normed one
        return h, tuple(states) if hidden_states else None


def _plain_gemma(lm) -> bool:
    """transformers' Gemma (1) with plain linear projections (no LoRA), default RoPE and tanh-GELU: what
    `_gemma_layer` computes."""
    from torch import nn

    c = lm.config
    if type(lm).__name__ != "GemmaModel" or getattr(c, "attention_bias", False) or c.hidden_act != "gelu_pytorch_tanh":
        return False
    if (getattr(c, "rope_parameters", None) or {}).get("rope_type", "default") != "default":
        return False
    layer = lm.layers[0]
    linears = (*(getattr(layer.self_attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")),
               *(getattr(layer.mlp, n) for n in ("gate_proj", "up_proj", "down_proj")))  # fmt: skip
    return all(type(m) is nn.Linear for m in linears)


def _gemma_layer(layer, h: torch.Tensor, mask, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """`GemmaDecoderLayer.forward` (fp32, no cache, sdpa with the additive mask) in fewer operations: the RMS
    norms as ‖x‖, the rotation as one multiply-add, the residual adds inside the output projections."""
    from torch.nn import functional as F

    attn, mlp = layer.self_attn, layer.mlp
    b, n, d = h.shape
    hd = attn.head_dim

    def norm(x, module):  # GemmaRMSNorm: x · rsqrt(mean(x²) + ε) · (1 + w)
        r = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        return x * torch.addcmul(x.new_tensor(module.eps), r, r, value=1.0 / d).rsqrt_() * (1.0 + module.weight)

    def rope(x):  # (B, heads, N, hd)
        return torch.addcmul(x * cos, x.roll(hd // 2, -1), sin)

    x = norm(h, layer.input_layernorm)
    q = rope(F.linear(x, attn.q_proj.weight).view(b, n, -1, hd).transpose(1, 2))
    k = rope(F.linear(x, attn.k_proj.weight).view(b, n, -1, hd).transpose(1, 2))
    v = F.linear(x, attn.v_proj.weight).view(b, n, -1, hd).transpose(1, 2)
    if attn.num_key_value_groups > 1:  # transformers' repeat_kv
        k, v = (t[:, :, None].expand(-1, -1, attn.num_key_value_groups, -1, -1).flatten(1, 2) for t in (k, v))
    y = _attention(q, k, v, mask, attn.scaling).transpose(1, 2).reshape(b * n, -1)
    h = torch.addmm(h.reshape(b * n, d), y, attn.o_proj.weight.t())
    x = norm(h, layer.post_attention_layernorm)
    x = F.gelu(F.linear(x, mlp.gate_proj.weight), approximate="tanh") * F.linear(x, mlp.up_proj.weight)
    return torch.addmm(h, x, mlp.down_proj.weight.t()).view(b, n, d)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask, scale: float) -> torch.Tensor:
    """softmax(q kᵀ · scale + mask) v for (B, heads, N, hd), as three batched products: at a few hundred
    tokens on a CPU, faster than the flash kernel `scaled_dot_product_attention` picks there."""
    b, heads, n, hd = q.shape
    m = k.shape[2]
    kt = k.reshape(b * heads, m, hd).transpose(1, 2)
    if mask is None:
        scores = torch.bmm(q.reshape(b * heads, n, hd), kt).mul_(scale)
    else:
        bias = mask.expand(b, heads, n, m).reshape(b * heads, n, m)
        scores = torch.baddbmm(bias, q.reshape(b * heads, n, hd), kt, alpha=scale)
    return torch.bmm(scores.softmax(-1), v.reshape(b * heads, m, hd)).view(b, heads, n, hd)


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
