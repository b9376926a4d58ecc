"""What every student adds to its VLM: the student question, the projection of Ẑ to the teacher's width,
the reasoning target (next-token loss on the subtask text) and the hidden states the action expert reads.

Sequence per sample (the encoder's layout, with the student's question and the current frame(s) only)::

    prompt: [prefix] [image tokens of V_1 (one block per camera)] [student question]
    answer: [answer start] Answer: ... [CP_SCE] × Ns ... [CP_MOT] × Nm .  [Current subtask: <text> <eos>]

The bracketed tail exists only when a subtask is given (distillation); labels sit on the subtask tokens
and <eos> alone. Attention is the backbone's own: prefix-LM for PaliGemma (bidirectional inside the
prompt, causal from the answer on), causal for InternVL. Either way the answer is causal, so Ẑ (earlier
positions) never sees the subtask text, and the prompt never sees the answer (tested as mask matrices).

The student contract (registry kind `students`) is written down here too: `Student` (a `typing.Protocol`:
a plugin need not subclass it; the example plugin's `tiny_cnn` does not), with everything LatBot calls on a
student and the arguments it passes:

    student = cls(config, latent_width=D_teacher or None)        # distillation, finetuning, `latbot plan`
    student.config.num_scene_tokens, .num_motion_tokens          # `latbot plan` (the cached-latents batch)
    student.width, student.num_layers                            # finetuning: the action expert's vlm_width,
                                                                 # vlm_layers
    student.latent_width                                         # distillation: τ = 1/√latent_width, checks
    student(frames, instructions, subtasks=subtasks)             # distillation (→ forward)
    student(frames, instructions, hidden_states=True)            # finetuning: the expert's context
    student.repeated_blocks()                                    # FSDP wrapping, checkpointing
    student.image_attention(frames, instructions)                # optional: `latbot analyze grounding`
    student.prefix_cache(frames, instructions, states)           # only with reads_prefix_cache (`PrefixCacheStudent`)

`latbot plugins check` checks each member and calls it; distillation and the VLA check what `forward`
returns at every call (`check_forward`): a wrong shape or dtype stops the first step with one line that
names the plugin. docs/plugins.md, "Students", states the same contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from latbot.models.template import STUDENT_QUESTION, SUBTASK_PROMPT

if TYPE_CHECKING:
    from latbot.config import PluginConfig
    from latbot.models.encoders.base import OutputCheck

IGNORE = -100

# The one spelling of each member, named by `latbot plugins check` when a plugin lacks it or it cannot take
# the arguments LatBot passes.
SIGNATURES = {
    "__init__": "cls(config, latent_width: int | None = None)",
    "config": "an attribute `config` (its Config: num_scene_tokens, num_motion_tokens)",
    "width": "an int property `width` (D_s, the hidden width the action expert reads)",
    "num_layers": "an int property `num_layers` (L, the action expert's vlm_layers)",
    "latent_width": "an int attribute `latent_width` (the width of Ẑ: the teacher's D, else `width`)",
    "forward": (
        "forward(frames, instructions, subtasks: list[str | None] | None = None, hidden_states: bool = False) -> "
        '{"latents" (B, Ns + Nm, latent_width), "lm_loss" () with subtasks, "layers" (L + 1) × (B, N, D_s) and '
        '"attention_mask" (B, N) with hidden_states}'
    ),
    "repeated_blocks": "repeated_blocks() -> list[nn.Module]",
    "image_attention": "image_attention(frames, instructions) -> (B, layers, heads, image tokens)",
    "reads_prefix_cache": "a class attribute `reads_prefix_cache = True`",
    "attention_shape": "a property `attention_shape` -> (heads, kv_heads, head_dim)",
    "prefix_cache": "prefix_cache(frames, instructions, states=None) -> (cache, valid (B, M))",
}


class Student(Protocol):
    """A student VLM: the current camera image(s) and the instruction → Ẑ (distilled to the teacher's
    latents), a reasoning loss on the subtask text, and the hidden states an action expert reads.

    B batch, C camera images of one step (1 in distillation: V_1; `data.cameras` in finetuning), H × W
    images, Ns + Nm the Config's `num_scene_tokens` + `num_motion_tokens` (required, equal to the teacher's),
    N the tokens of its sequence, L = `num_layers`, D_s = `width`.
    """

    config: PluginConfig

    def __init__(self, config: PluginConfig, latent_width: int | None = None) -> None:
        """`latent_width`: the teacher encoder's width D (distillation; finetuning passes the distilled run's),
        or None for a plain student (no teacher): then `latent_width` = `width`."""

    @property
    def width(self) -> int:
        """D_s, the hidden width of the layers the action expert reads (its `vlm_width`)."""
        ...

    @property
    def num_layers(self) -> int:
        """L, its layers (the action expert's `vlm_layers`; `"layers"` holds L + 1 tensors)."""
        ...

    @property
    def latent_width(self) -> int:
        """The width of Ẑ: the `latent_width` it was built with, else `width`."""
        ...

    def repeated_blocks(self) -> list[nn.Module]:
        """The repeated (transformer) blocks FSDP wraps and activation checkpointing recomputes; [] if none."""
        ...

    def forward(
        self,
        frames: torch.Tensor,
        instructions: list[str],
        subtasks: list[str | None] | None = None,
        hidden_states: bool = False,
    ) -> dict[str, torch.Tensor]:
        """frames (B, C, 3, H, W) uint8 (float in [0, 1] also allowed), instructions B strings → a dict:

        - "latents": Ẑ (B, Ns + Nm, latent_width), floating (always);
        - "lm_loss": scalar () floating, the reasoning loss on `subtasks` (B strings, None where a sample has
          no target) — when `subtasks` is given (distillation: `student(frames, instructions, subtasks=...)`),
          the mean over its target tokens; beside it, optionally, "lm_tokens": () the number of those tokens
          (`loss_reduction: sum` needs it, to sum L_r over tokens as Eq. 4–5 sum L_a);
        - "layers": L + 1 tensors (B, N, D_s) floating (embeddings, then each layer) and "attention_mask"
          (B, N) (bool or 0/1, True = a real token) — with `hidden_states=True` (finetuning:
          `student(frames, instructions, hidden_states=True)`)."""
        ...


class PrefixCacheStudent(Student, Protocol):
    """A student whose action expert shares its attention (the built-in `pi05`): the VLA hands the expert the
    student's KV cache instead of its hidden states when both have `reads_prefix_cache = True`."""

    reads_prefix_cache: bool

    @property
    def attention_shape(self) -> tuple[int, int, int]:
        """(heads, kv_heads, head_dim) of its attention: the expert's `check_vlm` compares its own."""
        ...

    def prefix_cache(self, frames: torch.Tensor, instructions: list[str], states: Any = None) -> tuple[Any, Any]:
        """frames (B, C, 3, H, W), instructions, `states` (B numpy vectors of the valid state dims, for a
        prompt that writes the state as text; else None) → (the prefix's KV cache, valid (B, M))."""
        ...


def check_forward(
    check: OutputCheck,
    out: Any,
    batch: int,
    *,
    num_latents: int | None = None,
    latent_width: int | None = None,
    lm_loss: bool = False,
    num_layers: int | None = None,
    width: int | None = None,
) -> dict[str, Any]:
    """What `Student.forward` returned, checked for what its caller reads: "latents" (B, Ns + Nm,
    latent_width) when `latent_width` is given, "lm_loss" () with `lm_loss`, and with `num_layers`
    "layers" (num_layers + 1 tensors (B, N, width)) and "attention_mask" (B, N). Shapes and dtypes only."""
    keys = (["latents"] if latent_width is not None else []) + (["lm_loss"] if lm_loss else [])
    if num_layers is not None:
        keys += ["layers", "attention_mask"]
    call = "forward(..., hidden_states=True)" if num_layers is not None else "forward"
    out = check.mapping(call, out, keys)
    if latent_width is not None:
        dims = (("B", batch), ("num_scene_tokens + num_motion_tokens", num_latents), ("latent_width", latent_width))
        check.tensor(call, '"latents"', out["latents"], dims)
    if lm_loss:
        check.tensor(call, '"lm_loss"', out["lm_loss"], ())
    if num_layers is not None:
        mask = check.tensor(call, '"attention_mask"', out["attention_mask"], (("B", batch), ("N", None)), False)
        layers = out["layers"]
        if not isinstance(layers, tuple | list) or len(layers) != num_layers + 1:
            got = f"{len(layers)} tensors" if isinstance(layers, tuple | list) else f"a {type(layers).__name__}"
            raise check.error(
                f'{call} returned "layers" as {got}; expected num_layers + 1 = {num_layers + 1} tensors '
                "(the embeddings, then each layer)"
            )
        dims = (("B", batch), ("N", mask.shape[1]), ("width", width))
        for i, h in enumerate(layers):
            check.tensor(call, f'"layers"[{i}]', h, dims)
    return out


class VLMStudent:
    """Mixin placed before a `VLMLatentEncoder` subclass (see students/paligemma.py)."""

    question_template = STUDENT_QUESTION

    def _student_init(self, latent_width: int | None) -> None:
        """Ẑ goes through a learned projection to the teacher's width — also when the widths agree (at real
        size Gemma-2B and Qwen3-1.7B are both 2048 wide, and an identity would ask Gemma's hidden states to
        match Qwen3's channel for channel); `latent_projection: false` disables it where the widths agree.
        No teacher (a baseline finetuned without distillation): no projection."""
        d = self.width
        use = latent_width is not None and (getattr(self.config, "latent_projection", True) or latent_width != d)
        self.latent_proj = nn.Linear(d, latent_width) if use else nn.Identity()
        self.latent_width = latent_width or d

    @property
    def num_layers(self) -> int:
        return self.vlm.config.text_config.num_hidden_layers

    def subtask_tokens(self, subtask: str) -> tuple[list[int], list[int]]:
        """(ids, labels) of the reasoning tail; labels only on the subtask words and <eos>."""
        prompt = self._text(SUBTASK_PROMPT)
        words = [*self._text(subtask.strip()), self.tokenizer.eos_token_id]
        return prompt + words, [IGNORE] * len(prompt) + words

    def forward(
        self,
        frames: torch.Tensor,
        instructions: list[str],
        subtasks: list[str] | None = None,
        hidden_states: bool = False,
    ) -> dict[str, torch.Tensor]:
        """frames (B, C, 3, H, W): the C camera images of the current step (distillation: C = 1, V_1).

        Returns "latents" Ẑ = [Z_sce; Z_mot] projected (B, Ns + Nm, D_teacher), "lm_loss" when `subtasks`
        are given, and with `hidden_states` the language model's per-layer hidden states ("layers", a tuple
        of L + 1 tensors (B, N, D)) and "attention_mask" (B, N) for the action expert."""
        c = frames.shape[1]
        seqs, labels = [], []
        for i, text in enumerate(instructions):
            ids = self.sequence(text, c)
            lab = [IGNORE] * len(ids)
            if subtasks is not None and subtasks[i] is not None:  # None: no reasoning target for this sample
                tail, tail_labels = self.subtask_tokens(subtasks[i])
                ids, lab = ids + tail, lab + tail_labels
            seqs.append(ids)
            labels.append(lab)
        inputs = self.embed(frames, instructions, seqs)
        hidden, layers = self.language_model(inputs, hidden_states)  # no KV cache (VLMLatentEncoder.language_model)
        z = torch.cat(self.latent_states(hidden, inputs), 1)  # (B, Ns + Nm, D)
        result = {"latents": self.latent_proj(z)}
        if subtasks is not None:
            result["lm_loss"] = self._lm_loss(hidden, labels)
            result["lm_tokens"] = torch.tensor(sum(t != IGNORE for lab in labels for t in lab[1:]))
        if hidden_states:
            result["layers"] = layers
            result["attention_mask"] = inputs["valid"]  # (B, N) padding mask of the context, for the expert
        return result

    def _lm_loss(self, hidden: torch.Tensor, labels: list[list[int]]) -> torch.Tensor:
        """Next-token cross-entropy at the labelled positions only: position p predicts token p + 1.
        The output projection is the input embedding matrix (tied, as in Gemma and Qwen3)."""
        n = hidden.shape[1]
        target = torch.full((len(labels), n), IGNORE, dtype=torch.long)
        for i, lab in enumerate(labels):
            target[i, : len(lab)] = torch.tensor(lab)
        # positions chosen on the CPU (no read-back from the device; runs on the meta device too)
        rows, cols = (target[:, 1:] != IGNORE).nonzero(as_tuple=True)  # the hidden state before each label
        if len(rows) == 0:  # no sample of the batch has a reasoning target
            return hidden.sum() * 0.0
        h = hidden[rows.to(hidden.device), cols.to(hidden.device)]  # (M, D)
        labelled = target[rows, cols + 1].to(hidden.device)  # (M,)
        weight = self.vlm.get_input_embeddings().weight
        logits = h.float() @ weight.float().T
        scale = getattr(self.vlm.config.text_config, "final_logit_softcapping", None)
        if scale:
            logits = torch.tanh(logits / scale) * scale
        return nn.functional.cross_entropy(logits, labelled)
