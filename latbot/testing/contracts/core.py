"""What every contract check shares: the dummy-input sizes, the `Failure`/`Report` records, the `Checker`
that turns each broken requirement into one failure, and the rules common to several kinds."""

from __future__ import annotations

import io
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

B = 2  # batch of the dummy inputs
SIZE = 32  # image side of the dummy inputs
INSTRUCTIONS = ["pick up the red block", "open the drawer"]
SUBTASKS = ["reach the block", None]  # None: a sample without a subtask annotation (no reasoning target)
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
        self.broken: set[str] = set()  # members that are missing or cannot take LatBot's arguments (`members`)

    def fail(self, rule: str, message: str) -> None:
        r = self.report
        r.failures.append(Failure(r.kind, r.name, rule, message, r.distribution))

    def skip(self, rule: str, why: str) -> None:
        self.report.skipped.append(f"{rule} ({why})")

    def rule(
        self, rule: str, fn: Callable[[], Any], required: bool = True, needs: tuple[str, ...] | None = None
    ) -> Any:
        """Run `fn`; an exception or a failed `expect` records a failure. With `required`, raise `_Broken` so
        the rules that depend on this one are skipped. A rule that `needs` a member found broken by `members`
        (by default the member of its own name) is not run: that member's failure already says what is wrong."""
        broken = [m for m in (needs if needs is not None else (rule,)) if m in self.broken]
        if broken:
            self.skip(rule, f"{', '.join(broken)} failed above")
            if required:
                raise _Broken(rule)
            return None
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


def _shape_dtype(x: Any) -> str:
    """(2, 3, 32, 32) torch.int64: the shape and, for a tensor or an array, the dtype."""
    dtype = getattr(x, "dtype", None)
    return f"{_shape(x)} {dtype}" if dtype is not None else _shape(x)


# -- the members of a kind's Protocol -------------------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    """One member of a model kind's Protocol (latbot.models.<kind>.base) and how LatBot uses it.

    `args`: None for an attribute or property (it must exist); else a method that LatBot calls with these
    positional arguments and `kwargs` keywords — its signature must accept exactly that call. `optional`: only
    checked when the plugin has it; `when`: only checked when the plugin has this attribute set (e.g.
    "reads_prefix_cache"). `signature` is the documented spelling, named in the failure; `callers` who uses it."""

    name: str
    signature: str
    callers: str
    args: tuple[str, ...] | None = None
    kwargs: tuple[str, ...] = ()
    plural: bool = True  # `callers` is plural ("... call it") or singular ("... calls it")
    optional: bool = False
    when: str | None = None


def member_problem(obj: Any, m: Member) -> str | None:
    """What is wrong with member `m` of `obj` (a built plugin), or None."""
    import inspect

    from torch import nn

    call, take = ("call", "pass") if m.plural else ("calls", "passes")
    if m.args is None:
        try:
            getattr(obj, m.name)
        except AttributeError:
            return f"needs {m.signature}: {m.callers} {'read' if m.plural else 'reads'} it"
        except Exception as e:  # a property that raises
            return f"has {m.name}, but reading it raised {type(e).__name__}: {e}; expected {m.signature}"
        return None
    method = getattr(obj, m.name, None)
    if m.name == "forward" and getattr(type(obj), "forward", None) is nn.Module.forward:
        method = None  # nn.Module's placeholder, which raises NotImplementedError
    if not callable(method):
        return f"needs a method {m.signature}: {m.callers} {call} it"
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError):  # nothing to introspect (a C function): the calls themselves decide
        return None
    try:
        signature.bind(*m.args, **dict.fromkeys(m.kwargs))
    except TypeError as e:
        return (
            f"has {m.name}{signature}, which cannot take the arguments {m.callers} {take} ({e}); expected {m.signature}"
        )
    return None


def check_members(c: Checker, obj: Any, members: tuple[Member, ...]) -> None:
    """Every member of the kind's Protocol that `obj` lacks or that cannot take LatBot's arguments: one failure
    each, under the member's name as the rule; the rules that exercise a broken member are then not run. The
    rule `members` passes when nothing is broken."""
    for m in members:
        if m.optional and not hasattr(obj, m.name):
            continue
        if m.when is not None and not getattr(obj, m.when, False):
            continue
        problem = member_problem(obj, m)
        if problem:
            c.fail(m.name, problem)
            c.broken.add(m.name)
    if not c.broken:
        c.report.passed.append("members")


def constructor_problem(cls: type, signature: str, callers: str, *args: Any, **kwargs: Any) -> str | None:
    """Whether ``cls(*args, **kwargs)``, the call LatBot makes, fits the class's signature."""
    import inspect

    try:
        found = inspect.signature(cls)
    except (TypeError, ValueError):
        return None
    try:
        found.bind(*args, **kwargs)
    except TypeError as e:
        return f"has __init__{found}, which cannot take the arguments {callers} pass ({e}); expected {signature}"
    return None


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


def _state_dict_round_trip(
    c: Checker, build: Callable[[], Any], a: Any, run: Callable[[Any], Any], needs: tuple[str, ...] = ("state_dict",)
) -> None:
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

    c.rule("state_dict", fn, required=False, needs=needs)


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
