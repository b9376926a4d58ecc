"""Attack cases: exit_codes — `latbot eval sim` never reports success it did not measure (every episode
crashing, no episode at all), and its `--out` never writes over what is not an evaluation."""

from __future__ import annotations

import numpy as np

from tests.attacks import Trial, attack
from tests.attacks._fixtures import fixtures

SIM = ["--sim", "dot_reach", "--tasks", "reach-red", "--episodes", "2", "--image-size", "16"]


def _eval(*extra: object) -> list[object]:
    return ["eval", "sim", *SIM, "--policy", "random", *extra]


def _broken_simulator() -> None:
    """The example plugin's step() now raises a TypeError in every episode (a plugin with a bug)."""
    import latbot_example_plugin.dot_reach as dot_reach

    dot_reach.STEP = None


class _CrashingPolicy:
    def __init__(self):
        self.cameras: list[str] = []

    def reset(self, task: str, instruction: str) -> None:
        pass

    def predict(self, observation) -> np.ndarray:
        raise RuntimeError("policy server went away")


def _api(episodes: int = 2, **options):
    from latbot import registry
    from latbot.sim.evaluate import evaluate

    config = registry.get("simulators", "dot_reach").Config()
    return evaluate(config, lambda task: _CrashingPolicy(), ["reach-red"], episodes, progress=False, **options)


@attack("exit_codes", "every episode crashes (a simulator plugin's bug): exit 1 naming the count and the first error")
def _(t: Trial):
    _broken_simulator()
    r = t.cli(*_eval())
    t.expect("overall" not in r.output, "a success table was printed for episodes that all crashed", r)
    t.expect_refused(r, mentions=["2 of 2 episode(s) crashed", "TypeError", "dot_reach", "--allow-crashes"], codes=(1,))


@attack("exit_codes", "every episode crashes (a Python-API policy raises): EpisodesCrashedError, not a report")
def _(t: Trial):
    r = t.call(_api)
    t.expect_refused(r, mentions=["2 of 2 episode(s) crashed", "policy server went away"], codes=(1,))


@attack("exit_codes", "every episode crashes with --allow-crashes: exit 0, each crash counted as a failure")
def _(t: Trial):
    _broken_simulator()
    r = t.cli(*_eval("--allow-crashes"))
    ok = r.exit_code == 0 and "0/2   = 0.00" in r.output and "(2 crashed, counted as failures)" in r.output
    t.expect(ok and r.output.count("crashed: seed") == 2, "crashes not reported as failures with exit 0", r)
    t.handled()


@attack("exit_codes", "no episode at all (episodes=0 through the Python API): an error, not a 0/0 report")
def _(t: Trial):
    r = t.call(lambda: _api(episodes=0))
    t.expect_refused(r, mentions=["at least 1"])


@attack("exit_codes", "every episode crashes with --out NEW: exit 1 and nothing left behind")
def _(t: Trial):
    _broken_simulator()
    r = t.cli(*_eval("--out", t.work / "evals"))
    t.expect(not (t.work / "evals").exists(), "the refused evaluation left its --out folder behind", r)
    t.expect_refused(r, mentions=["crashed"], codes=(1,))


@attack("exit_codes", "--out onto an episode store: refused, the store unchanged")
def _(t: Trial):
    store, _ = fixtures(t.work)
    r = t.cli(*_eval("--out", store))
    t.expect_refused(r, mentions=[str(store), "episode_store", "nothing was changed"])


@attack("exit_codes", "--out onto a training run: refused, the run unchanged")
def _(t: Trial):
    _, run = fixtures(t.work)
    r = t.cli(*_eval("--out", run))
    t.expect_refused(r, mentions=[str(run), "'lam' artifact"])


@attack("exit_codes", "--out onto a folder of someone's files: refused, the files unchanged")
def _(t: Trial):
    mine = t.work / "results"
    mine.mkdir()
    (mine / "thesis.tex").write_text("\\section{Results}\n")
    r = t.cli(*_eval("--out", mine))
    t.expect_refused(r, mentions=["thesis.tex", "did not write"])


@attack("exit_codes", "--out onto an existing file (the old `--out report.json`): refused, the file unchanged")
def _(t: Trial):
    old = t.work / "report.json"
    old.write_text('{"overall": {"success_rate": 0.9}}\n')
    r = t.cli(*_eval("--out", old))
    t.expect_refused(r, mentions=["not a directory"])


@attack("exit_codes", "--out onto an evaluation another process is writing: refused with its pid")
def _(t: Trial):
    import os

    from latbot.ownership import writer_lock

    first = t.work / "evals"
    with writer_lock(first, "evaluation"):
        r = t.cli(*_eval("--out", first), owns=[first / ".latbot.lock"])
    t.expect_refused(r, mentions=[str(os.getpid()), "another LatBot process"])
