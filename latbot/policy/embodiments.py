"""The policy's lookup of its embodiment: `get(name)` → the registered `latbot.data.embodiments.Embodiment`.

The conversions themselves (native state → unified 46-D, unified 44-D actions → native) are the same
objects the store writers used (registry kind `embodiments`, latbot/data/embodiments/), so a policy
answers in exactly the units its training store was written from. Register another robot as an
`embodiments` plugin (docs/plugins.md, "Embodiments").
"""

from __future__ import annotations

from latbot.data.embodiments import Embodiment, is_registered
from latbot.errors import LatBotError, UnknownPluginError

__all__ = ["Embodiment", "get", "is_registered"]


def get(name: str) -> Embodiment:
    from latbot.data import embodiments

    try:
        return embodiments.get(name)
    except UnknownPluginError as e:
        raise LatBotError(
            f"embodiment '{name}' has no native conversion ({e}); call predict(..., space='unified') or "
            "register it as an `embodiments` plugin (entry-point group latbot.embodiments)"
        ) from e
