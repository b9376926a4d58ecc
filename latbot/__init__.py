"""LatBot: distilling universal latent actions into vision-language-action models.

Importing this package is cheap on purpose: it loads no model library, no zarr and no rerun.
Everything heavy is imported where it is used (see STYLE.md, "Imports are lazy at the edges").
"""

__version__ = "0.1.0"
