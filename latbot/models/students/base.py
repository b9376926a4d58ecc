"""What every student adds to its VLM: the student question, the projection of Ẑ to the teacher's width,
the reasoning target (next-token loss on the subtask text) and the hidden states the action expert reads.

Sequence per sample (the encoder's layout, with the student's question and the current frame(s) only)::

    prompt: [prefix] [image tokens of V_1 (one block per camera)] [student question]
    answer: [answer start] Answer: ... [CP_SCE] × Ns ... [CP_MOT] × Nm .  [Current subtask: <text> <eos>]

The bracketed tail exists only when a subtask is given (distillation); labels sit on the subtask tokens
and <eos> alone. Attention is the backbone's own: prefix-LM for PaliGemma (bidirectional inside the
prompt, causal from the answer on), causal for InternVL. Either way the answer is causal, so Ẑ (earlier
positions) never sees the subtask text, and the prompt never sees the answer (tested as mask matrices).
"""

from __future__ import annotations

import torch
from torch import nn

from latbot.models.template import STUDENT_QUESTION, SUBTASK_PROMPT

IGNORE = -100


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
        out = self.vlm.language_model(
            inputs_embeds=inputs["inputs_embeds"],
            attention_mask=inputs["attention_mask"] if inputs["padded"] else None,
            output_hidden_states=hidden_states,
            use_cache=False,  # no KV cache in training (with activation checkpointing it would grow twice)
        )
        hidden = out.last_hidden_state
        z = torch.cat(self.latent_states(hidden, inputs), 1)  # (B, Ns + Nm, D)
        result = {"latents": self.latent_proj(z)}
        if subtasks is not None:
            result["lm_loss"] = self._lm_loss(hidden, labels)
        if hidden_states:
            result["layers"] = out.hidden_states
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
