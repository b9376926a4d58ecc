"""What InternVL and PaliGemma encoders share: building the token sequence (template, frames, latent
placeholders), preparing images, injecting the learnable latent embeddings, and reading Z_sce / Z_mot.

Sequence layout per sample (right-padded to the batch maximum)::

    [prefix tokens] [frame 1 image tokens] ... [frame T image tokens] [question] [answer text]
    [CP_SCE] × Ns  [text]  [CP_MOT] × Nm  [text]

The model's own image-token placeholders receive the projected vision features; the CP positions receive
`scene_queries` (Ns, D) / `motion_queries` (Nm, D); everything runs through the language model once and
Z = its last hidden state at the CP positions. Subclasses say how a frame is written (`frame_tokens`),
how images are normalised, and how the transformers model is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from latbot.config import PluginConfig
from latbot.models.template import ANSWER_END, ANSWER_MOTION, ANSWER_SCENE, ANSWER_SINGLE, QUESTION

SCENE_SLOT, MOTION_SLOT, IMAGE_SLOT = -1, -2, -3  # sentinels in id lists before embedding
MEMO_SIZE = 256  # instructions (and batches of sequences) whose tokens and masks an encoder keeps


class VLMEncoderConfig(PluginConfig):
    """Fields every VLM encoder shares; each encoder adds its `type` and its `preset` names."""

    pretrained: str | None = Field(None, description="Hub id or local directory (from_pretrained); None: preset.")
    num_frames: int = Field(16, ge=1, description="T, frames per clip (paper: 16).")
    num_scene_tokens: int = Field(64, ge=1, description="Positions of [CP_SCE] (paper: 64).")
    num_motion_tokens: int = Field(64, ge=1, description="Positions of [CP_MOT] (paper: 64).")
    latent_groups: Literal[1, 2] = Field(
        2,
        description="2: [CP_SCE] and [CP_MOT] groups, each after its own description (the paper); 1: one group of "
        "Ns + Nm latent action tokens after one description (Table 5 without decoupling).",
    )
    freeze_vision: bool = True
    lora_rank: int = Field(0, ge=0, description="LoRA rank on the language model's attention (0: off).")
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"


class VLMLatentEncoder(nn.Module):
    """Base of the VLM encoders. Subclasses set `self.vlm` (a transformers *Model with vision_tower,
    multi_modal_projector, language_model), `self.tokenizer`, `self.tokens_per_frame`, `self.image_mean/std`."""

    question_template: str = QUESTION  # the question asked about the frames (`{sent}` = the instruction)
    # The backbone's own attention over its prompt: False = causal everywhere (Qwen3 / InternVL); True =
    # prefix-LM, bidirectional over the prompt (images + question) and causal after it (PaliGemma, pi0.5).
    prefix_lm: bool = False
    config: Any
    vlm: nn.Module
    tokenizer: Any
    tokens_per_frame: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]

    @classmethod
    def tiny_config(cls):
        """A CPU-sized configuration of the same architecture, for contract tests."""
        return cls.Config(preset="tiny", num_frames=2, num_scene_tokens=4, num_motion_tokens=4)

    def _build(self, config, model_cls: type, model_type: str, presets: Callable[[str], tuple]) -> None:
        """Load or build the VLM, then add the learnable latent queries, freezing and LoRA."""
        from latbot.models.loading import load_pretrained, lora

        self.config = config
        self.vlm, self.tokenizer = load_pretrained(
            config.pretrained, model_cls, model_type, lambda: presets(config.preset), config.attn_implementation
        )
        self.tokens_per_frame = self._tokens_per_frame()
        self._init_latents()
        if config.lora_rank:
            lora(self.vlm.language_model, config.lora_rank)

    def _tokens_per_frame(self) -> int:
        raise NotImplementedError

    def _init_latents(self) -> None:
        d = self.width
        cfg = self.config
        self.scene_queries = nn.Parameter(torch.randn(cfg.num_scene_tokens, d) * 0.02)
        self.motion_queries = nn.Parameter(torch.randn(cfg.num_motion_tokens, d) * 0.02)
        if cfg.freeze_vision:
            for p in self.vlm.vision_tower.parameters():
                p.requires_grad_(False)

    @property
    def width(self) -> int:
        return self.vlm.config.text_config.hidden_size

    # -- the repeated blocks (units of FSDP sharding and activation checkpointing) ----------------------
    def vision_blocks(self) -> list[nn.Module]:
        """The vision tower's transformer layers (where transformers keeps them differs per model)."""
        raise NotImplementedError

    def repeated_blocks(self) -> list[nn.Module]:
        """Every transformer layer: the vision tower's, then the language model's."""
        return [*self.vision_blocks(), *self.vlm.language_model.layers]

    # -- sequence ---------------------------------------------------------------------------------------
    def _text(self, text: str) -> list[int]:
        """Token ids of `text` (no special tokens), tokenised once per tokenizer: a policy asks with the same
        instruction at every step."""
        cache = self.__dict__.setdefault("_text_ids", {})  # a plain attribute, not module state
        key = (id(self.tokenizer), text)
        ids = cache.get(key)
        if ids is None:
            if len(cache) >= MEMO_SIZE:
                cache.clear()
            ids = cache[key] = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(ids)

    def frame_tokens(self, index: int) -> list[int]:
        """Token ids of one frame, with IMAGE_SLOT where the vision features go."""
        raise NotImplementedError

    def prefix_tokens(self) -> list[int]:
        return []

    def answer_start_tokens(self) -> list[int]:
        """What the backbone's own prompt format puts between the prompt and the answer (a chat turn, a
        separator); the base has none."""
        return []

    def prompt_tokens(self, instruction: str, num_frames: int) -> list[int]:
        """The prompt: the backbone's prefix, the frames and the question (with `prefix_lm`, this part is
        attended bidirectionally)."""
        ids = self.prefix_tokens()
        for t in range(num_frames):
            ids += self.frame_tokens(t)
        return ids + self._text(self.question_template.format(sent=instruction))

    def sequence(self, instruction: str, num_frames: int) -> list[int]:
        """The prompt, then the answer that holds the latent placeholders (supp. 6.2's template)."""
        ids = self.prompt_tokens(instruction, num_frames) + self.answer_start_tokens()
        c = self.config
        if getattr(c, "latent_groups", 2) == 1:  # one group: Ns + Nm contiguous positions, one description
            ids += self._text(ANSWER_SINGLE) + [SCENE_SLOT] * c.num_scene_tokens + [MOTION_SLOT] * c.num_motion_tokens
            return ids + self._text(ANSWER_END)
        ids += self._text(ANSWER_SCENE) + [SCENE_SLOT] * c.num_scene_tokens + self._text(ANSWER_MOTION)
        ids += [MOTION_SLOT] * c.num_motion_tokens + self._text(ANSWER_END)
        return ids

    # -- images ---------------------------------------------------------------------------------------
    def prepare_images(self, frames: torch.Tensor) -> torch.Tensor:
        """(..., 3, H, W) uint8 or float in [0, 1] → (..., 3, S, S) normalised as the real processor does
        (bicubic resize to the vision tower's size, then (x − mean) / std)."""
        x = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
        lead = x.shape[:-3]
        x = x.reshape(-1, *x.shape[-3:])
        size = self.image_size
        if x.shape[-2:] != (size, size):
            x = nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
            x = x.clamp(0, 1)
        mean = torch.tensor(self.image_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).reshape(*lead, 3, size, size)

    @property
    def image_size(self) -> int:
        size = self.vlm.config.vision_config.image_size
        return size[0] if isinstance(size, (list, tuple)) else size

    # -- forward --------------------------------------------------------------------------------------
    def grounding_sequence(self, instruction: str) -> list[int]:
        """One frame and the question, no answer: the last token is the query of the grounding analysis."""
        return self.prompt_tokens(instruction, 1)

    def embed(self, frames: torch.Tensor, instructions: list[str], seqs: list[list[int]] | None = None) -> dict:
        """Inputs of the language model: embeddings (B, N, D), attention mask (B, N), slot masks."""
        b, t = frames.shape[:2]
        if len(instructions) != b:
            raise ValueError(f"got {len(instructions)} instructions for a batch of {b}")
        seqs = seqs or [self.sequence(text, t) for text in instructions]
        table = self.vlm.get_input_embeddings()
        layout = self._layout(seqs, instructions, t, table.weight.dtype)
        image_mask, scene, motion, n_image = layout["image_mask"], layout["scene"], layout["motion"], layout["n_image"]
        device = self.scene_queries.device
        ids, mask = layout["ids"].to(device), layout["mask"].to(device)
        embeds = table(ids)  # (B, N, D)
        pixels = self.prepare_images(frames.flatten(0, 1)).to(embeds.dtype)  # (B·T, 3, S, S)
        feats = self.image_features(pixels)
        if n_image != feats.shape[0] * feats.shape[1]:
            raise ValueError(f"{n_image} image positions for {tuple(feats.shape[:2])} image features")
        feats = feats.reshape(-1, feats.shape[-1]).to(embeds.dtype)
        embeds = embeds.masked_scatter(image_mask[..., None].to(device), feats)
        if layout["any_scene"]:
            queries = self.scene_queries.expand(b, -1, -1).to(embeds.dtype)
            embeds = embeds.masked_scatter(scene[..., None].to(device), queries)
        if layout["any_motion"]:
            queries = self.motion_queries.expand(b, -1, -1).to(embeds.dtype)
            embeds = embeds.masked_scatter(motion[..., None].to(device), queries)
        attention, padded = mask, layout["padded"]
        if self.prefix_lm:
            attention = layout["prefix_lm"].to(device=device, dtype=embeds.dtype)  # built on the CPU
            padded = True  # the 4-D mask always carries information
        return {
            "inputs_embeds": embeds,
            "valid": mask,  # (B, N) 1 = a real token, 0 = padding
            "attention_mask": attention,  # the language model's: `valid`, or with `prefix_lm` (B, 1, N, N) additive
            "padded": padded,  # False: every row is full length, the mask holds no information
            "scene_mask": scene.to(device),
            "motion_mask": motion.to(device),
            "image_mask": image_mask.to(device),
            "scene_index": layout["scene_index"].to(device),  # (B, Ns) positions, in order
            "motion_index": layout["motion_index"].to(device),  # (B, Nm)
        }

    def _layout(self, seqs: list[list[int]], instructions: list[str], num_frames: int, dtype: torch.dtype) -> dict:
        """The CPU side of `embed` for a batch of token sequences: ids, padding and slot masks, positions and
        (prefix-LM) the additive attention mask, built once per batch of sequences and reused (read only)
        when the same instructions come again, as they do at every step of a policy."""
        cache = self.__dict__.setdefault("_layouts", {})
        key = (id(self.tokenizer), tuple(map(tuple, seqs)), tuple(instructions), num_frames, dtype)
        layout = cache.get(key)
        if layout is None:
            with torch.inference_mode(False):  # kept for later calls, which may record gradients
                layout = self._build_layout(seqs, instructions, num_frames, dtype)
            if len(cache) >= MEMO_SIZE:
                cache.clear()
            cache[key] = layout
        return layout

    def _build_layout(self, seqs: list[list[int]], instructions: list[str], num_frames: int, dtype) -> dict:
        b, n = len(seqs), max(map(len, seqs))
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((b, n), pad, dtype=torch.long)
        slots = torch.zeros((b, n), dtype=torch.long)
        mask = torch.zeros((b, n), dtype=torch.long)
        for i, s in enumerate(seqs):
            row = torch.tensor(s)
            ids[i, : len(s)] = row.clamp(min=0)
            slots[i, : len(s)] = torch.where(row < 0, row, 0)
            mask[i, : len(s)] = 1
        # every decision about positions is taken here on the CPU copies, never by reading device tensors back:
        # the same code then runs on the meta device (`latbot plan`: real-size shapes without weights)
        image_mask, scene, motion = slots == IMAGE_SLOT, slots == SCENE_SLOT, slots == MOTION_SLOT
        layout = {
            "ids": torch.where(slots < 0, pad, ids),
            "mask": mask,
            "slots": slots,
            "image_mask": image_mask,
            "scene": scene,
            "motion": motion,
            "n_image": int(image_mask.sum()),
            "any_scene": bool(scene.any()),
            "any_motion": bool(motion.any()),
            "padded": not bool(mask.all()),
            "scene_index": scene.nonzero()[:, 1].view(b, -1),
            "motion_index": motion.nonzero()[:, 1].view(b, -1),
            "dtype": dtype,
            "prefix_lm": None,
        }
        if self.prefix_lm:
            prompts = [len(self.prompt_tokens(text, num_frames)) for text in instructions]
            layout["prefix_lm"] = prefix_lm_mask(mask, torch.tensor(prompts), dtype)
        return layout

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised images (B·T, 3, S, S) → the projected vision features (B·T, tokens per frame, D)."""
        return self.vlm.get_image_features(pixel_values=pixels, return_dict=True).pooler_output

    def language_model(self, inputs: dict, hidden_states: bool = False) -> tuple[torch.Tensor, tuple | None]:
        """The language model over `embed`'s inputs → (last hidden state (B, N, D), the L + 1 hidden states
        when `hidden_states`)."""
        out = self.vlm.language_model(
            inputs_embeds=inputs["inputs_embeds"],
            attention_mask=inputs["attention_mask"] if inputs["padded"] else None,
            output_hidden_states=hidden_states,
            use_cache=False,  # a KV cache is for generation; with activation checkpointing it would grow twice
        )
        return out.last_hidden_state, out.hidden_states if hidden_states else None

    def image_attention(self, frames: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        """Grounding analysis (paper supp. 7): frames (B, 3, H, W) → (B, L, heads, n_image_tokens)."""
        return image_attention(self, frames, instructions)

    def latent_states(self, hidden: torch.Tensor, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The hidden states (B, N, D) at the [CP_SCE] and [CP_MOT] positions → Z_sce (B, Ns, D), Z_mot (B, Nm, D)."""
        rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None]
        return hidden[rows, inputs["scene_index"]], hidden[rows, inputs["motion_index"]]

    def forward(self, frames: torch.Tensor, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (B, T, 3, H, W) uint8 or [0, 1]; instructions: B strings → Z_sce (B, Ns, D), Z_mot (B, Nm, D)."""
        inputs = self.embed(frames, instructions)
        hidden = self.vlm.language_model(
            inputs_embeds=inputs["inputs_embeds"],
            attention_mask=inputs["attention_mask"] if inputs["padded"] else None,
            use_cache=False,  # a KV cache is for generation; with activation checkpointing it would grow twice
        ).last_hidden_state
        return self.latent_states(hidden, inputs)


def prefix_lm_mask(valid: torch.Tensor, prompt_lengths: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The additive attention mask (B, 1, N, N) of prefix-LM attention: query q sees key k when k is a real
    token and either k ≤ q (causal) or both lie in the row's prompt (bidirectional prefix). Built on the CPU.

    valid (B, N) 1 for real tokens; prompt_lengths (B,) — 0 gives plain causal attention."""
    n = valid.shape[1]
    pos = torch.arange(n)
    causal = pos[None, :] <= pos[:, None]  # (N, N) [q, k]
    in_prompt = pos[None, :] < prompt_lengths[:, None]  # (B, N)
    both = in_prompt[:, :, None] & in_prompt[:, None, :]  # (B, N, N)
    allowed = (causal[None] | both) & valid.bool()[:, None, :]
    blocked = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return blocked[:, None]  # (B, 1, N, N): 0 where attended, the dtype's minimum elsewhere


def image_attention(encoder: VLMLatentEncoder, frames: torch.Tensor, instructions: list[str]) -> torch.Tensor:
    """Attention of the last text token to the image tokens of one frame, at every layer and head.

    frames (B, 3, H, W) → (B, L, heads, n_image_tokens), with eager attention (SDPA returns no weights)."""
    vlm = encoder.vlm
    previous = vlm.config._attn_implementation
    vlm.set_attn_implementation("eager")
    try:
        seqs = [encoder.grounding_sequence(text) for text in instructions]
        inputs = encoder.embed(frames[:, None], instructions, seqs)
        out = vlm.language_model(
            inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"], output_attentions=True
        )
    finally:
        vlm.set_attn_implementation(previous)
    att = torch.stack(out.attentions, dim=1)  # (B, L, heads, N, N)
    last = inputs["valid"].sum(1) - 1  # the last real token of each (right-padded) row
    rows = att[torch.arange(att.shape[0]), :, :, last]  # (B, L, heads, N)
    mask = inputs["image_mask"]
    n = int(mask[0].sum())
    return torch.stack([rows[i][..., mask[i]] for i in range(len(rows))]).reshape(len(rows), *rows.shape[1:3], n)


def count_parameters(module: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable, "frozen": total - trainable}
