"""`latbot data gen-sim`: scripted-expert demonstrations written straight into an episode store.

Generic over the simulator (latbot/sim/base.py): the simulator supplies tasks, instructions, the expert,
subtask segments, cameras and its robot; the robot's registered embodiment maps the native states and
actions into the unified spaces, and both the native and the unified arrays are stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from latbot.config import PluginConfig
from latbot.sim.base import Demonstration


@dataclass
class GenerateResult:
    store: Path
    added: int = 0
    skipped: int = 0
    failed_attempts: int = 0
    seconds_per_episode: float = 0.0
    per_task: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Perturbation:
    """How the expert's actions are perturbed before they are applied and recorded (`rollout_expert`):
    Gaussian noise σ on every native dimension, and the per-step chance of a gripper hold."""

    action_noise: float = 0.0
    gripper_holds: float = 0.0

    def source(self, sim: str) -> str:
        """What a simulated store records as its source (gripper holds only when there are any, so stores from
        before them read the same)."""
        holds = f", gripper_holds={self.gripper_holds:g}" if self.gripper_holds else ""
        return f"{sim} scripted experts{holds}, action_noise={self.action_noise:g}"

    def recorded(self) -> dict[str, float]:
        """The manifest's record of the perturbation (nothing when there is none)."""
        return {k: v for k, v in vars(self).items() if v}

    @staticmethod
    def read_source(text: str) -> tuple[float | None, float]:
        """(action_noise, gripper_holds) as `source` wrote them into `text`; the noise is None when `text` does
        not record it (a store from before the attribute), the holds 0 when it records none."""
        noise = re.search(r"action_noise=([0-9.eE+-]+)$", text)
        holds = re.search(r"gripper_holds=([0-9.eE+-]+),", text)
        return (float(noise.group(1)) if noise else None), (float(holds.group(1)) if holds else 0.0)


def episode_seed(seed: int, task_index: int, attempt: int) -> int:
    """Deterministic per (run seed, task, attempt); distinct from evaluation seeds (see evaluate)."""
    return seed * 1_000_003 + task_index * 10_007 + attempt


def generate(
    sim_config: PluginConfig,
    tasks: list[str],
    episodes: int,
    out: str | Path,
    *,
    image_size: int = 128,
    cameras: list[str] | None = None,
    seed: int = 0,
    keep_failures: bool = False,
    max_attempts_factor: int = 3,
    codec: str = "zstd",
    progress: bool = True,
    action_noise: float = 0.0,
    gripper_holds: float = 0.0,
) -> GenerateResult:
    """`episodes` successful scripted demonstrations per task (all attempts with `keep_failures`).
    Rerunning with the same arguments resumes: episodes already in the store are skipped. `action_noise` σ > 0
    perturbs every expert action before it is applied, `gripper_holds` > 0 replaces the expert's gripper at
    random (`rollout_expert`); the store records both."""
    import contextlib
    import time

    from tqdm import tqdm

    from latbot import registry
    from latbot.data.convert import claim_store, finalize
    from latbot.data.location import StoreDir
    from latbot.data.store import writing

    sim = registry.build("simulators", sim_config)
    result = GenerateResult(store=Path(out))
    spent, recorded = 0.0, 0
    with contextlib.ExitStack() as stack:
        stack.callback(sim.close)
        names = sim.task_names(tasks)
        cameras = list(cameras or [sim.default_camera])
        out = Path(out)
        claim_store(StoreDir(out), out)  # before anything is touched: new, empty, or a store LatBot wrote
        _check_same_simulator(out, sim_config.type)  # before the lock too (and under it): a refusal changes nothing
        perturb = Perturbation(action_noise, gripper_holds)
        if gripper_holds > 0:
            _gripper(sim)  # a robot without a gripper is refused before anything is written
        _check_same_perturbation(out, perturb)
        stack.enter_context(writing(out))  # the whole command: a second writer is refused before it writes
        store = stack.enter_context(_open_store(sim_config, out, cameras, image_size, codec, perturb))
        bar = tqdm(total=len(names) * episodes, desc=f"gen-sim {sim_config.type}", unit="episode", disable=not progress)
        for ti, task in enumerate(names):
            have = sum(1 for r in store.records if r.task == task)
            result.skipped += min(have, episodes)
            bar.update(min(have, episodes))
            for attempt in range(episodes * max_attempts_factor):
                if have >= episodes:
                    break
                s = episode_seed(seed, ti, attempt)
                key = f"{task}/seed{s}"
                if store.has_key(key):
                    continue
                t0 = time.perf_counter()
                episode = record_episode(sim, task, s, cameras, image_size, key, perturb)
                spent, recorded = spent + time.perf_counter() - t0, recorded + 1
                if not (episode.success or keep_failures):
                    result.failed_attempts += 1
                    continue
                store.append(episode)
                have += 1
                result.added += 1
                bar.update(1)
            result.per_task[task] = have
        bar.close()
        extra = {"simulator": sim_config.model_dump(mode="json"), "tasks": names, "seed": seed}
        finalize(store, extra=extra | perturb.recorded())
    result.seconds_per_episode = spent / recorded if recorded else 0.0
    return result


