"""The protocol experiment (docs/architecture.md)."""
