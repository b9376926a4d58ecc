"""The plugin contracts of docs/plugins.md as executable checks, shipped with the package.

`latbot plugins check [NAME]` and the project's own contract tests call these, so a third-party plugin is
checked exactly like a built-in one::

    from latbot.testing.contracts import check, check_class
    failures = check("encoders", "tiny_conv")          # a registered plugin, by kind and name
    failures = check_class("encoders", MyEncoder)      # a class, registered or not (a notebook, a test)
    assert not failures, "\\n".join(map(str, failures))

Each check builds the plugin from its *tiny* configuration (`cls.tiny_config()` when the class has it,
else `cls.Config()`), runs it on dummy inputs of the documented shapes and returns one `Failure` per
broken requirement ("rule"); requirements that depend on a broken one are not tried. Dummy sizes:
B = 2 samples, images 32 × 32, instructions of a few words.

Rules by kind (docs/plugins.md, "The contracts per kind"):

- every kind: `tiny_config` (a tiny Config can be made), `config` (it survives a dump/validate round trip),
  `build` (``cls(config, ...)`` with the documented arguments);
- encoders: `fields` (num_scene_tokens, num_motion_tokens), `width`, `forward` (uint8 and float frames),
  `backward`, `repeated_blocks`, `state_dict`;
- decoders: `forward`, `image_only`, `backward`, `action_mask`, `sample` (when present), `repeated_blocks`,
  `state_dict`;
- students: `fields`, `properties` (width, num_layers, latent_width), `forward`, `backward`, `hidden_states`,
  `repeated_blocks`, `state_dict`;
- action_experts: `loss`, `backward`, `sample`, `repeated_blocks`, `state_dict`;
- datasets: `base`, and with a sample source (`cls.sample_source(directory)`): `cameras`, `episodes`, `load`,
  `convert`;
- simulators: `base`, `attributes`, `embodiment`, and with `cls.tiny_task`: `task_names`, `unknown_task`,
  `instruction`, `observe`, `step`, `scripted_policy`, `gen_sim`;
- embodiments: `base`, `attributes`, `to_unified`, `state_to_unified`, `round_trip`;
- stages: `base`, and with `cls.tiny_recipe()`: `recipe`, `build_model`, `build_data`, `forward`, `backward`,
  `state_dict`.
"""

from __future__ import annotations

import io
import tempfile
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

B = 2  # batch of the dummy inputs
SIZE = 32  # image side of the dummy inputs
INSTRUCTIONS = ["pick up the red block", "open the drawer"]
SUBTASKS = ["reach the block", "grasp"]
LATENT_WIDTH = 40  # D_teacher a student is built for
VLM_WIDTH, VLM_LAYERS, HORIZON, CONTEXT = 24, 3, 5, 7  # what an action expert is built for / reads


@dataclass(frozen=True)
class Failure:
    """One broken requirement of one plugin."""

    kind: str
    name: str
    rule: str
    message: str
    distribution: str = ""

    def __str__(self) -> str:
        dist = f" ({self.distribution})" if self.distribution else ""
        message = " ".join(self.message.split())  # one line, whatever the exception said
        return f"FAIL  {self.kind}/{self.name}{dist} [{self.rule}]: {message}"