def _open_store(sim_config: PluginConfig, out: Path, cameras: list[str], image_size: int, codec: str, perturb=None):
    """The store at `out` opened to append (it must hold this simulator's demonstrations), or a new one
    (recording `perturb`, a `Perturbation`; none by default)."""
    from latbot.data.store import EpisodeStore

    perturb = perturb or Perturbation()

    if not (out / "zarr.json").exists():
        return EpisodeStore.create(
            out,
            cameras=cameras,
            image_size=(image_size, image_size),
            codec=codec,
            source_format=sim_config.type,
            source=perturb.source(sim_config.type),
        )
    _check_same_simulator(out, sim_config.type)
    return EpisodeStore.open(out, mode="a")


def _check_same_perturbation(out: Path, perturb: Perturbation) -> None:
    """Resuming a store with another `action_noise` or `gripper_holds` would mix two kinds of demonstration:
    refused. Both are in the store's attributes from its creation (`Perturbation.source`), so an interrupted
    store is checked too; a store written before that records the noise in its manifest only once finished."""
    from latbot.artifacts import ArtifactError, read_manifest
    from latbot.data.store import EpisodeStore, StoreError

    if not (out / "zarr.json").exists():
        return
    with EpisodeStore.open(out, check=False) as existing:
        had, had_holds = Perturbation.read_source(existing.attrs.get("source") or "")
    if had_holds != perturb.gripper_holds:
        raise StoreError(
            f"--out {out}: its demonstrations were recorded with --gripper-holds {had_holds:g}, not "
            f"{perturb.gripper_holds:g}; choose another --out (a store holds one kind of demonstration)"
        )
    if had is None:
        try:
            had = float(read_manifest(out, kind="episode_store").extra.get("action_noise", 0.0))
        except ArtifactError:
            return  # unfinished, from before the attribute: nothing records its noise
    if had != perturb.action_noise:
        raise StoreError(
            f"--out {out}: its demonstrations were recorded with --action-noise {had}, not {perturb.action_noise}; "
            "choose another --out (a store holds one kind of demonstration)"
        )


def _check_same_simulator(out: Path, sim: str) -> None:
    """A store holds one source: refuse a store at `out` that holds episodes of anything but `sim`."""
    from latbot.data.store import EpisodeStore, StoreError

    if not (out / "zarr.json").exists():
        return
    with EpisodeStore.open(out, check=False) as existing:  # read-only: nothing written before the check
        made_by = existing.attrs.get("source_format")
    if made_by != sim:
        raise StoreError(
            f"--out {out}: this store holds '{made_by}' episodes, not '{sim}' demonstrations; a store holds one "
            "source: choose another --out and combine the stores in a mixture"
        )


HOLD_STEPS = (8, 24)  # a gripper hold lasts this many steps (inclusive), drawn uniformly


def _gripper(sim) -> tuple[int, float, float]:
    """(index, open value, closed value) of the simulated robot's native gripper action; a robot without a
    gripper is refused (it has nothing to hold)."""
    from latbot.data import embodiments
    from latbot.sim.base import SimulatorError

    emb = embodiments.get(sim.embodiment)
    if emb.gripper == "none":
        raise SimulatorError(
            f"--gripper-holds: the {sim.config.type} robot ('{sim.embodiment}') has no gripper; drop the option"
        )
    return emb.gripper_index, emb.gripper_open, emb.gripper_closed


