"""The attack suite (tests/attacks): every fast case must end clean (a one-line refusal, exit 2, nothing else
changed) or handled (its named behaviour); the rest run under `-m slow` and with `python -m tests.attacks`."""

from __future__ import annotations

import pytest

from tests.attacks import GOOD, load_all, run_attack

CASES = load_all()


@pytest.mark.parametrize(
    "case",
    [pytest.param(a, marks=() if a.fast else pytest.mark.slow, id=a.id) for a in CASES],
)
def test_attack(case):
    outcome, why = run_attack(case)
    assert outcome in GOOD, f"{case.id} → {outcome}: {why}"
