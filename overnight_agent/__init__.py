"""overnight-agent: run a coding agent unattended through the night."""
__version__ = "0.1.0"