def rollout_expert(
    sim, task: str, seed: int, cameras: list[str], image_size: int, perturb: Perturbation = Perturbation()
) -> Demonstration:
    """Run the simulator's scripted expert once from the episode of `seed`: every step's frames, native
    state, applied action and privileged observation, until success + `sim.hold_steps` or the step limit.

    `perturb.action_noise` σ > 0: each expert action gets Gaussian noise N(0, σ²) on every native dimension (drawn
    from `seed`) before it is applied, and the applied action is what is recorded (DART-style). A scripted
    expert's action is a function of the scene, so a latent action model trained on its clean demonstrations
    can predict the actions from V_t and the instruction alone; with noise, part of every action is seen only
    in the motion between the frames.

    `perturb.gripper_holds` p > 0: at every step without a hold running, a hold starts with probability p. For the
    next 8–24 steps (`HOLD_STEPS`) the expert's gripper command is replaced by fully open or fully closed (the
    robot's own values, drawn at random, from their own stream of `seed`), then the expert takes over again.
    A scripted expert's gripper is a function of the task and its phase, so a model trained on its clean
    demonstrations can read the gripper from the instruction and the scene; with holds, it has to read it
    from the fingers. Holds make grasping tasks fail more often: record them with `keep_failures`."""
    action_noise, gripper_holds = perturb.action_noise, perturb.gripper_holds
    rng = np.random.default_rng(seed)
    holds_rng = np.random.default_rng([seed, 1])  # the noise draws stay those of the same seed without holds
    grip = _gripper(sim) if gripper_holds > 0 else None
    hold_left, hold_value = 0, 0.0  # steps left in the running hold, and its command
    env = sim.episode(task, seed, cameras, image_size)
    policy = sim.scripted_policy(task)
    policy.reset(task, env.instruction)
    frames: dict[str, list[np.ndarray]] = {c: [] for c in cameras}
    states, actions, privileged = [], [], []
    hold = None  # steps recorded since the task was first solved
    try:
        for _ in range(env.max_steps):
            obs = env.observe(cameras)
            action = np.array(policy.predict(obs))[0]  # a copy: a hold writes into it
            if grip is not None:
                if hold_left == 0 and holds_rng.random() < gripper_holds:
                    hold_left = int(holds_rng.integers(HOLD_STEPS[0], HOLD_STEPS[1] + 1))
                    hold_value = grip[1] if holds_rng.random() < 0.5 else grip[2]
                if hold_left > 0:
                    action[grip[0]], hold_left = hold_value, hold_left - 1
            if action_noise > 0:
                action = action + rng.normal(0.0, action_noise, action.shape)
            for c in cameras:
                frames[c].append(obs["images"][c])
            states.append(obs["state"])
            privileged.append(obs.get("privileged"))
            actions.append(sim.applied_action(action))
            solved = env.step(action)
            hold = hold if hold is not None else (0 if solved else None)
            if hold is not None:
                if hold >= sim.hold_steps:
                    break
                hold += 1
        return Demonstration(
            task=task,
            instruction=env.instruction,
            frames={c: np.stack(v) for c, v in frames.items()},
            states=np.stack(states),
            actions=np.stack(actions),
            privileged=privileged,
            success=hold is not None,
            fps=env.fps,
        )
    finally:
        env.close()


def record_episode(
    sim, task: str, seed: int, cameras: list[str], image_size: int, key: str, perturb: Perturbation = Perturbation()
):
    """Run the scripted expert once and return the recorded `Episode` (its `success` says how it ended)."""
    from latbot.data import embodiments
    from latbot.data.store import Episode

    demo = rollout_expert(sim, task, seed, cameras, image_size, perturb)
    return Episode(
        key=key,
        frames=demo.frames,
        trajectory=embodiments.get(sim.embodiment).trajectory(demo.states, demo.actions, key),
        instruction=demo.instruction,
        task=task,
        subtasks=sim.subtask_segments(task, demo),
        embodiment=sim.embodiment,
        fps=demo.fps,
        source=f"{sim.config.type}:{task}:seed{seed}",
        success=demo.success,
        native_actions=demo.actions,
        native_states=demo.states,
    )
