"""LIBERO through the same harness: one short episode of one task per suite, from the official initial
state, stepped by a policy, the success flag read (the `libero` extra provides the simulator)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from latbot import registry
from latbot.errors import MissingExtraError
from latbot.sim.base import SimulatorError
from latbot.sim.evaluate import RandomPolicy, evaluate

SUITES = ["libero_spatial", "libero_object", "libero_goal", "libero_10"]


def config(**kw):
    return registry.get("simulators", "libero").Config(**kw)


def test_one_short_episode_per_suite_through_the_harness():
    class TwoCameras(RandomPolicy):
        def __init__(self):
            super().__init__(7, seed=0)
            self.cameras = ["agentview", "wrist"]
            self.seen = []

        def predict(self, observation):
            assert observation["images"]["agentview"].shape == (64, 64, 3)
            assert observation["images"]["wrist"].shape == (64, 64, 3)
            assert observation["state"].shape == (8,) and observation["instruction"]
            self.seen.append(observation["images"]["agentview"].mean())
            return super().predict(observation)

    policy = TwoCameras()
    report = evaluate(
        config(max_steps=4, wait_steps=2),
        lambda task: policy,
        [f"{s}/0" for s in SUITES],
        1,
        image_size=64,
        progress=False,
    )
    assert report["overall"]["errors"] == 0, report["episodes"]
    assert [e["task"] for e in report["episodes"]] == [f"{s}/0" for s in SUITES]
    for e in report["episodes"]:
        assert e["steps"] == 4 and e["success"] in (True, False)
    assert min(policy.seen) > 20, "rendered frames must not be black"
    assert (
        report["tasks"][0]["instruction"]
        == "pick up the black bowl between the plate and the ramekin and place it on the plate"
    )


def test_episode_starts_from_the_official_initial_state_and_reads_success():
    sim = registry.build("simulators", config(wait_steps=0))
    try:
        suite = sim._suite("libero_goal")
        init = suite.get_task_init_states(2)
        ep = sim.episode("libero_goal/2", seed=53, cameras=["agentview"], image_size=32)
        assert ep.init_index == 53 % len(init)
        np.testing.assert_allclose(ep.env.get_sim_state(), init[ep.init_index], atol=1e-8)
        solved = ep.step(np.zeros(7))
        assert solved == bool(ep.env.check_success())
        assert ep.max_steps == 300  # the suite's official limit
    finally:
        sim.close()


def test_task_names_and_errors():
    sim = registry.build("simulators", config())
    assert sim.task_names(["libero_object"]) == [f"libero_object/{i}" for i in range(10)]
    name = sim._suite("libero_spatial").get_task_names()[4]
    assert sim.task_names([f"libero_spatial/{name}", "libero_spatial/4"]) == ["libero_spatial/4"]
    with pytest.raises(SimulatorError, match="unknown LIBERO suite 'libero_spacial'"):
        sim.task_names(["libero_spacial/1"])
    with pytest.raises(SimulatorError, match="no scripted experts"):
        sim.scripted_policy("libero_goal/0")


def test_missing_libero_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "libero", None)  # as if the package were not installed
    monkeypatch.delitem(sys.modules, "libero.libero", raising=False)
    from latbot.sim.libero import _import_libero

    with pytest.raises(MissingExtraError, match=r"pip install 'latbot\[libero\]'"):
        _import_libero()
