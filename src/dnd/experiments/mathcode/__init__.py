"""The mathcode experiment (docs/architecture.md)."""
