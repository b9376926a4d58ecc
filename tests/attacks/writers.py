"""Attack cases: writers (see tests/attacks/__init__.py for how a case is written and judged)."""

from __future__ import annotations

from tests.attacks import Trial, attack  # noqa: F401
