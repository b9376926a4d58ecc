"""Interop with other robot-learning toolkits (layer "apps": reads runs through `latbot.runs`).

- `lerobot_policy` — `latbot export RUN --format lerobot`: a finetuned LatBot pi0.5 policy written as a
  LeRobot 0.6 `pi05` checkpoint (config.json, model.safetensors, the policy pre/post-processors with the
  run's normalisation), checked against LeRobot's own code by tools/lerobot_export_check/.

docs/interop.md describes what is carried and what is refused. This `__init__` imports nothing.
"""
