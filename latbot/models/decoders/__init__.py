"""Unified decoders (registry kind `decoders`): latents → future frame + action sequence, by flow matching."""
