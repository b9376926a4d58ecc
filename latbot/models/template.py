"""The paper's instruction-tuning template (supp. 6.2) around the frames and the instruction.

The answer holds the latent placeholders: [CP_SCE] expands to `num_scene_tokens` positions and [CP_MOT] to
`num_motion_tokens`; their input embeddings are learnable (one vector per position) and their last hidden
states are Z_sce and Z_mot.
"""

QUESTION = (
    "Given the instruction \u201c{sent}\u201d and the video frames, reason about what happens within this time "
    "span. Explain how the overall scene changes, and identify the temporal dependencies between consecutive "
    "frames. Highlight the actions, interactions, and transitions that drive the scene\u2019s evolution."
)
ANSWER_SCENE = "Answer: Scene evolution description:"
ANSWER_MOTION = ". Action dynamics description:"
ANSWER_END = "."
# One group of latent action tokens (Table 5 "DLA off", `latent_groups: 1`): one description, Ns + Nm positions.
ANSWER_SINGLE = "Answer: Latent action description:"

# The student (distillation) sees one frame and asks for the same two descriptions.
STUDENT_QUESTION = (
    "Given the instruction \u201c{sent}\u201d and the current frame, predict how the scene will change and which "
    "actions will drive it."
)

# After the student's answer, the reasoning target L_r: the current subtask, then the end-of-sequence token.
SUBTASK_PROMPT = "Current subtask:"
