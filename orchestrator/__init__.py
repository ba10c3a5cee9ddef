"""orchestrator: run a fleet of coding agents from a plan; concurrent, bounded, killable."""

__version__ = "0.1.0"
