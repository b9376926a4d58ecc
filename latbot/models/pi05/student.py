"""`pi05` student: pi0.5's VLM (PaliGemma: SigLIP + Gemma-2B) with pi0.5's own prefix attention, plus
LatBot's latent query tokens (paper §3.3; reference §5b–6).

Sequence per sample (right-padded to the batch maximum) and its block-mask flags `ar` (gemma.block_mask:
a token sees every valid token whose cumsum(ar) is not larger than its own)::

    [image tokens, C cameras × P²] [<bos> prompt]   [Q_sce × Ns, Q_mot × Nm]   [Current subtask: <text> <eos>]
     ar 0 …                         0 …               1 0 0 …                   1 1 1 …   (distillation only)

- image + prompt = pi0.5's prefix, bidirectional among itself; it never sees the queries, the subtask or
  (in finetuning) the action tokens, so the pretrained prefix computation is exactly pi0.5's.
- the latent queries are one block: they see the whole prefix and each other, not the subtask text
  (Ẑ must come from V_1 and ℓ only; `tests/test_pi05.py` checks the matrix).
- the subtask text is causal (next-token loss L_r) and sees prefix and queries.
- in finetuning the pi0.5 expert's action tokens see image + prompt + queries (students/base.py keeps the
  query positions in the finetuning template for the same reason: they carry the distilled latents).

The prompt is pi0.5's (openpi tokenizer.py): `Task: <task>, State: <256 bins>;\\nAction: ` when a discrete
state is given, else `<task>\\n`. Ẑ = the last hidden state (after the final norm) at the query positions.
Model code reads no files: `pretrained` (a LeRobot `pi05` checkpoint directory) is applied by
`latbot.models.pi05.checkpoint` when a stage builds the model; `tokenizer` is read by transformers.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from latbot.config import PluginConfig, Section
from latbot.errors import RecipeError
from latbot.models import gemma
from latbot.models.gemma import PrefixCache
from latbot.models.template import SUBTASK_PROMPT

IGNORE = -100
IMAGE, TEXT, SCENE, MOTION, SUBTASK = 1, 2, 3, 4, 5  # slot kinds of a sequence position

# name: (SigLIP hidden, mlp, depth, heads, image size, patch) and Gemma (width, mlp, depth, heads, kv, head_dim, vocab)
PRESETS = {
    "pi05": ((1152, 4304, 27, 16, 224, 14), (2048, 16384, 18, 8, 1, 256, 257152)),
    # the tiny model of tests/fixtures/pi05_tiny (tools/pi05_crosscheck/make_fixture.py); LeRobot's shared
    # attention hard-codes 8 heads
    "tiny": ((16, 32, 2, 2, 32, 8), (32, 64, 2, 8, 1, 8, 448)),
    # CPU quickstart size: the tiny PaliGemma's widths (SigLIP 32, Gemma 64 × 2 layers, 4 heads of 16)
    "mini": ((32, 64, 2, 2, 32, 8), (64, 128, 2, 4, 1, 16, 448)),
}
PALIGEMMA_VOCAB = 257152
VISION_FIELDS = ("vision_width", "vision_mlp_dim", "vision_depth", "vision_heads", "image_size", "patch_size")
TEXT_FIELDS = ("width", "mlp_dim", "depth", "heads", "kv_heads", "head_dim", "vocab")


class Pi05Dims(Section):
    """Every size of pi0.5's VLM (the `pi05` student's `dims`). A null field is not stated: with `preset:
    checkpoint` the stage reads it from `pretrained` when a run starts (latbot/models/pi05/checkpoint.py)."""

    vision_width: int | None = Field(None, ge=1, description="SigLIP hidden size (So400m/14: 1152).")
    vision_mlp_dim: int | None = Field(None, ge=1, description="SigLIP MLP size (So400m/14: 4304).")
    vision_depth: int | None = Field(None, ge=1, description="SigLIP layers (So400m/14: 27).")
    vision_heads: int | None = Field(None, ge=1, description="SigLIP attention heads (So400m/14: 16).")
    image_size: int | None = Field(None, ge=1, description="Input image side (pi0.5: 224).")
    patch_size: int | None = Field(None, ge=1, description="SigLIP patch side (So400m/14: 14).")
    width: int | None = Field(None, ge=1, description="Gemma width (gemma_2b: 2048).")
    mlp_dim: int | None = Field(None, ge=1, description="Gemma MLP size (gemma_2b: 16384).")
    depth: int | None = Field(None, ge=1, description="Gemma layers (gemma_2b: 18).")
    heads: int | None = Field(None, ge=1, description="Gemma query heads (every pi0.5 variant: 8).")
    kv_heads: int | None = Field(None, ge=1, description="Gemma key/value heads (gemma_2b: 1).")
    head_dim: int | None = Field(None, ge=2, description="Gemma head width (gemma_2b: 256).")
    vocab: int | None = Field(None, ge=1, description="Vocabulary (PaliGemma: 257152).")

    @classmethod
    def of(cls, preset: str) -> Pi05Dims:
        vision, text = PRESETS[preset]
        return cls(**dict(zip(VISION_FIELDS, vision, strict=True)), **dict(zip(TEXT_FIELDS, text, strict=True)))

    def stated(self) -> dict[str, int]:
        return {k: v for k, v in self.model_dump().items() if v is not None}

    def missing(self) -> list[str]:
        return [k for k, v in self.model_dump().items() if v is None]


class GemmaStack(nn.Module):
    """Gemma's language model (names as transformers' GemmaModel): embeddings, layers, final norm."""

    def __init__(self, width, mlp, depth, heads, kv_heads, head_dim, vocab):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, width)
        self.layers = nn.ModuleList(gemma.GemmaLayer(width, mlp, heads, kv_heads, head_dim) for _ in range(depth))
        self.norm = gemma.GemmaRMSNorm(width)
        for module in self.modules():  # Gemma's initialisation (transformers: initializer_range 0.02)
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        e = self.embed_tokens(ids)
        return e * torch.tensor(e.shape[-1] ** 0.5, dtype=e.dtype)  # Gemma scales text embeddings by √D


class PaliGemma(nn.Module):
    """SigLIP + linear projector + Gemma, with transformers' PaliGemmaModel parameter names."""

    def __init__(self, dims: Pi05Dims | str):
        super().__init__()
        from transformers import SiglipVisionConfig, SiglipVisionModel

        d = Pi05Dims.of(dims) if isinstance(dims, str) else dims
        vh, vm, vd, vheads, size, patch = (getattr(d, k) for k in VISION_FIELDS)
        text = tuple(getattr(d, k) for k in TEXT_FIELDS)
        vision = SiglipVisionConfig(
            hidden_size=vh,
            intermediate_size=vm,
            num_hidden_layers=vd,
            num_attention_heads=vheads,
            image_size=size,
            patch_size=patch,
            vision_use_head=False,
        )
        # `vision_tower.vision_model.*` as in PaliGemma checkpoints, whichever nesting this transformers has
        tower = SiglipVisionModel(vision)
        self.vision_tower = nn.Module()
        self.vision_tower.vision_model = getattr(tower, "vision_model", tower)
        self.multi_modal_projector = nn.Module()
        self.multi_modal_projector.linear = nn.Linear(vh, text[0])
        self.language_model = GemmaStack(*text)
        self.image_size, self.tokens_per_frame = size, (size // patch) ** 2

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) in [−1, 1] → (N, P², D); no 1/√D here: pi0.5 feeds the projection as it is."""
        return self.multi_modal_projector.linear(self.vision_tower.vision_model(pixel_values=pixels).last_hidden_state)


def pi05_prompt(task: str, state: np.ndarray | None = None) -> str:
    """pi0.5's prompt (openpi tokenizer.py; LeRobot's Pi05PrepareStateTokenizerProcessorStep): the state,
    normalised to [−1, 1], as 256 bins."""
    cleaned = task.strip().replace("_", " ").replace("\n", " ")
    if state is None:
        return cleaned + "\n"
    bins = np.digitize(np.asarray(state, np.float64), bins=np.linspace(-1, 1, 256 + 1)[:-1]) - 1
    return f"Task: {cleaned}, State: {' '.join(map(str, bins))};\nAction: "


class Pi05Student(nn.Module):
    reads_prefix_cache = True  # finetuning pairs it with the pi0.5 expert's shared attention

    class Config(PluginConfig):
        type: Literal["pi05"] = "pi05"
        preset: Literal["pi05", "tiny", "mini", "custom", "checkpoint"] = Field(
            "pi05",
            description="pi05: SigLIP So400m/14 + Gemma-2B (2.92B); tiny / mini: CPU sizes (local tokenizer); custom: "
            "the sizes in `dims`; checkpoint: the sizes of `pretrained` (its config.json, checked against its "
            "tensors), read when a run starts and recorded as custom.",
        )
        dims: Pi05Dims | None = Field(
            None,
            description="custom: every size; checkpoint: sizes the checkpoint does not hold (e.g. vision_heads of a "
            "resized SigLIP), the rest is read from it; a stated size is checked against its tensors.",
        )
        pretrained: str | None = Field(
            None, description="LeRobot `pi05` checkpoint directory (config.json + *.safetensors), e.g. pi05_base."
        )
        tokenizer: str | None = Field(
            "google/paligemma-3b-pt-224", description="PaliGemma tokenizer (hub id or directory); None: local tiny."
        )
        num_frames: int = Field(1, ge=1, description="Camera images per step (distillation: V_1 only).")
        num_scene_tokens: int = Field(64, ge=0, description="Latent query positions for Z_sce (paper: 64; 0: pi0.5).")
        num_motion_tokens: int = Field(64, ge=0, description="Latent query positions for Z_mot (paper: 64; 0: pi0.5).")
        max_text_tokens: int = Field(200, ge=8, description="Prompt length cap (openpi pi05 max_token_len).")
        latent_projection: bool = Field(
            True, description="Learned projection of Ẑ to the teacher's width, also when the widths agree."
        )
        freeze_vision: bool = False
        attn_implementation: Literal["sdpa"] = "sdpa"

        @model_validator(mode="after")
        def _dims_fit_the_preset(self):
            if self.dims is not None and self.preset not in ("custom", "checkpoint"):
                raise ValueError(
                    f"dims is read with preset custom or checkpoint; preset {self.preset} fixes every size"
                )
            if self.preset == "custom" and (self.dims is None or self.dims.missing()):
                missing = Pi05Dims().missing() if self.dims is None else self.dims.missing()
                raise ValueError(f"preset custom needs every size in dims; missing {missing}")
            return self

        def sizes(self) -> Pi05Dims:
            """Every size of the VLM; a `checkpoint` preset has none before the stage has read `pretrained`."""
            if self.preset == "checkpoint":
                raise RecipeError(
                    "students.pi05: preset checkpoint takes its sizes from `pretrained` when a run starts (the stage "
                    "reads them; the architecture reads no file); to build it without the checkpoint (latbot plan, "
                    "recipe show --params) write them out as preset: custom with dims — "
                    "`python -m latbot.models.pi05.checkpoint DIR` prints them"
                )
            return self.dims if self.preset == "custom" else Pi05Dims.of(self.preset)

    def __init__(self, config: Config, latent_width: int | None = None):
        super().__init__()
        self.config = config
        self.vlm = PaliGemma(config.sizes())
        self._tokenizer = None  # read on first use: counting parameters needs no tokenizer
        self.tokens_per_frame = self.vlm.tokens_per_frame
        d = self.width
        self.scene_queries = nn.Parameter(torch.randn(config.num_scene_tokens, d) * 0.02)
        self.motion_queries = nn.Parameter(torch.randn(config.num_motion_tokens, d) * 0.02)
        # as students/base.py: a learned projection to the teacher's width (none without a teacher)
        use = latent_width is not None and (config.latent_projection or latent_width != d)
        self.latent_proj = nn.Linear(d, latent_width) if use else nn.Identity()
        self.latent_width = latent_width or d
        if config.freeze_vision:
            self.vlm.vision_tower.requires_grad_(False)

    @classmethod
    def tiny_config(cls):
        return cls.Config(preset="tiny", tokenizer=None, num_scene_tokens=4, num_motion_tokens=4)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = _tokenizer(self.config)
        return self._tokenizer

    @property
    def width(self) -> int:
        return self.vlm.language_model.embed_tokens.embedding_dim

    @property
    def num_layers(self) -> int:
        return len(self.vlm.language_model.layers)

    @property
    def attention_shape(self) -> tuple[int, int, int]:
        a = self.vlm.language_model.layers[0].self_attn
        return a.heads, a.kv_heads, a.head_dim

    def repeated_blocks(self) -> list[nn.Module]:
        return [*self.vlm.vision_tower.vision_model.encoder.layers, *self.vlm.language_model.layers]

    # -- sequences --------------------------------------------------------------------------------------
    def _text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def sequence(self, instruction: str, cameras: int, state=None, subtask: str | None = None):
        """One sample → (ids, slots, ar, labels) lists (ids 0 where a slot is filled by embeddings); no
        subtask (None): no reasoning tail."""
        prompt = [self.tokenizer.bos_token_id, *self._text(pi05_prompt(instruction, state))]
        prompt = prompt[: self.config.max_text_tokens]
        n_img, ns, nm = cameras * self.tokens_per_frame, self.config.num_scene_tokens, self.config.num_motion_tokens
        ids = [0] * n_img + prompt + [0] * (ns + nm)
        slots = [IMAGE] * n_img + [TEXT] * len(prompt) + [SCENE] * ns + [MOTION] * nm
        ar = [0] * (n_img + len(prompt)) + ([1] + [0] * (ns + nm - 1) if ns + nm else [])
        labels = [IGNORE] * len(ids)
        if subtask is not None:
            head = self._text(SUBTASK_PROMPT)
            words = [*self._text(subtask.strip()), self.tokenizer.eos_token_id]
            ids += head + words
            slots += [SUBTASK] * (len(head) + len(words))
            ar += [1] * (len(head) + len(words))
            labels += [IGNORE] * len(head) + words
        return ids, slots, ar, labels

    def batch(self, frames, instructions, states=None, subtasks=None) -> dict[str, torch.Tensor]:
        """frames (B, C, 3, H, W) → padded ids, slots, ar, labels, valid (B, N), all on the CPU."""
        b, c = frames.shape[:2]
        if len(instructions) != b:
            raise ValueError(f"got {len(instructions)} instructions for a batch of {b}")
        rows = [
            self.sequence(
                instructions[i], c, None if states is None else states[i], None if subtasks is None else subtasks[i]
            )
            for i in range(b)
        ]
        n = max(len(r[0]) for r in rows)
        out = {k: torch.zeros(b, n, dtype=torch.long) for k in ("ids", "slots", "ar")}
        out["labels"] = torch.full((b, n), IGNORE, dtype=torch.long)
        for i, row in enumerate(rows):
            for k, values in zip(("ids", "slots", "ar", "labels"), row, strict=True):
                out[k][i, : len(values)] = torch.tensor(values)
        out["valid"] = out["slots"] > 0
        return out

    def prepare_images(self, frames: torch.Tensor) -> torch.Tensor:
        """(..., 3, H, W) uint8 or [0, 1] → (..., 3, S, S) in [−1, 1] (bicubic resize when H, W ≠ S)."""
        x = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
        lead, size = x.shape[:-3], self.vlm.image_size
        x = x.reshape(-1, *x.shape[-3:])
        if x.shape[-2:] != (size, size):
            x = nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        return (x.clamp(0, 1) * 2 - 1).reshape(*lead, 3, size, size)

    def embed(self, pixels: torch.Tensor, seq: dict) -> torch.Tensor:
        """pixels (B, C, 3, S, S) in [−1, 1], the padded sequence → input embeddings (B, N, D)."""
        device = self.scene_queries.device
        slots = seq["slots"]
        x = self.vlm.language_model.embed(seq["ids"].to(device))
        feats = self.vlm.image_features(pixels.flatten(0, 1).to(device, x.dtype))  # (B·C, P², D)
        x = x.masked_scatter((slots == IMAGE)[..., None].to(device), feats.to(x.dtype))
        for kind, queries in ((SCENE, self.scene_queries), (MOTION, self.motion_queries)):
            x = x.masked_scatter((slots == kind)[..., None].to(device), queries.expand(len(x), -1, -1).to(x.dtype))
        return x

    # -- the language model under the block mask ---------------------------------------------------------
    def run(self, x: torch.Tensor, valid: torch.Tensor, ar: torch.Tensor, hidden_states: bool = False) -> dict:
        """x (B, N, D), valid (B, N) bool, ar (B, N) → {"last": (B, N, D) after the final norm, "cache":
        PrefixCache, "layers": the L + 1 hidden states with `hidden_states`}. Positions = cumsum(valid) − 1."""
        device = x.device
        valid, ar = valid.to(device), ar.to(device)
        mask = gemma.additive(gemma.block_mask(valid, ar))
        positions = valid.long().cumsum(1) - 1
        cos, sin = gemma.rope_tables(positions, self.attention_shape[2], dtype=x.dtype)
        keys, values, layers = [], [], [x]
        for layer in self.vlm.language_model.layers:
            x, k, v = layer(x, mask, cos, sin)
            keys.append(k)
            values.append(v)
            layers.append(x)
        last, _ = self.vlm.language_model.norm(x)
        out = {"last": last, "cache": PrefixCache(keys, values, valid)}
        if hidden_states:
            out["layers"] = (*layers[:-1], last)
        return out

    @torch.no_grad()
    def image_attention(self, frames: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        """Attention of the last prompt token to the image tokens of one frame, at every layer and head
        (grounding analysis, paper supp. 7): frames (B, 3, H, W) → (B, L, heads, P²)."""
        seq = self.batch(frames[:, None], instructions)
        x = self.embed(self.prepare_images(frames[:, None]), seq)
        device = x.device
        valid, ar = seq["valid"].to(device), seq["ar"].to(device)
        mask = gemma.additive(gemma.block_mask(valid, ar))
        positions = valid.long().cumsum(1) - 1
        cos, sin = gemma.rope_tables(positions, self.attention_shape[2], dtype=x.dtype)
        text = seq["slots"] == TEXT  # the query: the last prompt token of each row
        last = (text * torch.arange(text.shape[1])).argmax(1).to(device)  # (B,)
        image = (seq["slots"][0] == IMAGE).to(device)  # same image positions in every row
        rows = torch.arange(len(x), device=device)
        maps = []
        for layer in self.vlm.language_model.layers:
            h, _ = layer.input_layernorm(x)
            q, k, _ = layer.self_attn.qkv(h, cos, sin)
            k = k.repeat_interleave(q.shape[1] // k.shape[1], 1)  # grouped-query heads
            query = q[rows, :, last][:, :, None]  # (B, heads, 1, hd)
            scores = (query @ k.transpose(-1, -2)).squeeze(-2) * q.shape[-1] ** -0.5  # (B, heads, N)
            probs = torch.softmax(scores + mask[rows, :, last], -1)
            maps.append(probs[..., image])
            x, _, _ = layer(x, mask, cos, sin)
        return torch.stack(maps, 1)  # (B, L, heads, P²)

    def forward(self, frames, instructions, subtasks=None, hidden_states=False, states=None):
        """frames (B, C, 3, H, W) → {"latents" (B, Ns + Nm, D_teacher), "lm_loss" with `subtasks`,
        "layers" and "attention_mask" with `hidden_states` (for a hidden-state expert such as `flow`)}."""
        seq = self.batch(frames, instructions, states, subtasks)
        x = self.embed(self.prepare_images(frames), seq)
        out = self.run(x, seq["valid"], seq["ar"], hidden_states)
        last = out["last"]
        b = last.shape[0]
        # query positions found on the CPU copy (no read-back from the device: runs on the meta device too)
        positions = torch.cat([(seq["slots"] == kind).nonzero()[:, 1].view(b, -1) for kind in (SCENE, MOTION)], 1).to(
            last.device
        )  # (B, Ns + Nm)
        z = last[torch.arange(b, device=last.device)[:, None], positions]
        result = {"latents": self.latent_proj(z)}
        if subtasks is not None:
            result["lm_loss"] = self._lm_loss(last, seq["labels"])
            result["lm_tokens"] = (seq["labels"][:, 1:] != IGNORE).sum()
        if hidden_states:
            result["layers"] = out["layers"]
            result["attention_mask"] = seq["valid"].long().to(last.device)
        return result

    def prefix_cache(self, frames, instructions, states=None, image_masks=None) -> tuple[PrefixCache, torch.Tensor]:
        """The prefix (images, prompt, latent queries) run once → (PrefixCache, valid (B, M)): the context
        of the pi0.5 expert, reused by every denoising step. frames (B, C, 3, H, W) uint8 or [0, 1];
        `image_masks` (B, C) bool: False drops that camera's image tokens (pi0.5's missing-camera slots).
        Prompts as token ids: `prefix_cache_from_tokens`."""
        seq = self.batch(frames, instructions, states)
        if image_masks is not None:
            n_img = frames.shape[1] * self.tokens_per_frame
            seq["valid"][:, :n_img] &= _camera_mask(image_masks, frames.shape[1]).repeat_interleave(
                self.tokens_per_frame, 1
            )
        x = self.embed(self.prepare_images(frames), seq)
        cache = self.run(x, seq["valid"], seq["ar"])["cache"]
        return cache, cache.valid

    def prefix_cache_from_tokens(
        self, pixels, tokens: torch.Tensor, token_mask: torch.Tensor, image_masks=None
    ) -> tuple[PrefixCache, torch.Tensor]:
        """pi0.5's prefix from what openpi and LeRobot hold → (PrefixCache, valid (B, M)), as `prefix_cache`.

        pixels: (B, C, 3, S, S) in [−1, 1] at the model's image size, or LeRobot's list of C (B, 3, S, S)
        (no resizing here); tokens (B, L): the prompt's ids as PaliGemma's tokenizer gives them (with <bos>,
        right-padded); token_mask (B, L) bool; image_masks (B, C) bool or LeRobot's list of C (B,) (None:
        every camera present): a masked camera's tokens are invalid, as pi0.5's. The layout is pi0.5's
        ([each camera's image tokens] [prompt], one bidirectional block), then the latent queries as in
        `prefix_cache` (none with num_scene_tokens = num_motion_tokens = 0: exactly pi0.5's prefix)."""
        if isinstance(pixels, list | tuple):
            pixels = torch.stack(list(pixels), 1)
        b, c = pixels.shape[:2]
        if tokens.shape[0] != b or token_mask.shape != tokens.shape:
            raise ValueError(
                f"pixels {tuple(pixels.shape)}, tokens {tuple(tokens.shape)} and token_mask {tuple(token_mask.shape)} "
                "must share the batch (and tokens the mask's shape)"
            )
        device = self.scene_queries.device
        text = self.vlm.language_model.embed(tokens.to(device))
        feats = self.vlm.image_features(pixels.flatten(0, 1).to(device))  # (B·C, P², D)
        feats = feats.reshape(b, -1, feats.shape[-1]).to(text.dtype)  # camera after camera
        nq = self.config.num_scene_tokens + self.config.num_motion_tokens
        queries = torch.cat([self.scene_queries, self.motion_queries]).to(text.dtype).expand(b, -1, -1)
        cams = torch.ones(b, c, dtype=torch.bool) if image_masks is None else _camera_mask(image_masks, c)
        valid = torch.cat(
            [
                cams.to(device).repeat_interleave(feats.shape[1] // c, 1),
                token_mask.bool().to(device),
                torch.ones(b, nq, dtype=torch.bool, device=device),
            ],
            1,
        )
        ar = torch.zeros_like(valid, dtype=torch.long)
        if nq:
            ar[:, -nq] = 1  # the latent queries: their own block after the prefix
        cache = self.run(torch.cat([feats, text, queries], 1), valid, ar)["cache"]
        return cache, cache.valid

    def _lm_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy on the subtask words and <eos>; output projection tied to the embeddings
        (PaliGemma's LM head is the embedding matrix)."""
        rows, cols = (labels[:, 1:] != IGNORE).nonzero(as_tuple=True)
        if len(rows) == 0:  # no sample of the batch has a subtask: no L_r, the graph stays connected
            return hidden.sum() * 0.0
        h = hidden[rows.to(hidden.device), cols.to(hidden.device)]  # (M, D): the state before each label
        target = labels[rows, cols + 1].to(hidden.device)
        logits = h.float() @ self.vlm.language_model.embed_tokens.weight.float().T
        return nn.functional.cross_entropy(logits, target)


def _camera_mask(image_masks, cameras: int) -> torch.Tensor:
    """(B, C) bool from a (B, C) tensor or LeRobot's list of C (B,) masks."""
    m = (
        torch.stack([torch.as_tensor(x) for x in image_masks], 1)
        if isinstance(image_masks, list | tuple)
        else image_masks
    )
    if m.dim() != 2 or m.shape[1] != cameras:
        raise ValueError(f"image_masks must be (B, {cameras}) (one flag per camera), got {tuple(m.shape)}")
    return m.bool().cpu()


def _tokenizer(config):
    if config.tokenizer is None:
        if config.preset == "pi05" or (config.dims is not None and config.dims.vocab == PALIGEMMA_VOCAB):
            raise ValueError(
                "students.pi05: tokenizer is null; only small vocabularies (tiny, mini) use the local tokenizer"
            )
        from latbot.models.tokenizer import build_tiny_tokenizer

        return build_tiny_tokenizer(["task", "state", "action", *map(str, range(256))])
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(config.tokenizer)
