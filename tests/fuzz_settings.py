"""Hypothesis settings shared by tests/test_fuzz_*.py: a few examples by default (seconds), thousands
under the `slow` marker (`pytest -m slow tests/test_fuzz_*.py`)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,
    "database": None,
    "derandomize": False,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
}


def fast(n: int = 25):
    return settings(max_examples=n, **_COMMON)


def slow(n: int = 2000):
    return settings(max_examples=n, **_COMMON)
