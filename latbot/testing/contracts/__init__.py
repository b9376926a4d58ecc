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
- the model kinds (encoders, decoders, students, action_experts): `members` (every member of the kind's
  Protocol — `latbot.models.<kind>.base` — exists and accepts the arguments LatBot passes; a broken member
  fails under its own name and the rules that need it are skipped);
- encoders: `fields` (num_scene_tokens, num_motion_tokens), `width`, `forward` (uint8 and float frames),
  `backward`, `repeated_blocks`, `state_dict`;
- decoders: `forward`, `image_only`, `univla_style`, `backward`, `action_mask`, `sample` (required: the exact call that
  `latbot viz` and the diagnostics make, see `latbot.models.decoders.base`), `repeated_blocks`, `state_dict`;
- students: `fields`, `properties` (width, num_layers, latent_width), `forward`, `backward`, `hidden_states`,
  `repeated_blocks`, `state_dict`;
- action_experts: `loss`, `backward`, `sample`, `repeated_blocks`, `state_dict`;
- datasets: `base`, and with a sample source (`cls.sample_source(directory)`): `cameras`, `episodes`, `load`,
  `convert`;
- simulators: `base`, `attributes`, `embodiment`, and with `cls.tiny_task`: `task_names`, `unknown_task`,
  `instruction`, `observe`, `step`, `scripted_policy`, `gen_sim`;
- embodiments: `base`, `attributes`, `to_unified`, `state_to_unified`, `round_trip`;
- stages: `base`, `config`, and with `cls.tiny_recipe()`: `recipe`, `validate`, `architecture` (on the meta
  device too, with `repeated_blocks` and `components`), `example_batch` (through `train_step`), `backward`,
  `state_dict`, and `build_data` (yields what `example_batch` promises; skipped for `reads_stores` stages
  whose tiny recipe names no store).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from latbot.testing.contracts.core import Checker, Failure, Report, _Broken, tiny_config
from latbot.testing.contracts.data import _datasets, _embodiments, _simulators, _stages
from latbot.testing.contracts.models import _action_experts, _decoders, _encoders, _students, expert_inputs

__all__ = ["CHECKS", "Failure", "Report", "check", "check_all", "check_class", "expert_inputs", "tiny_config"]

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
