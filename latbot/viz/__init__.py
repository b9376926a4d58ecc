"""Visualisation: rerun recordings of episodes and model predictions."""
