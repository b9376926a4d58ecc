"""The contracts of the other kinds: datasets, simulators, embodiments, stages (docs/plugins.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latbot.testing.contracts.core import (
    SIZE,
    B,
    Checker,
    _backward,
    _config_rules,
    _Expectation,
    _finite_scalar,
    _shape,
    _state_dict_round_trip,
    expect,
)


# -- datasets ---------------------------------------------------------------------------------------------------
def builtin_sample_source(name: str, directory: Path) -> Path | None:
    """A tiny source for LatBot's own adapters (third-party adapters define `sample_source`)."""
    from latbot.testing import samples

    if name == "libero_hdf5":
        return samples.make_libero_hdf5(directory / "task_demo.hdf5", demos=2, steps=6, size=24)
    if name == "lerobot":
        return samples.make_lerobot_v21(directory / "lerobot")
    if name == "egodex":
        return samples.make_egodex(directory / "egodex")
    return None


def _datasets(c: Checker, cls: type, tmp: Path) -> None:
    import numpy as np

    from latbot.data.adapters.base import SourceEpisode
    from latbot.data.store import Episode

    cfg = _config_rules(c, cls)
    adapter = c.rule("build", lambda: cls(cfg))
    for method in ("cameras", "episodes"):
        c.rule("base", lambda m=method: expect(callable(getattr(adapter, m, None)), f"needs a method {m}(src)"))
    make = getattr(cls, "sample_source", None)
    if callable(make):
        src = c.rule("sample_source", lambda: Path(make(tmp / "source")))
    else:
        src = builtin_sample_source(cfg.type, tmp / "source")
        if src is None:
            c.skip("cameras, episodes, load, convert", "no classmethod sample_source(directory) -> Path")
            return

    def cameras():
        cams = adapter.cameras(src)
        expect(
            isinstance(cams, list) and cams and all(isinstance(x, str) for x in cams),
            f"cameras(src) must return a non-empty list of camera names, got {cams!r}",
        )
        return cams

    cams = c.rule("cameras", cameras)

    def episodes():
        items = []
        for item in adapter.episodes(src):
            items.append(item)
            if len(items) == 2:
                break
        expect(items, "episodes(src) yields nothing for the sample source")
        bad = [i for i in items if not (isinstance(i, SourceEpisode) and isinstance(i.key, str) and callable(i.load))]
        expect(not bad, "episodes(src) must yield latbot.data.adapters.base.SourceEpisode(key: str, source: str, load)")
        return items

    items = c.rule("episodes", episodes)

    def load():
        ep = items[0].load(image_size=(SIZE, SIZE), resize_mode="pad", cameras=cams)
        expect(isinstance(ep, Episode), f"load(...) must return a latbot.data.store.Episode, got {type(ep).__name__}")
        t = len(ep.trajectory.actions)
        expect(t > 0, "the episode is empty")
        expect(set(ep.frames) == set(cams), f"frames must hold every camera asked for {cams}, got {sorted(ep.frames)}")
        for cam, fr in ep.frames.items():
            expect(
                fr.dtype == np.uint8 and fr.shape == (t, SIZE, SIZE, 3),
                f"frames['{cam}'] must be (T, H, W, 3) uint8 at the asked size = {(t, SIZE, SIZE, 3)}, got "
                f"{fr.dtype}{fr.shape}",
            )
        traj = ep.trajectory
        expect(
            traj.actions.shape == (t, 44) and traj.states.shape == (t, 46),
            f"trajectory must be actions (T, 44) and states (T, 46), got {traj.actions.shape} and {traj.states.shape}",
        )
        for what in ("native_actions", "native_states"):
            arr = getattr(ep, what)
            expect(
                arr is None or (arr.ndim == 2 and len(arr) == t), f"{what} must be None or (T, k), got {_shape(arr)}"
            )

    c.rule("load", load)

    def convert():
        from latbot.data.convert import convert as run
        from latbot.data.store import EpisodeStore

        result = run(cfg, src, tmp / "store", image_size=SIZE, limit=2, progress=False)
        expect(result.added >= 1 and not result.failed, f"convert added {result.added}, failed {result.failed}")
        with EpisodeStore.open(tmp / "store") as store:
            expect(store.stats is not None, "the converted store has no statistics")

    c.rule("convert", convert, required=False)