@dataclass
class Report:
    """The result of checking one plugin: its failures and the rules it could not try (and why)."""

    kind: str
    name: str
    distribution: str = ""
    failures: list[Failure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


class _Broken(Exception):
    """A rule failed; the dependent rules are not tried."""


class Checker:
    """Runs a plugin's rules one by one, turning each failed requirement into one `Failure`."""

    def __init__(self, report: Report):
        self.report = report

    def fail(self, rule: str, message: str) -> None:
        r = self.report
        r.failures.append(Failure(r.kind, r.name, rule, message, r.distribution))

    def skip(self, rule: str, why: str) -> None:
        self.report.skipped.append(f"{rule} ({why})")

    def rule(self, rule: str, fn: Callable[[], Any], required: bool = True) -> Any:
        """Run `fn`; an exception or a failed `expect` records a failure. With `required`, raise `_Broken` so
        the rules that depend on this one are skipped."""
        try:
            result = fn()
        except _Expectation as e:
            self.fail(rule, str(e))
        except _Broken:
            raise
        except Exception as e:  # the plugin's own exception: report it with where it happened
            self.fail(rule, f"raised {type(e).__name__}: {e}{_where(e)}")
        else:
            if rule not in self.report.passed:
                self.report.passed.append(rule)
            return result
        if required:
            raise _Broken(rule)
        return None


class _Expectation(Exception):
    pass


def expect(condition: Any, message: str) -> None:
    if not condition:
        raise _Expectation(message)


def _where(e: BaseException) -> str:
    frames = traceback.extract_tb(e.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"


def _shape(x: Any) -> str:
    return str(tuple(x.shape)) if hasattr(x, "shape") else type(x).__name__


# -- public entry points --------------------------------------------------------------------------------------
def check(kind: str, name: str) -> Report:
    """Check the registered plugin `name` of `kind` (importing it first)."""
    from latbot import registry
    from latbot.errors import RegistryError

    report = Report(kind, name)
    try:
        report.distribution = registry.entry(kind, name).distribution
        cls = registry.get(kind, name)
    except RegistryError as e:
        Checker(report).fail("import", str(e))
        return report
    return _run(report, cls)


def check_class(kind: str, cls: type, name: str | None = None, distribution: str = "") -> Report:
    """Check a plugin class that need not be registered (docs examples, notebooks, tests)."""
    from latbot.registry import KINDS

    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r} (kinds: {', '.join(KINDS)})")
    if name is None:
        config = getattr(cls, "Config", None)
        field_name = "stage" if kind == "stages" else "type"
        default = getattr(config, "model_fields", {}).get(field_name)
        name = str(getattr(default, "default", None) or getattr(cls, "__name__", "?"))
    from latbot import registry

    temporary = name not in registry.names(kind)
    if temporary:  # convert and gen-sim find plugins through the registry
        registry.register(kind, name, cls)
    try:
        return _run(Report(kind, name, distribution), cls)
    finally:
        if temporary:
            registry.unregister(kind, name)


def check_all(kinds: Iterable[str] | None = None, name: str | None = None) -> list[Report]:
    """Check every registered plugin (of `kinds`; only those called `name` when given)."""
    from latbot import registry

    reports = []
    for kind in kinds or registry.KINDS:
        for n in registry.names(kind):
            if name is None or n == name:
                reports.append(check(kind, n))
    return reports


def _run(report: Report, cls: type) -> Report:
    import torch

    checker = Checker(report)
    state = torch.random.get_rng_state()
    try:
        with tempfile.TemporaryDirectory(prefix="latbot-check-") as tmp:
            CHECKS[report.kind](checker, cls, Path(tmp))
    except _Broken:
        pass
    finally:
        torch.random.set_rng_state(state)
    return report


# -- shared rules ---------------------------------------------------------------------------------------------
def tiny_config(cls: type) -> Any:
    """The plugin's CPU-sized Config: `cls.tiny_config()` when defined, else `cls.Config()`."""
    make = getattr(cls, "tiny_config", None)
    return make() if callable(make) else cls.Config()


def _config_rules(c: Checker, cls: type) -> Any:
    from latbot.config import PluginConfig

    def make():
        config_cls = getattr(cls, "Config", None)
        expect(
            isinstance(config_cls, type) and issubclass(config_cls, PluginConfig),
            "the class needs a nested `Config(latbot.config.PluginConfig)`",
        )
        try:
            cfg = tiny_config(cls)
        except Exception as e:
            raise _Expectation(
                f"cannot make a tiny Config ({type(e).__name__}: {e}); give the class a classmethod "
                "`tiny_config()` returning a CPU-sized Config, or defaults for every field"
            ) from e
        expect(isinstance(cfg, cls.Config), f"tiny_config() must return a {cls.__name__}.Config, got {type(cfg)}")
        return cfg

    cfg = c.rule("tiny_config", make)

    def round_trip():
        again = cls.Config.model_validate(cfg.model_dump(mode="json"))
        expect(again == cfg, "Config → model_dump(mode='json') → model_validate is not the same Config")

    c.rule("config", round_trip, required=False)
    return cfg


def _fields(c: Checker, cfg: Any, names: tuple[str, ...], why: str) -> None:
    def fn():
        missing = [n for n in names if not isinstance(getattr(cfg, n, None), int)]
        expect(not missing, f"Config lacks integer field(s) {missing}: {why}")

    c.rule("fields", fn)


def _repeated_blocks(c: Checker, model: Any) -> None:
    from torch import nn

    def fn():
        method = getattr(model, "repeated_blocks", None)
        expect(
            callable(method),
            "needs a method repeated_blocks() -> list[nn.Module] (the blocks FSDP wraps and activation "
            "checkpointing recomputes; return [] when there are none)",
        )
        blocks = method()
        expect(isinstance(blocks, list | tuple), f"repeated_blocks() must return a list, got {type(blocks).__name__}")
        modules = {id(m) for m in model.modules()}
        bad = [i for i, b in enumerate(blocks) if not isinstance(b, nn.Module) or id(b) not in modules]
        expect(not bad, f"repeated_blocks() items {bad} are not submodules of the model")

    c.rule("repeated_blocks", fn, required=False)


def _state_dict_round_trip(c: Checker, build: Callable[[], Any], a: Any, run: Callable[[Any], Any]) -> None:
    """Weights of `a` saved and loaded into a freshly built (differently initialised) twin: same outputs."""
    import torch

    def fn():
        buf = io.BytesIO()
        torch.save(a.state_dict(), buf)
        torch.manual_seed(1)
        b = build()
        b.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
        a.eval(), b.eval()
        with torch.no_grad():
            torch.manual_seed(3)
            out_a = run(a)
            torch.manual_seed(3)
            out_b = run(b)
        for x, y in zip(out_a, out_b, strict=True):
            expect(torch.allclose(x, y, atol=1e-5), "outputs differ after a state_dict save/load round trip")

    c.rule("state_dict", fn, required=False)


def _backward(c: Checker, model: Any, loss_fn: Callable[[], Any], extra: str = "") -> None:
    def fn():
        model.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        trained = [n for n, p in model.named_parameters() if p.requires_grad]
        expect(trained, "has no trainable parameter")
        reached = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
        expect(reached, f"no trainable parameter receives a gradient{extra}")

    c.rule("backward", fn, required=False)


def _finite_scalar(out: dict, key: str) -> None:
    import torch

    value = out.get(key)
    expect(isinstance(value, torch.Tensor) and value.ndim == 0, f'"{key}" must be a scalar tensor, got {_shape(value)}')
    expect(torch.isfinite(value), f'"{key}" is not finite ({value})')


def frames(b: int = B, t: int = 2, size: int = SIZE) -> Any:
    """(b, t, 3, size, size) uint8 frames."""
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (b, t, 3, size, size), dtype=torch.uint8, generator=g)


