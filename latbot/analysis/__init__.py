"""Analyses of trained models: attention grounding (spatial entropy)."""