# -- simulators -------------------------------------------------------------------------------------------------
def _simulators(c: Checker, cls: type, tmp: Path) -> None:
    import numpy as np

    from latbot import registry
    from latbot.errors import LatBotError
    from latbot.sim.base import Simulator

    c.rule("base", lambda: expect(issubclass(cls, Simulator), "must subclass latbot.sim.base.Simulator"))

    def attributes():
        cams = getattr(cls, "cameras", None)
        expect(isinstance(cams, tuple | list) and cams, "needs a class attribute `cameras` (camera names)")
        expect(getattr(cls, "default_camera", None) in cams, "`default_camera` must be one of `cameras`")
        emb = getattr(cls, "embodiment", None)
        expect(
            emb in registry.names("embodiments"),
            f"`embodiment` must name a registered embodiment, got {emb!r} (have: {registry.names('embodiments')})",
        )

    c.rule("attributes", attributes)
    cfg = _config_rules(c, cls)
    sim = c.rule("build", lambda: cls(cfg))

    def embodiment():
        a, s = sim.action_dim, sim.state_dim
        expect(isinstance(a, int) and isinstance(s, int) and a > 0 and s >= 0, f"action_dim {a!r}, state_dim {s!r}")
        return a, s

    a_dim, s_dim = c.rule("embodiment", embodiment)
    task = getattr(cls, "tiny_task", None)
    if task is None:
        c.skip("task_names, observe, step, scripted_policy, gen_sim", "no class attribute tiny_task")
        return
    c.rule("task_names", lambda: expect(sim.task_names([task]) == [task], f"task_names([{task!r}]) != [{task!r}]"))

    def unknown():
        try:
            sim.task_names(["no-such-task-xyz"])
        except LatBotError:
            return
        raise _Expectation("task_names of an unknown task must raise SimulatorError (a LatBotError)")

    c.rule("unknown_task", unknown, required=False)
    instruction = c.rule("instruction", lambda: _nonempty_str(sim.instruction(task), "instruction(task)"))
    cam = cls.default_camera
    env = c.rule("observe", lambda: sim.episode(task, 0, [cam], SIZE))
    try:

        def observe():
            obs = env.observe([cam])
            img = obs["images"][cam]
            expect(
                isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.shape == (SIZE, SIZE, 3),
                f"observe(...)['images']['{cam}'] must be (S, S, 3) uint8 = {(SIZE, SIZE, 3)}, got {_shape(img)}",
            )
            state = np.asarray(obs["state"])
            expect(state.shape == (s_dim,), f"observe(...)['state'] must be (S,) = ({s_dim},), got {state.shape}")
            _nonempty_str(obs["instruction"], "observe(...)['instruction']")
            return obs

        obs = c.rule("observe", observe)

        def step():
            done = env.step(np.zeros(a_dim, np.float32))
            expect(isinstance(done, bool | np.bool_), f"step(action) must return a bool, got {type(done).__name__}")
            expect(isinstance(env.max_steps, int) and env.max_steps > 0, "the episode needs an int `max_steps`")
            expect(float(env.fps) > 0, "the episode needs `fps` > 0")

        c.rule("step", step, required=False)
        if type(sim).scripted_policy is not Simulator.scripted_policy:

            def scripted():
                policy = sim.scripted_policy(task)
                policy.reset(task, instruction)
                chunk = np.asarray(policy.predict(obs))
                expect(
                    chunk.ndim == 2 and chunk.shape[1] == a_dim,
                    f"predict must return (H, A = {a_dim}), got {chunk.shape}",
                )

            c.rule("scripted_policy", scripted)

            def gen_sim():
                from latbot.sim.generate import generate

                result = generate(cfg, [task], 1, tmp / "sim_store", image_size=SIZE, progress=False)
                expect(result.added == 1, f"gen-sim recorded {result.added} episode(s) instead of 1")

            c.rule("gen_sim", gen_sim, required=False)
    finally:
        env.close()
        sim.close()


def _nonempty_str(value: Any, what: str) -> str:
    expect(isinstance(value, str) and value.strip(), f"{what} must be a non-empty string, got {value!r}")
    return value


