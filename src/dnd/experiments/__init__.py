"""Experiments beyond the default pipeline; each one a package. The core stages never import them."""
