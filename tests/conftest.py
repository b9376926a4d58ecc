"""Shared test set-up: offline, few threads, and helpers that build real Python distributions on disk."""

from __future__ import annotations

import os

# Before anything imports torch or transformers: no hub, and threads sized for a 2-core machine.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def make_distribution(
    root: Path, name: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str] | None = None
) -> Path:
    """Write an installed distribution (a `.dist-info` with METADATA and entry_points.txt, plus its
    modules) into its own directory under `root`; put that directory on sys.path to "install" it."""
    site = Path(tempfile.mkdtemp(prefix=f"site-{name}-", dir=root))
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = []
    for group, eps in entry_points.items():
        lines.append(f"[{group}]")
        lines.extend(f"{k} = {v}" for k, v in eps.items())
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module, source in (modules or {}).items():
        path = site / (module.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return site


PLUGIN_SOURCE = """
from typing import Literal
from latbot.config import PluginConfig

class {cls}:
    class Config(PluginConfig):
        type: Literal["{name}"] = "{name}"
        size: int = 3

    def __init__(self, config):
        self.config = config
"""


@pytest.fixture
def fresh_registry(monkeypatch):
    """The process registry, forgotten before and after the test (sys.path changes are undone by monkeypatch)."""
    from latbot import registry

    registry.refresh()
    yield registry
    monkeypatch.undo()
    registry.refresh()


@pytest.fixture
def install(tmp_path, monkeypatch, fresh_registry):
    """install(name, entry_points, modules) → puts a fake-but-real distribution on sys.path."""
    added: list[str] = []

    def _install(name, entry_points, modules=None):
        site = make_distribution(tmp_path, name, entry_points, modules)
        monkeypatch.syspath_prepend(str(site))
        added.append(str(site))
        fresh_registry.refresh()
        return site

    yield _install
    for mod in [m for m in sys.modules if m.startswith("fakeplug")]:
        del sys.modules[mod]
