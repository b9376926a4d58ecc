"""Dataset presets: how each pretraining source (paper Table 6) is converted, as data files.

One YAML file per source in this folder (installed as package data), read by
`latbot data convert SRC --preset NAME` and listed by `latbot data presets`. A preset names the public
copy it reads (`reads`), the adapter and its options (`format`, `adapter`: cameras, action/state keys, the
`arms` layout), the control rate and the clip stride, what the source must look like (`expect`: fps,
vector shapes and names, checked before anything is written, so a different conversion of the same
dataset is refused instead of misread), and, for every convention, where it comes from (`conventions`,
`citations`). What is known not to be established is said in `unmapped` (those unified dimensions stay
masked) or, when the source cannot be read at all without guessing, in `refuse` (the converter stops
with that message).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from pydantic import Field

from latbot.config import Section
from latbot.errors import LatBotError

PRESET_DIR = Path(__file__).parent


class PresetError(LatBotError):
    """An unknown preset, a preset that refuses, or a source that does not match its preset."""


class Expect(Section):
    """What the source must look like (LeRobot sources: checked against meta/info.json)."""

    fps: float | None = None
    features: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="feature → {shape: [...], names: [...]} that must match exactly."
    )


class Preset(Section):
    name: str = Field(description="Preset name; also the Table 6 source name in recipes/mixtures/table6.yaml.")
    dataset: str = Field(description="The dataset, as its authors name it.")
    reads: str = Field(description="The public copy this preset reads (Hub repository or download).")
    format: str = Field(description="Adapter (registry kind `datasets`).")
    adapter: dict[str, Any] = Field(default_factory=dict, description="The adapter's Config fields.")
    fps: float = Field(gt=0, description="Control rate of the copy read (Hz).")
    frame_stride: int = Field(1, ge=1, description="Clip stride in the Table 6 mixture (~same time span per clip).")
    embodiment: str
    expect: Expect | None = None
    conventions: dict[str, str] = Field(description="Each convention in words, with its source.")
    citations: list[str] = Field(min_length=1, description="Where the conventions come from.")
    unmapped: dict[str, str] = Field(default_factory=dict, description="Not established: left masked, and why.")
    refuse: str | None = Field(None, description="Set when the source cannot be converted without guessing.")

    def adapter_config(self, overrides: dict[str, Any] | None = None):
        """The adapter's validated Config: the preset's options, then `overrides` (from --config/--set)."""
        from latbot import registry

        options = {**self.adapter, "type": self.format, **(overrides or {})}
        if self.format == "lerobot":
            options.setdefault("embodiment", self.embodiment)
        return registry.get("datasets", self.format).Config.model_validate(options)


@cache
def preset_names() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))


def load_preset(name: str) -> Preset:
    """The preset called `name` (a name from `preset_names()`, or a path to a preset YAML file)."""
    import difflib

    from latbot.yamlio import load_yaml_model

    path = Path(name)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        if name not in preset_names():
            close = difflib.get_close_matches(name, preset_names(), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise PresetError(f"--preset: no preset '{name}'{hint} (`latbot data presets` lists them)")
        path = PRESET_DIR / f"{name}.yaml"
    return load_yaml_model(path, Preset)


def check_source(preset: Preset, adapter: Any, src: Path) -> None:
    """Refuse (PresetError) when the preset refuses, or when `src` does not look like what it expects."""
    if preset.refuse:
        raise PresetError(f"preset '{preset.name}' refuses to convert {src}: {preset.refuse}")
    if preset.expect is None or not hasattr(adapter, "describe"):
        return
    found = adapter.describe(src)
    problems = []
    if preset.expect.fps is not None and float(found["fps"]) != preset.expect.fps:
        problems.append(f"fps is {found['fps']}, the preset expects {preset.expect.fps:g}")
    for key, want in preset.expect.features.items():
        have = found["features"].get(key)
        if have is None:
            problems.append(f"has no feature '{key}' (it has {sorted(found['features'])})")
            continue
        for field in ("shape", "names"):
            if field in want and list(have[field] or []) != list(want[field] or []):
                problems.append(f"feature '{key}' has {field} {have[field]}, the preset expects {want[field]}")
    if problems:
        raise PresetError(
            f"{src}: does not match preset '{preset.name}' (which reads {preset.reads}): "
            + "; ".join(problems)
            + ". Converting it with this preset would misread it; use the copy the preset names, or pass "
            "your own layout with --format/--config"
        )