# -- embodiments ------------------------------------------------------------------------------------------------
def _embodiments(c: Checker, cls: type, tmp: Path) -> None:
    import numpy as np

    from latbot.data.embodiments import Embodiment
    from latbot.data.spaces import ACTION_DIM, STATE_DIM

    c.rule("base", lambda: expect(issubclass(cls, Embodiment), "must subclass latbot.data.embodiments.Embodiment"))
    cfg = _config_rules(c, cls)
    emb = c.rule("build", lambda: cls(cfg))

    def attributes():
        s, a = getattr(emb, "native_state_dim", None), getattr(emb, "native_action_dim", None)
        expect(isinstance(s, int) and isinstance(a, int) and a > 0 and s >= 0, f"native dims S={s!r}, A={a!r}")
        for what, dim in (("action_mask", ACTION_DIM), ("state_mask", STATE_DIM)):
            m = getattr(emb, what, None)
            expect(
                isinstance(m, np.ndarray) and m.dtype == bool and m.shape == (dim,),
                f"`{what}` must be a ({dim},) bool array, got {_shape(m)}",
            )
        expect(emb.action_mask.any(), "action_mask is empty: the robot fills no unified action dimension")
        expect(isinstance(emb.gripper, str), "`gripper` must describe the native gripper convention in words")

    c.rule("attributes", attributes)
    rng = np.random.default_rng(0)
    states = rng.uniform(-0.5, 0.5, (5, emb.native_state_dim))
    actions = rng.uniform(-0.2, 0.2, (5, emb.native_action_dim))
    if emb.gripper != "none":

        def gripper_range():
            """The robot's own gripper range (`gripper_open`, `gripper_closed` at `gripper_index`), not an
            assumed ±1 command: open must land on unified 0 and closed on unified 1."""
            from latbot.data.spaces import GRIPPER_DIMS

            index, lo, hi = emb.gripper_index, emb.gripper_open, emb.gripper_closed
            expect(
                isinstance(index, int) and -emb.native_action_dim <= index < emb.native_action_dim,
                f"gripper_index {index!r} is not an index into the native action (A = {emb.native_action_dim})",
            )
            for what, value in (("gripper_open", lo), ("gripper_closed", hi)):
                expect(
                    isinstance(value, int | float) and np.isfinite(value), f"`{what}` must be a number, got {value!r}"
                )
            expect(lo != hi, f"gripper_open and gripper_closed are both {lo}")
            dims = [d for d in GRIPPER_DIMS if emb.action_mask[d]]
            expect(bool(dims), "the robot has a gripper but action_mask holds no unified gripper dimension (6 or 13)")
            both = np.zeros((2, emb.native_action_dim))
            both[:, index] = (lo, hi)
            got = np.asarray(emb.actions_to_unified(both))[:, dims]
            expect(
                np.allclose(got[0], 0.0, atol=1e-6) and np.allclose(got[1], 1.0, atol=1e-6),
                f"the declared native gripper range (open = {lo:g}, closed = {hi:g}, action[{index}]) maps to "
                f"unified {got[0].tolist()} / {got[1].tolist()}, expected 0 (open) / 1 (closed): the declared range "
                "or polarity is not the one the conversion uses",
            )

        c.rule("gripper_range", gripper_range, required=False)
        index = emb.gripper_index
        if isinstance(index, int) and -emb.native_action_dim <= index < emb.native_action_dim:
            # the round trip below drives the gripper through the robot's own open / closed values
            actions[:, index] = np.where(rng.normal(size=5) > 0, emb.gripper_closed, emb.gripper_open)

    def to_unified():
        traj = emb.trajectory(states, actions)
        expect(
            traj.states.shape == (5, STATE_DIM) and traj.actions.shape == (5, ACTION_DIM),
            f"states_to_unified / actions_to_unified must give (T, 46) / (T, 44), got {traj.states.shape} / "
            f"{traj.actions.shape}",
        )
        expect(not traj.states[:, ~emb.state_mask].any(), "states_to_unified writes outside state_mask")
        expect(not traj.actions[:, ~emb.action_mask].any(), "actions_to_unified writes outside action_mask")
        return traj

    traj = c.rule("to_unified", to_unified)
    c.rule(
        "state_to_unified",
        lambda: expect(
            np.allclose(emb.state_to_unified(states[2]), traj.states[2], atol=1e-6),
            "state_to_unified(state) differs from states_to_unified over a trajectory",
        ),
        required=False,
    )

    def round_trip():
        back = np.asarray(emb.actions_to_native(emb.actions_to_unified(actions)))
        expect(back.shape == actions.shape, f"actions_to_native must return (H, A) = {actions.shape}, got {back.shape}")
        expect(
            np.allclose(back, actions, atol=1e-5),
            "actions_to_native(actions_to_unified(a)) != a: the policy would not answer in the units the store "
            "was written from",
        )

    c.rule("round_trip", round_trip, required=False)


