"""Simulators (registry kind `simulators`): demonstrations into episode stores, and closed-loop evaluation."""