def action_mask(b: int = B) -> Any:
    """(b, 44) float: a single right arm (the unified convention, docs/data.md)."""
    import torch

    from latbot.data.spaces import ACTION_DIM

    mask = torch.zeros(b, ACTION_DIM)
    mask[:, 7:14] = 1
    return mask


# -- encoders ---------------------------------------------------------------------------------------------------
def _encoders(c: Checker, cls: type, tmp: Path) -> None:
    import torch

    cfg = _config_rules(c, cls)
    _fields(
        c,
        cfg,
        ("num_scene_tokens", "num_motion_tokens"),
        "Ns and Nm, read by the distillation stage to match the student's",
    )
    ns, nm = cfg.num_scene_tokens, cfg.num_motion_tokens
    t = getattr(cfg, "num_frames", None) or 2  # an encoder with num_frames reads clips of data.num_frames
    torch.manual_seed(0)
    enc = c.rule("build", lambda: cls(cfg))

    def width():
        d = getattr(enc, "width", None)
        expect(isinstance(d, int) and d > 0, f"needs an int property `width` (D, the latents' width), got {d!r}")
        return d

    d = c.rule("width", width)
    x = frames(t=t)

    def forward():
        for clip in (x, x.float() / 255):
            out = enc(clip, INSTRUCTIONS)
            expect(
                isinstance(out, tuple | list) and len(out) == 2,
                f"forward must return (Z_sce, Z_mot), got {type(out).__name__}",
            )
            z_sce, z_mot = out
            expect(
                tuple(z_sce.shape) == (B, ns, d) and tuple(z_mot.shape) == (B, nm, d),
                f"forward(frames (B, T, 3, H, W) {str(clip.dtype).removeprefix('torch.')}) returned Z_sce "
                f"{_shape(z_sce)} and Z_mot {_shape(z_mot)}; expected (B, Ns, D) = {(B, ns, d)} and (B, Nm, D) = "
                f"{(B, nm, d)}",
            )
            expect(torch.isfinite(z_sce).all() and torch.isfinite(z_mot).all(), "forward returned non-finite latents")

    c.rule("forward", forward)
    _backward(c, enc, lambda: sum(z.square().mean() for z in enc(x, INSTRUCTIONS)))
    _repeated_blocks(c, enc)
    _state_dict_round_trip(c, lambda: cls(cfg), enc, lambda m: m(x, INSTRUCTIONS))