# -- stages -----------------------------------------------------------------------------------------------------
def _stages(c: Checker, cls: type, tmp: Path) -> None:
    """The stage object: its recipe, `validate`, `architecture` (also on the meta device), `example_batch`
    through `train_step` (forward, backward), the weights round trip, and, when the tiny recipe needs no data
    of its own, `build_data` — every hook a command calls (docs/plugins.md, "Stages")."""
    import torch

    from latbot.stages.base import Stage, check_stage_config
    from latbot.train import distributed
    from latbot.train.distributed import World

    c.rule(
        "base", lambda: expect(isinstance(cls, type) and issubclass(cls, Stage), "must subclass latbot.stages.Stage")
    )
    name = c.report.name
    c.rule(
        "config",
        lambda: expect(
            check_stage_config(getattr(cls, "Config", None), name) is None,
            str(check_stage_config(getattr(cls, "Config", None), name)),
        ),
    )
    make = getattr(cls, "tiny_recipe", None)
    if not callable(make):
        c.skip("validate, architecture, example_batch, forward, backward, state_dict, build_data",
               "no classmethod tiny_recipe()")  # fmt: skip
        return

    def recipe():
        data = make()
        return cls.Config.model_validate(data) if isinstance(data, dict) else data

    r = c.rule("recipe", recipe)
    stage = c.rule("recipe", lambda: cls(r))
    c.rule("validate", stage.validate)

    def on_meta():
        with torch.device("meta"):
            model = stage.architecture()
        expect(isinstance(model, torch.nn.Module), f"architecture() must return an nn.Module, got {type(model)}")
        expect(
            all(p.is_meta for p in model.parameters()), "architecture() under torch.device('meta') made real tensors"
        )
        distributed.blocks(model)  # the units of FSDP sharding and activation checkpointing
        batch = stage.example_batch(B, device="meta")
        expect(isinstance(batch, dict), f"example_batch() must return a dict, got {type(batch)}")
        parts = stage.components(model)
        expect(isinstance(parts, dict) and parts, "components(model) must name at least one part")

    c.rule("architecture", on_meta)
    torch.manual_seed(0)
    model = c.rule("architecture", stage.architecture)

    def forward():
        torch.manual_seed(0)
        batch = stage.example_batch(B, device="cpu")
        out = stage.train_step(model, batch)
        expect(isinstance(out, dict) and "loss" in out, 'train_step must return a dict with "loss"')
        _finite_scalar(out, "loss")
        return batch, out

    batch, out = c.rule("example_batch", forward)
    _backward(c, model, lambda: out["loss"])
    _state_dict_round_trip(c, stage.architecture, model, lambda m: (stage.train_step(m, batch)["loss"],))

    def build_data():
        stage.prepare()
        dataset, sampler = stage.build_data(World())
        expect(hasattr(sampler, "position"), "build_data must return (dataset, sampler with a settable `position`)")
        expect(len(dataset) >= B, f"the tiny recipe's dataset has {len(dataset)} sample(s), fewer than {B}")
        data = torch.utils.data.default_collate([dataset[i] for i in range(B)])
        example = stage.example_batch(B, device="cpu")
        expect(
            set(data) == set(example),
            f"build_data yields keys {sorted(data)}, example_batch {sorted(example)}: they must agree",
        )
        for key, value in data.items():
            if isinstance(value, torch.Tensor):
                ex = example[key]
                expect(
                    ex.shape == value.shape and ex.dtype == value.dtype,
                    f"'{key}': build_data gives {tuple(value.shape)} {value.dtype}, example_batch "
                    f"{tuple(ex.shape)} {ex.dtype}",
                )
        stage.train_step(model, data)["loss"].backward()

    if getattr(cls, "reads_stores", False) and not r.data.sources:
        c.skip("build_data", "the stage reads episode stores (data.sources) and its tiny recipe names none")
    else:
        c.rule("build_data", build_data)
