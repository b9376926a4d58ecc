"""Models: LAM encoders (`encoders/`), unified decoders (`decoders/`), the latent action model (`lam.py`).

Model code is single-device and I/O-free: parallelism, checkpoints and logging are applied from outside.
"""