# -- decoders ---------------------------------------------------------------------------------------------------
def _decoders(c: Checker, cls: type, tmp: Path) -> None:
    import torch

    cfg = _config_rules(c, cls)
    k = getattr(cfg, "horizon", None) or 3  # K = data.num_frames − 1 actions per clip
    d = 24
    torch.manual_seed(0)
    dec = c.rule("build", lambda: cls(cfg, latent_width=d))
    with torch.no_grad():  # zero-initialised outputs (adaLN-zero) pass no gradient at step 0: move off zero
        for p in dec.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    f = frames(t=2)
    z_sce = torch.randn(B, 3, d, requires_grad=True)
    z_mot = torch.randn(B, 5, d, requires_grad=True)
    actions, mask = torch.randn(B, k, 44), action_mask()

    def forward():
        losses = dec(z_sce, z_mot, f[:, 0], f[:, 1], actions, mask)
        expect(isinstance(losses, dict), f"forward must return a dict of losses, got {type(losses).__name__}")
        expect(
            set(losses) == {"image", "action"},
            f'forward(..., actions, action_mask) must return the keys {{"image", "action"}}, got {sorted(losses)}',
        )
        for key in losses:
            _finite_scalar(losses, key)
        return losses

    losses = c.rule("forward", forward)

    def image_only():
        out = dec(z_sce, z_mot, f[:, 0], f[:, 1], None, None)
        expect(
            isinstance(out, dict) and set(out) == {"image"},
            f'forward(..., None, None) (the image-only ablation) must return only "image", got {sorted(out)}',
        )
        _finite_scalar(out, "image")

    c.rule("image_only", image_only, required=False)

    def backward():
        (losses["image"] + losses["action"]).backward()
        for name, z in (("z_sce", z_sce), ("z_mot", z_mot)):
            expect(z.grad is not None and z.grad.abs().sum() > 0, f"no gradient reaches {name} from the losses")

    c.rule("backward", backward, required=False)

    def masked():
        none = dec(z_sce, z_mot, f[:, 0], f[:, 1], actions, torch.zeros_like(mask))["action"]
        expect(
            float(none.detach().abs()) < 1e-6,
            f"with an all-zero action_mask the action loss must be 0 (got {float(none.detach()):.3g}); average "
            "the action loss over the valid dimensions only (dims the embodiment lacks hold no data)",
        )

    c.rule("action_mask", masked, required=False)
    if hasattr(dec, "sample"):

        def sample():
            with torch.no_grad():
                frame, acts = dec.sample(z_sce.detach(), z_mot.detach(), f[:, 0])
            expect(
                frame.ndim == 4 and tuple(frame.shape[:2]) == (B, 3) and tuple(acts.shape) == (B, k, 44),
                f"sample must return (frame (B, 3, S, S), actions (B, K, 44)) = ((2, 3, S, S), {(B, k, 44)}), got "
                f"{_shape(frame)} and {_shape(acts)}",
            )
            expect(bool((frame >= 0).all() and (frame <= 1).all()), "sample's frame must be in [0, 1]")

        c.rule("sample", sample, required=False)
    _repeated_blocks(c, dec)
    _state_dict_round_trip(
        c,
        lambda: cls(cfg, latent_width=d),
        dec,
        lambda m: tuple(m(z_sce.detach(), z_mot.detach(), f[:, 0], f[:, 1], actions, mask).values()),
    )


