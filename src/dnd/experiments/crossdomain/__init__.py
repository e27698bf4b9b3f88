"""The crossdomain experiment (docs/architecture.md)."""
