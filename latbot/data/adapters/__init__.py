"""Source-format adapters (registry kind `datasets`): each turns one source layout into `Episode`s."""