# -- students ---------------------------------------------------------------------------------------------------
def _students(c: Checker, cls: type, tmp: Path) -> None:
    import torch

    cfg = _config_rules(c, cls)
    _fields(
        c,
        cfg,
        ("num_scene_tokens", "num_motion_tokens"),
        "Ns and Nm, which the distillation stage checks against the teacher's",
    )
    n = cfg.num_scene_tokens + cfg.num_motion_tokens
    torch.manual_seed(0)
    student = c.rule("build", lambda: cls(cfg, latent_width=LATENT_WIDTH))

    def properties():
        values = {p: getattr(student, p, None) for p in ("width", "num_layers", "latent_width")}
        bad = [p for p, v in values.items() if not (isinstance(v, int) and v > 0)]
        expect(not bad, f"needs positive int properties width, num_layers, latent_width; got {values}")
        expect(
            values["latent_width"] == LATENT_WIDTH,
            f"latent_width must be the latent_width it was built with ({LATENT_WIDTH}), got {values['latent_width']}",
        )
        return values

    props = c.rule("properties", properties)
    one = frames(t=1)  # (B, C = 1, 3, H, W): distillation shows the first frame only

    def forward():
        out = student(one, INSTRUCTIONS, subtasks=SUBTASKS)
        expect(isinstance(out, dict), f"forward must return a dict, got {type(out).__name__}")
        z = out.get("latents")
        expect(
            z is not None and tuple(z.shape) == (B, n, LATENT_WIDTH),
            f'forward(...)["latents"] must be (B, Ns + Nm, D_teacher) = {(B, n, LATENT_WIDTH)}, got {_shape(z)}',
        )
        _finite_scalar(out, "lm_loss")
        return out

    out = c.rule("forward", forward)
    _backward(c, student, lambda: out["latents"].square().mean() + out["lm_loss"])

    def hidden():
        two = frames(t=2)  # (B, C = 2 cameras, 3, H, W): finetuning shows every camera of the current step
        ctx = student(two, INSTRUCTIONS, hidden_states=True)
        layers, mask = ctx.get("layers"), ctx.get("attention_mask")
        expect(
            layers is not None and len(layers) == props["num_layers"] + 1,
            f'forward(..., hidden_states=True)["layers"] must hold num_layers + 1 = {props["num_layers"] + 1} '
            f"tensors, got {None if layers is None else len(layers)}",
        )
        expect(
            mask is not None and mask.ndim == 2 and mask.shape[0] == B,
            f'"attention_mask" must be (B, N), got {_shape(mask)}',
        )
        bad = [i for i, h in enumerate(layers) if tuple(h.shape) != (B, mask.shape[1], props["width"])]
        expect(not bad, f'"layers" must each be (B, N, width) = {(B, mask.shape[1], props["width"])}; not: {bad}')

    c.rule("hidden_states", hidden, required=False)
    _repeated_blocks(c, student)
    _state_dict_round_trip(
        c, lambda: cls(cfg, latent_width=LATENT_WIDTH), student, lambda m: (m(one, INSTRUCTIONS)["latents"],)
    )


