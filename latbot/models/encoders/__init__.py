"""LAM encoders (registry kind `encoders`): a VLM reads T frames + the instruction and returns Z_sce, Z_mot."""
