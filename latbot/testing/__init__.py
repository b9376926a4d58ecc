"""Helpers for testing LatBot and its plugins: writers of small datasets in each source format's real
schema (`latbot.testing.samples`). Nothing here is imported by the library itself."""
