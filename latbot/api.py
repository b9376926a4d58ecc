"""The public API for plugin authors: everything a plugin of any kind needs from LatBot, in one import.

    from latbot.api import PluginConfig, Stage, RecipeBase, MixtureSampler, ...

A plugin that imports only from `latbot.api` (what `latbot plugins new` writes) keeps working when
LatBot's modules move; the names here are documented in docs/plugins.md ("The public API") and a test
checks that the two lists agree. Anything else under `latbot.` is internal.
"""

from __future__ import annotations

from latbot import registry
from latbot.config import PluginConfig, Section
from latbot.data import rotations
from latbot.data.adapters.base import DatasetAdapter, SourceEpisode, SourceError, resized
from latbot.data.clips import (
    K_ACTION_MASK,
    K_ACTION_PAD,
    K_ACTIONS,
    K_FRAMES,
    K_GRIPPER,
    K_INSTRUCTION,
    K_LATENTS,
    K_STATE,
    K_STATE_MASK,
    K_SUBTASK,
    ChunkDataset,
    ClipDataset,
    MixtureSampler,
)
from latbot.data.embodiments import (
    Embodiment,
    EmbodimentError,
    command_to_unified,
    gripper_to_unified,
    unified_mask,
    unified_to_command,
    unified_to_gripper,
)
from latbot.data.embodiments import get as get_embodiment
from latbot.data.spaces import (
    ACTION_ARM,
    ACTION_DIM,
    ACTION_GRIPPER,
    ACTION_POS,
    ACTION_ROT,
    ACTION_TIPS,
    ARMS,
    GRIPPER_DIMS,
    STATE_ARM,
    STATE_DIM,
    STATE_GRIPPER,
    STATE_POS,
    STATE_QUAT,
    STATE_TIPS,
)
from latbot.data.store import Episode
from latbot.errors import LatBotError, PluginCallError, TrainingError
from latbot.models.decoders.base import SAMPLE_SIGNATURE, Decoder
from latbot.models.encoders.base import Encoder
from latbot.models.experts.base import ActionExpert
from latbot.models.students.base import Student
from latbot.recipes.schema import RecipeBase
from latbot.sim.base import Demonstration, Simulator, SimulatorError, split_names
from latbot.stages.base import Stage
from latbot.testing.contracts import check as check_plugin

__all__ = [  # noqa: RUF022  (grouped by plugin kind, as docs/plugins.md lists them)
    # every plugin
    "PluginConfig",
    "Section",
    "LatBotError",
    "PluginCallError",
    "registry",
    "check_plugin",
    # stages
    "Stage",
    "RecipeBase",
    "TrainingError",
    "ChunkDataset",
    "ClipDataset",
    "MixtureSampler",
    "K_FRAMES",
    "K_INSTRUCTION",
    "K_SUBTASK",
    "K_ACTIONS",
    "K_ACTION_MASK",
    "K_ACTION_PAD",
    "K_STATE",
    "K_STATE_MASK",
    "K_GRIPPER",
    "K_LATENTS",
    # model plugins
    "Encoder",
    "Decoder",
    "Student",
    "ActionExpert",
    "SAMPLE_SIGNATURE",
    # datasets
    "DatasetAdapter",
    "SourceEpisode",
    "SourceError",
    "Episode",
    "resized",
    # embodiments and the unified spaces
    "Embodiment",
    "EmbodimentError",
    "command_to_unified",
    "unified_to_command",
    "gripper_to_unified",
    "unified_to_gripper",
    "unified_mask",
    "get_embodiment",
    "rotations",
    "ACTION_DIM",
    "STATE_DIM",
    "ARMS",
    "ACTION_ARM",
    "ACTION_POS",
    "ACTION_ROT",
    "ACTION_GRIPPER",
    "ACTION_TIPS",
    "GRIPPER_DIMS",
    "STATE_ARM",
    "STATE_POS",
    "STATE_QUAT",
    "STATE_GRIPPER",
    "STATE_TIPS",
    # simulators
    "Simulator",
    "SimulatorError",
    "Demonstration",
    "split_names",
]
