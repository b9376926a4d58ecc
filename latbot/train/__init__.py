"""The training engine: one loop for every stage, FSDP2 applied from outside, exact-resume checkpoints."""
