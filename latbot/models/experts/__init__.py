"""Action experts (registry kind `action_experts`): generate an action chunk from a VLM's hidden states."""
