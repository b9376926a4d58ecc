"""The data path: unified action/state spaces, the Zarr episode store, source-format adapters, clips.

Nothing here is imported by `import latbot`; modules import numpy / zarr / av where they are used.
"""
