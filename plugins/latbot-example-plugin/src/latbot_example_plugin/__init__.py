"""An example third-party LatBot plugin package (see docs/plugins.md in the LatBot repository)."""
