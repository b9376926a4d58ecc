"""`internvl` student: InternVL as the distillation student — see students/base.py."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from latbot.models.encoders.internvl import InternVLEncoder
from latbot.models.students.base import VLMStudent


class InternVLStudent(VLMStudent, InternVLEncoder):
    class Config(InternVLEncoder.Config):
        type: Literal["internvl"] = "internvl"
        num_frames: int = 1  # images per step the student sees (cameras); distillation uses V_1 only
        latent_projection: bool = Field(
            True, description="Learned projection of Ẑ to the teacher's width, also when the widths agree."
        )

    def __init__(self, config: Config, latent_width: int | None = None):
        super().__init__(config)
        self._student_init(latent_width)

    @classmethod
    def tiny_config(cls):
        return cls.Config(preset="tiny", num_scene_tokens=4, num_motion_tokens=4)
