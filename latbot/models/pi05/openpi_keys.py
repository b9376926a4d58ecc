"""openpi's own PyTorch pi0.5 checkpoints → the tensor set of a LeRobot `pi05` checkpoint: pure, no I/O.

openpi writes `PI0Pytorch` with `safetensors.torch.save_model(model, "model.safetensors")`
(scripts/train_pytorch.py `save_checkpoint`, examples/convert_jax_model_to_pytorch.py; the conversion also
writes a small reference config.json: action_dim, action_horizon, the two variants, precision). Checked
against a checkpoint written by openpi's code (tests/fixtures/openpi_tiny, made by
tools/openpi_crosscheck/make_fixture.py), its layout differs from LeRobot's `PI05Policy.save_pretrained` in
two ways only; names and shapes are otherwise the same tensor for tensor:

- no leading `model.` — `keys.canonical` already reads both forms;
- PaliGemma's input embedding is absent. openpi's `PaliGemmaForConditionalGeneration` ties `lm_head.weight`
  to `model.language_model.embed_tokens.weight` (`_tied_weights_keys`), and `save_model` stores a shared
  tensor once, under the first of its names in sorted order: `paligemma.lm_head.weight` (the file's
  metadata records `{"…embed_tokens.weight": "…lm_head.weight"}`). LeRobot does the same repair when it
  loads such a file (`PI05Policy._fix_pytorch_state_dict_keys` copies `lm_head` into `embed_tokens`).

The expert's `lm_head` (its `embed_tokens` is set to None, so nothing is tied) is in both layouts and
dropped by keys.DROPPED.
"""

from __future__ import annotations

from typing import Any

EMBED = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
LM_HEAD = "paligemma_with_expert.paligemma.lm_head.weight"  # the name openpi's file keeps for the tied pair


def to_lerobot_keys(tensors: dict[str, Any]) -> dict[str, Any]:
    """{key: tensor} of a pi0.5 checkpoint → the same with the tied input embedding restored where the file
    stores it only as the LM head (openpi); LeRobot files (which hold both) come back unchanged. Keys keep
    the file's prefix (`model.` or none), which keys.canonical strips."""
    out = dict(tensors)
    if not any(prefix + EMBED in out for prefix in ("", "model.")):
        prefix = next((p for p in ("", "model.") if p + LM_HEAD in out), None)
        if prefix is not None:
            out[prefix + EMBED] = out[prefix + LM_HEAD]
    return out
