"""Base classes for configuration objects.

`Section` is the base of every recipe section; `PluginConfig` is the base of every plugin's nested
`Config`. Both forbid unknown fields, so a typo is an error and never a silently ignored setting.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A recipe section: strict (unknown fields are errors), defaults validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class PluginConfig(Section):
    """Base of a plugin's nested `Config`.

    A plugin class declares::

        class TinyConvEncoder(nn.Module):
            class Config(PluginConfig):
                type: Literal["tiny_conv"] = "tiny_conv"
                width: int = 64

    The `type` literal is the name the plugin is registered under; a recipe selects the plugin with
    it (`model.encoder.type: tiny_conv`) and the rest of the slot is validated by this `Config`.
    """

    type: str
