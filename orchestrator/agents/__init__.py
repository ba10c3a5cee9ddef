"""Agents: one module per kind, each behind the `Agent` protocol in `base`."""
