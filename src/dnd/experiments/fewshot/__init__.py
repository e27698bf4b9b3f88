"""The fewshot experiment (docs/architecture.md)."""
