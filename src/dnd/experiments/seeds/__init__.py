"""The seeds experiment: the main comparison over LoRA-zoo and generator training seeds (docs/architecture.md)."""
