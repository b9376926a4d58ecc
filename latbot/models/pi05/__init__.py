"""pi0.5 in LatBot: the `pi05` student, the `pi05` action expert and the loading of real pi0.5 weights.

Two plugins, registered as entry points of the package (pyproject.toml):

- `student.py` — `Pi05Student`, registry kind `students`, name `pi05`: pi0.5's VLM (PaliGemma: SigLIP
  So400m/14 + Gemma-2B) run with pi0.5's own prefix-LM block mask, plus LatBot's latent query tokens
  (Ẑ, paper §3.3) and the subtask text (L_r). Its `prefix_cache` is what the expert reads.
- `expert.py` — `Pi05ActionExpert`, registry kind `action_experts`, name `pi05`: pi0.5's action expert,
  one Gemma-300M-shaped layer per VLM layer sharing attention with it, adaRMS conditioned on the flow
  time, flow matching as openpi (10 Euler steps over the action tokens, the prefix KV cache computed once).

Both build on latbot/models/gemma.py (Gemma layers, RoPE, the block mask, `PrefixCache`), which stays
outside this package because the `flow` expert uses it too.

Weights: `pretrained: <dir>` in the student's or the expert's Config names a LeRobot `pi05` checkpoint
directory (config.json + safetensors; openpi's own PyTorch checkpoints also load, `openpi_keys.py`).
Sizes: the student's presets (`pi05`, `tiny`, `mini`), `custom` (every size in `dims`: `Pi05Dims`) or
`checkpoint` (every size read from `pretrained`); the expert's size fields, or its `preset: checkpoint`.
`architecture()` reads no file and cannot build a `checkpoint` part: the stages (distill, finetune) call
`checkpoint.resolve(student=…, expert=…)` in `prepare` (config.json and safetensors headers only: the
sizes, written into the recipe as `custom`, every tensor's shape checked) and `checkpoint.apply(…)`
right after building the model. `checkpoint.py` reads the safetensors (nothing is unpickled) and maps
every tensor through the one table of `keys.py` (pure, no I/O); unknown keys, missing parameters and
shape mismatches are one one-line `PretrainedError`. `checkpoint.load_vla(dir)` builds a whole pi0.5
policy from a directory, which `Pi05Student.prefix_cache_from_tokens` (token ids, per-camera masks) and
`Pi05ActionExpert.denoise` run as openpi / LeRobot do. `checkpoint.py` is, with
latbot/models/loading.py, one of the two sanctioned file accesses under latbot/models/
(docs/architecture.md, tests/test_architecture.py).

Docs: docs/distillation.md ("pi0.5: student, expert and weights"), docs/choices.md ("pi0.5: the student, the
expert and the baseline");
tests: tests/test_pi05.py (block mask, checkpoint loading, the LeRobot cross-check),
tests/test_pi05_train.py (distill → finetune → baseline from a checkpoint), tests/test_pi05_import.py
(checkpoints of sizes no preset has, sized by their config; token ids and camera masks).

This `__init__` imports nothing: `import latbot.models.pi05.keys` loads no model library.
"""