# -- action experts ---------------------------------------------------------------------------------------------
def expert_inputs(b: int = B, horizon: int = HORIZON) -> dict[str, Any]:
    """The dummy arguments of `loss` (docs/plugins.md, "Action experts")."""
    import torch

    g = torch.Generator().manual_seed(0)
    pad = torch.zeros(b, horizon, dtype=torch.bool)
    pad[0, -1] = True  # the first sample's episode ends before the chunk does
    ctx_mask = torch.ones(b, CONTEXT, dtype=torch.bool)
    ctx_mask[1, -2:] = False  # the second sample's context is shorter (padding)
    return {
        "actions": torch.randn(b, horizon, 44, generator=g),
        "gripper": torch.rand(b, horizon, 2, generator=g),
        "action_mask": action_mask(b).bool(),
        "pad": pad,
        "state": torch.randn(b, 46, generator=g),
        "layers": [torch.randn(b, CONTEXT, VLM_WIDTH, generator=g) for _ in range(VLM_LAYERS + 1)],
        "ctx_mask": ctx_mask,
    }


def _action_experts(c: Checker, cls: type, tmp: Path) -> None:
    import torch

    cfg = _config_rules(c, cls)

    def build():
        return cls(cfg, vlm_width=VLM_WIDTH, vlm_layers=VLM_LAYERS, horizon=HORIZON)

    torch.manual_seed(0)
    expert = c.rule("build", build)
    x = expert_inputs()

    def loss():
        out = expert.loss(**x)
        expect(isinstance(out, dict), f"loss must return a dict, got {type(out).__name__}")
        missing = {"loss", "ee", "gripper"} - set(out)
        expect(
            not missing,
            f'loss must return the keys "loss", "ee", "gripper" (the stage logs all three); lacks {sorted(missing)}',
        )
        for key in ("loss", "ee", "gripper"):
            _finite_scalar(out, key)
        return out

    out = c.rule("loss", loss)
    _backward(c, expert, lambda: out["loss"])

    def run(m):
        return m.sample(x["state"], x["layers"], x["ctx_mask"], x["action_mask"], torch.Generator().manual_seed(0))

    def sample():
        actions, grip = run(expert)
        expect(
            tuple(actions.shape) == (B, HORIZON, 44) and tuple(grip.shape) == (B, HORIZON, 2),
            f"sample must return (actions (B, H, 44), gripper (B, H, 2)) = ({(B, HORIZON, 44)}, {(B, HORIZON, 2)}), "
            f"got {_shape(actions)} and {_shape(grip)}",
        )
        expect(bool(((grip >= 0) & (grip <= 1)).all()), "sample's gripper must be probabilities in [0, 1]")

    c.rule("sample", sample, required=False)
    _repeated_blocks(c, expert)
    _state_dict_round_trip(c, build, expert, run)


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
        actions[:, -1] = np.sign(rng.normal(size=5))

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
    import torch

    from latbot.stages.base import Stage, check_stage_config
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
        c.skip("build_model, build_data, forward, backward, state_dict", "no classmethod tiny_recipe()")
        return

    def recipe():
        data = make()
        return cls.Config.model_validate(data) if isinstance(data, dict) else data

    r = c.rule("recipe", recipe)
    stage = c.rule("build_model", lambda: cls(r))
    c.rule("build_model", stage.prepare)
    torch.manual_seed(0)
    model = c.rule("build_model", stage.build_model)

    def build_data():
        dataset, sampler = stage.build_data(World())
        expect(hasattr(sampler, "position"), "build_data must return (dataset, sampler with a settable `position`)")
        expect(len(dataset) >= B, f"the tiny recipe's dataset has {len(dataset)} sample(s), fewer than {B}")
        return torch.utils.data.default_collate([dataset[i] for i in range(B)])

    batch = c.rule("build_data", build_data)

    def forward():
        out = model(batch)
        expect(isinstance(out, dict) and "loss" in out, 'the model must return a dict with "loss"')
        _finite_scalar(out, "loss")
        return out

    out = c.rule("forward", forward)
    _backward(c, model, lambda: out["loss"])
    _state_dict_round_trip(c, stage.build_model, model, lambda m: (m(batch)["loss"],))


CHECKS: dict[str, Callable[[Checker, type, Path], None]] = {
    "encoders": _encoders,
    "decoders": _decoders,
    "students": _students,
    "action_experts": _action_experts,
    "datasets": _datasets,
    "simulators": _simulators,
    "embodiments": _embodiments,
    "stages": _stages,
}
