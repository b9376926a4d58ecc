"""Distillation students (registry kind `students`): VLMs that see the current frame(s) and the
instruction and answer with 64 scene + 64 motion latent tokens, Ẑ, trained to match the LAM's Z."""
