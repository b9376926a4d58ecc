"""Unified decoders (registry kind `decoders`): latents → future frame + action sequence, by flow matching.

The contract every decoder meets, built-in or plugin: `latbot.models.decoders.base.Decoder`."""
