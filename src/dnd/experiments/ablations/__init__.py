"""The ablations experiment (docs/architecture.md)."""
